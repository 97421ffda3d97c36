"""Train the audio and video encoders against a frozen CLIP space (ImageBind's recipe).

One loop, top to bottom, as nanoGPT's ``train.py``: :func:`train_encoders` finds the
config and the frozen features, :func:`build` makes the model, optimiser, schedule
and scaler, :func:`restore` resumes them from a checkpoint, and :func:`run_loop`
steps (:func:`train_step`), logs (:func:`log_step`) and checkpoints
(:func:`save_checkpoints`). Runs in a single process or under ``torchrun`` (DDP,
one slice of the global batch a rank, features gathered across ranks for the
loss); only rank 0 writes.

Outputs under ``out/``: ``last.pt`` (+ ``step_N.pt`` every ``ckpt_every`` steps),
written atomically, and ``metrics.jsonl`` (one JSON line every ``log_every`` steps).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import distributed
from trainer.data import make_loader
from trainer.features import precompute_audio, precompute_features, read_cache_meta
from trainer.loss import BindLoss
from trainer.models import BindModel, create_model, load_config

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_NAMES = {dtype: name for name, dtype in PRECISIONS.items()}


def lr_at(step: int, *, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings, not norms, biases or the logit scale (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def peak_memory_mb(device: torch.device) -> float:
    """CUDA's max allocated memory, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rng_state() -> dict[str, Any]:
    """Every RNG a step could draw from, so a resumed run draws what the straight one would."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    """Write then rename, so a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device``; keys and captions stay lists."""
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------- the run's pieces


@dataclass
class Process:
    """Where this process trains: its device and its place among the DDP ranks."""

    device: torch.device
    rank: int
    world: int
    started_group: bool  # this run joined the process group, so it also leaves it

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints and metrics."""
        return self.rank == 0


@dataclass
class TrainState:
    """What a step changes and a checkpoint holds, and the module the loop calls."""

    model: BindModel  # the bare model: its state_dict is the checkpoint's
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # autocast dtype; None trains in fp32
    config: dict[str, Any]
    embed_dim: int
    embedder_id: str | None
    step: int = 0
    net: torch.nn.Module | None = None  # DDP(model) under torchrun, else the model itself
    loss_fn: BindLoss = field(default_factory=BindLoss)

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model


@dataclass(frozen=True)
class Recipe:
    """How the model is optimised: AdamW's rate and decay, the schedule, the precision."""

    lr: float  # peak learning rate
    weight_decay: float  # on matrices and embeddings only
    warmup: int  # linear warm-up steps, then cosine
    steps: int  # the schedule's length, whatever stop_after says
    precision: str  # autocast dtype: fp32, bf16 or fp16
    seed: int  # initialisation


@dataclass(frozen=True)
class LoopPlan:
    """When the loop stops, writes a metrics row and checkpoints."""

    steps: int
    grad_clip: float
    log_every: int
    ckpt_every: int
    stop_after: int | None = None  # end after this step, as an interruption would

    def logs_at(self, step: int) -> bool:
        return step % self.log_every == 0 or step in (self.steps, self.stop_after)

    def saves_at(self, step: int) -> bool:
        return step % self.ckpt_every == 0 or step in (self.steps, self.stop_after)


@dataclass
class StepOut:
    """What one step leaves for the log: the loss terms, the temperature, the gradient norm."""

    losses: dict[str, torch.Tensor]
    logit_scale: torch.Tensor
    grad_norm: torch.Tensor


@dataclass
class Progress:
    """Throughput over each logging window, and the loss terms last logged."""

    t0: float = field(default_factory=time.perf_counter)
    samples: int = 0  # this window's, over all ranks
    rates: list[float] = field(default_factory=list)
    last: dict[str, float] = field(default_factory=dict)

    def end_window(self, device: torch.device) -> float:
        """Samples a second since the window began (after the GPU has caught up)."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rate = self.samples / (time.perf_counter() - self.t0)
        self.rates.append(rate)
        return rate

    def restart(self) -> None:
        self.t0, self.samples = time.perf_counter(), 0


# --------------------------------------------------------------------------- setting up


MAX_LOADER_WORKERS = 8


def loader_workers(asked: int | None, device: torch.device, world: int = 1) -> int:
    """Loader worker processes: ``asked``, else none on a CPU and half a GPU's share of
    the cores (at most :data:`MAX_LOADER_WORKERS`) on CUDA.

    Batches are slices of cached arrays (features and log-mels), which one process
    loads thousands a second; on a CPU every worker takes cores from the step
    (2 cores, ``tiny``: the loop ran at 0.56 of the step with 2 workers, 0.88 with
    none). On a GPU the step leaves the cores to the loader.
    """
    if asked is not None:
        return asked
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_LOADER_WORKERS, (cores or 1) // (2 * max(1, world))))


def start_process(device: str, *, precision: str, batch_size: int, out: Path) -> Process:
    """Check the run's arguments, join the DDP group torchrun describes, make ``out``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    dev, started_group = distributed.init(device)
    proc = Process(dev, distributed.rank(), distributed.world_size(), started_group)
    if dev.type == "cuda":
        # fp32 matmuls in TF32 (as nanoGPT); bf16/fp16 autocast is unaffected
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if batch_size % proc.world:
        raise ValueError(f"batch_size {batch_size} is not divisible by world size {proc.world}")
    if proc.main:
        out.mkdir(parents=True, exist_ok=True)
    return proc


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (on the CPU), or None when there is none yet."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def run_config(
    ckpt: dict[str, Any] | None,
    config: str | Path | dict,
    *,
    audio_seconds: float | None,
    n_frames: int | None,
) -> dict[str, Any]:
    """The checkpoint's config on resume, so a resumed run is the same run; else
    ``config`` (a name, path or dict) with the clip-length overrides applied."""
    if ckpt is not None:
        return ckpt["config"]
    cfg = copy.deepcopy(config) if isinstance(config, dict) else load_config(config)
    if audio_seconds is not None:
        cfg["audio"]["audio_seconds"] = audio_seconds
    if n_frames is not None:
        cfg["video"]["n_frames"] = n_frames
    return cfg


def feature_cache(
    shards: str | list[str],
    embedder: Any,
    embedder_id: str | None,
    cfg: dict[str, Any],
    cache_dir: Path | None,
    *,
    main: bool,
) -> Path:
    """The frozen features' folder. With ``embedder`` rank 0 computes them and the clips'
    mels (once, before any training) and tells the other ranks where; without it
    ``cache_dir`` must hold the features, and rank 0 adds the mels they lack."""
    if embedder is not None:
        paths = [cache_dir]
        if main:
            embedder_id = embedder_id or type(embedder).__name__
            n_frames = cfg["video"]["n_frames"]
            paths = [
                precompute_features(
                    shards,
                    embedder,
                    embedder_id=embedder_id,
                    n_frames=n_frames,
                    cache_dir=cache_dir,
                    progress=sys.stderr.isatty(),
                )
            ]
        if distributed.is_distributed():
            torch.distributed.broadcast_object_list(paths, src=0)
        cache_dir = paths[0]
    if cache_dir is None:
        raise ValueError("pass an embedder (to precompute features) or the cache_dir of features")
    if embedder is None:  # features made elsewhere: their mel cache may still be missing
        if main:
            precompute_audio(shards, cache_dir, progress=sys.stderr.isatty())
        distributed.barrier()
    return cache_dir


def cache_embed_dim(cache_dir: Path, ckpt: dict[str, Any] | None) -> int:
    """The CLIP width of the cached features, from the cache's ``meta.json``: it sizes the
    model's projections before any batch is read. A resumed checkpoint must agree."""
    dim = int(read_cache_meta(cache_dir)["dim"])
    if ckpt is not None and ckpt["embed_dim"] != dim:
        raise ValueError(
            f"the checkpoint was trained for width {ckpt['embed_dim']}, but the features in "
            f"{cache_dir} have width {dim} (meta.json): another embedder's cache?"
        )
    return dim


def train_batches(
    shards: str | list[str],
    cache_dir: Path,
    cfg: dict[str, Any],
    proc: Process,
    batch_size: int,
    num_workers: int,
    *,
    seed: int,
    start: int,
) -> Iterator[dict[str, Any]]:
    """This rank's slice of every global batch from batch ``start`` on: the stream is
    deterministic in the batch index, so a run resumed at step k reads batch k next."""
    loader = make_loader(
        shards,
        cache_dir=cache_dir,
        batch_size=batch_size // proc.world,
        train=True,
        num_workers=num_workers,
        seed=seed,
        audio_seconds=cfg["audio"]["audio_seconds"],
        start_batch=start,
        rank=proc.rank,
        world_size=proc.world,
    )
    return iter(loader)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``precision``'s autocast dtype; fp16 autocast is for CUDA, so on CPU it is fp32."""
    dtype = PRECISIONS[precision]
    if device.type == "cpu" and dtype is torch.float16:
        log.warning("fp16 autocast is for CUDA; training in fp32 on CPU")
        return None
    return dtype


def build(
    cfg: dict[str, Any],
    embed_dim: int,
    embedder_id: str | None,
    device: torch.device,
    recipe: Recipe,
) -> TrainState:
    """A fresh model (initialised from ``recipe.seed``), AdamW, the warm-up + cosine
    schedule and the loss scaler (active for fp16 only)."""
    torch.manual_seed(recipe.seed)
    model = create_model(cfg, embed_dim).to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=device.type == "cuda",
    )
    # a partial, not a closure; its (empty) attributes are all LambdaLR saves of it, so a
    # resumed run follows the schedule it is given, as before
    schedule = functools.partial(lr_at, warmup=recipe.warmup, steps=recipe.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    dtype = autocast_dtype(recipe.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    return TrainState(model, optimizer, scheduler, scaler, dtype, cfg, embed_dim, embedder_id)


def restore(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Everything a step changes back to the checkpoint's, RNGs included (exact resume)."""
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    state.step = ckpt["step"]
    log.info("resumed at step %d", state.step)


def wrap_for_ddp(state: TrainState, proc: Process) -> None:
    """Under torchrun the loop calls the model through DDP, which averages gradients."""
    if proc.world > 1:
        device_ids = [proc.device.index] if proc.device.type == "cuda" else None
        state.net = DistributedDataParallel(state.model, device_ids=device_ids)


def rewind_metrics(path: Path, step: int) -> None:
    """A resumed run rewrites what came after its checkpoint: drop the rows past ``step``."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


# --------------------------------------------------------------------------- the loop


def next_batch(batches: Iterator[dict[str, Any]], step: int) -> dict[str, Any]:
    """The next training batch; the training stream is endless, so its end is a bug."""
    try:
        return next(batches)
    except StopIteration:
        raise RuntimeError(f"the training loader ended at step {step}") from None


def train_step(
    state: TrainState, batch: dict[str, Any], device: torch.device, grad_clip: float
) -> StepOut:
    """One optimiser step on ``batch``: forward under autocast, loss, backward, clip, step."""
    batch = to_device(batch, device)
    with autocast(device, state.dtype):
        features = state.net(batch)
    losses = state.loss_fn(features, batch)  # in float32: the features come out float32
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(losses["loss"]).backward()
    state.scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.net.parameters(), grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.step += 1
    return StepOut(losses, features["logit_scale"], grad_norm)


def log_step(
    state: TrainState, out: StepOut, progress: Progress, proc: Process, path: Path
) -> None:
    """End a logging window: every rank keeps the loss terms, rank 0 appends a metrics row."""
    rate = progress.end_window(proc.device)
    progress.last = {k: float(v.detach()) for k, v in out.losses.items()}
    if proc.main:
        row = {
            "step": state.step,
            **progress.last,
            "lr": state.scheduler.get_last_lr()[0],
            "grad_norm": float(out.grad_norm),
            "logit_scale": float(out.logit_scale.detach()),
            "samples_per_s": round(rate, 2),
            "peak_memory_mb": round(peak_memory_mb(proc.device), 1),
        }
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("step %d loss %.4f (%.1f samples/s)", state.step, progress.last["loss"], rate)
    progress.restart()


def checkpoint(state: TrainState) -> dict[str, Any]:
    """What resuming needs: weights, optimiser, schedule, scaler, step, RNGs, and the
    config and width that rebuild the model."""
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "step": state.step,
        "rng": rng_state(),
        "config": state.config,
        "embed_dim": state.embed_dim,
        "embedder_id": state.embedder_id,
    }


def save_checkpoints(state: TrainState, out: Path, ckpt_every: int) -> None:
    """``last.pt`` always, and ``step_N.pt`` every ``ckpt_every`` steps."""
    ckpt = checkpoint(state)
    save_atomic(ckpt, out / "last.pt")
    if state.step % ckpt_every == 0:
        save_atomic(ckpt, out / f"step_{state.step}.pt")


def run_loop(
    state: TrainState,
    batches: Iterator[dict[str, Any]],
    batch: dict[str, Any] | None,
    plan: LoopPlan,
    proc: Process,
    out: Path,
) -> Progress:
    """Step from ``state.step`` to ``plan.steps`` (or ``plan.stop_after``), starting
    with ``batch``; log and checkpoint on the way."""
    metrics = out / "metrics.jsonl"
    if proc.main:
        rewind_metrics(metrics, state.step)
    state.net.train()
    progress = Progress()
    while state.step < plan.steps:
        if batch is None:
            batch = next_batch(batches, state.step)
        step_out = train_step(state, batch, proc.device, plan.grad_clip)
        progress.samples += len(batch["key"]) * proc.world
        batch = None
        if plan.logs_at(state.step):
            log_step(state, step_out, progress, proc, metrics)
        if proc.main and plan.saves_at(state.step):
            save_checkpoints(state, out, plan.ckpt_every)
        if state.step == plan.stop_after:
            break
    return progress


def finish(
    state: TrainState, proc: Process, start: int, progress: Progress, out: Path
) -> dict[str, Any]:
    """Wait for every rank, leave the process group, and sum the run up."""
    distributed.barrier()
    if proc.started_group:
        distributed.cleanup()
    rates = progress.rates
    return {
        "out": str(out),
        "checkpoint": str(out / "last.pt"),
        "step": state.step,
        "start_step": start,
        "world_size": proc.world,
        "device": str(proc.device),
        "precision": PRECISION_NAMES[state.dtype],
        "final": progress.last,
        "samples_per_s": float(np.mean(rates)) if rates else None,
        "peak_memory_mb": peak_memory_mb(proc.device),
    }


# --------------------------------------------------------------------------- the run


def train_encoders(
    *,
    shards: str | list[str],
    out: Path,
    embedder: Any = None,
    embedder_id: str | None = None,
    cache_dir: Path | None = None,
    config: str | Path | dict = "small",
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 5e-4,
    weight_decay: float = 0.05,
    warmup: int = 100,
    grad_clip: float = 1.0,
    precision: str = "bf16",
    device: str = "auto",
    num_workers: int | None = None,
    seed: int = 0,
    ckpt_every: int = 500,
    log_every: int = 10,
    resume: bool = True,
    audio_seconds: float | None = None,
    n_frames: int | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``config`` on ``shards`` for ``steps`` steps of ``batch_size`` clips (global).

    ``embedder`` (frozen CLIP towers) precomputes the features into ``cache_dir``;
    without it the cache must exist there. ``audio_seconds``/``n_frames`` default to
    the config's. ``precision`` is autocast's dtype (CPU: fp16 runs fp32, bf16 is kept).
    ``stop_after`` ends the run after that step, as an interruption would.
    ``num_workers`` None: :func:`loader_workers`.
    """
    out = Path(out)
    proc = start_process(device, precision=precision, batch_size=batch_size, out=out)
    num_workers = loader_workers(num_workers, proc.device, proc.world)
    ckpt = load_checkpoint(out / "last.pt") if resume else None
    cfg = run_config(ckpt, config, audio_seconds=audio_seconds, n_frames=n_frames)
    if ckpt is not None:
        embedder_id = embedder_id or ckpt.get("embedder_id")
    cache_dir = feature_cache(shards, embedder, embedder_id, cfg, cache_dir, main=proc.main)
    start = ckpt["step"] if ckpt is not None else 0
    batches = train_batches(
        shards, cache_dir, cfg, proc, batch_size, num_workers, seed=seed, start=start
    )
    # First batch before the seed: the loader's workers draw their seed from torch's
    # RNG as they start, and the model's initialisation must not depend on them.
    first = next_batch(batches, start)
    embed_dim = cache_embed_dim(cache_dir, ckpt)  # from meta.json, not from a batch
    recipe = Recipe(lr, weight_decay, warmup, steps, precision, seed)
    state = build(cfg, embed_dim, embedder_id, proc.device, recipe)
    if ckpt is not None:
        restore(state, ckpt)
    wrap_for_ddp(state, proc)
    plan = LoopPlan(steps, grad_clip, log_every, ckpt_every, stop_after)
    progress = run_loop(state, batches, first, plan, proc, out)
    return finish(state, proc, start, progress, out)
