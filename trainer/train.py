"""Train the audio and video encoders against a frozen CLIP space (ImageBind's recipe).

One loop, top to bottom, as nanoGPT's ``train.py``: build the data, the model, the
optimiser; resume if a checkpoint is there; then step, log, checkpoint. Runs in a
single process or under ``torchrun`` (DDP, one slice of the global batch a rank,
features gathered across ranks for the loss); only rank 0 writes.

Outputs under ``out/``: ``last.pt`` (+ ``step_N.pt`` every ``ckpt_every`` steps),
written atomically, and ``metrics.jsonl`` (one JSON line every ``log_every`` steps).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import distributed
from trainer.data import make_loader
from trainer.features import precompute_features
from trainer.loss import BindLoss
from trainer.models import create_model, load_config

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def train(
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
    num_workers: int = 2,
    seed: int = 0,
    ckpt_every: int = 500,
    log_every: int = 10,
    resume: bool = True,
    audio_seconds: float | None = None,
    n_frames: int | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``config`` on ``shards`` for ``steps`` steps of ``batch_size`` clips (global).

    ``embedder`` (frozen CLIP towers) precomputes the shards' features into
    ``cache_dir`` first; without it the cache must already exist there.
    ``audio_seconds`` and ``n_frames`` default to the config's. ``precision`` is
    autocast's dtype on CUDA; on CPU ``fp16`` falls back to fp32 (CPU bf16 is
    honoured). ``stop_after`` ends the run after that step, as an interruption
    would (the schedule still spans ``steps``). Returns a summary dict.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    out = Path(out)
    dev, started_group = distributed.init(device)
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    if dev.type == "cuda":
        # fp32 matmuls in TF32 (as nanoGPT); bf16/fp16 autocast is unaffected
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by world size {world}")
    if main:
        out.mkdir(parents=True, exist_ok=True)

    # -- config: the checkpoint's wins on resume, so a resumed run is the same run
    ckpt_path = out / "last.pt"
    ckpt = None
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if ckpt is not None:
        cfg = ckpt["config"]
        embedder_id = embedder_id or ckpt.get("embedder_id")
    else:
        cfg = copy.deepcopy(config) if isinstance(config, dict) else load_config(config)
        if audio_seconds is not None:
            cfg["audio"]["audio_seconds"] = audio_seconds
        if n_frames is not None:
            cfg["video"]["n_frames"] = n_frames

    # -- frozen features: computed once, by rank 0, before any training
    if embedder is not None:
        paths = [cache_dir]
        if main:
            paths = [
                precompute_features(
                    shards,
                    embedder,
                    embedder_id=embedder_id or type(embedder).__name__,
                    n_frames=cfg["video"]["n_frames"],
                    cache_dir=cache_dir,
                )
            ]
        if distributed.is_distributed():
            torch.distributed.broadcast_object_list(paths, src=0)
        cache_dir = paths[0]
    if cache_dir is None:
        raise ValueError("pass an embedder (to precompute features) or the cache_dir of features")

    # -- data: deterministic in the batch index, so resuming at step k reads batch k next
    step = ckpt["step"] if ckpt is not None else 0
    loader = make_loader(
        shards,
        cache_dir=cache_dir,
        batch_size=batch_size // world,  # this rank's slice of the global batch
        train=True,
        num_workers=num_workers,
        seed=seed,
        audio_seconds=cfg["audio"]["audio_seconds"],
        start_batch=step,
        rank=rank,
        world_size=world,
    )
    batches = iter(loader)
    first = next(batches)
    embed_dim = ckpt["embed_dim"] if ckpt is not None else first["text"].shape[1]

    # -- model, loss, optimiser, schedule, scaler
    torch.manual_seed(seed)
    model = create_model(cfg, embed_dim).to(dev)
    loss_fn = BindLoss()  # the temperature is the model's logit scale.to(dev)
    optimizer = torch.optim.AdamW(
        param_groups(model, weight_decay),
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=dev.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, warmup=warmup, steps=steps)
    )
    dtype = PRECISIONS[precision]
    if dev.type == "cpu" and dtype is torch.float16:
        log.warning("fp16 autocast is for CUDA; training in fp32 on CPU")
        dtype = None
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)
    autocast = (
        torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    start_step = step
    raw_model = model
    if world > 1:
        model = DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    def checkpoint(path: Path) -> None:
        state = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "rng": rng_state(),
            "config": cfg,
            "embed_dim": embed_dim,
            "embedder_id": embedder_id,
        }
        save_atomic(state, path)

    metrics_path = out / "metrics.jsonl"
    if main and metrics_path.exists():
        # A resumed run rewrites what came after its checkpoint.
        lines = metrics_path.read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= start_step]
        metrics_path.write_text("".join(line + "\n" for line in kept))

    # -- the loop
    model.train()
    last: dict[str, float] = {}
    rates: list[float] = []
    t0, samples = time.perf_counter(), 0
    batch: dict[str, Any] | None = first
    while step < steps:
        if batch is None:
            try:
                batch = next(batches)
            except StopIteration:
                raise RuntimeError(f"the training loader ended at step {step}") from None
        batch = to_device(batch, dev)
        with autocast:
            features = model(batch)
        losses = loss_fn(features, batch)  # in float32: the features come out float32
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        samples += len(batch["key"]) * world
        batch = None

        if step % log_every == 0 or step in (steps, stop_after):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            rate = samples / (time.perf_counter() - t0)
            rates.append(rate)
            last = {k: float(v.detach()) for k, v in losses.items()}
            if main:
                row = {
                    "step": step,
                    **last,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "logit_scale": float(features["logit_scale"].detach()),
                    "samples_per_s": round(rate, 2),
                    "peak_memory_mb": round(peak_memory_mb(dev), 1),
                }
                with metrics_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                log.info("step %d loss %.4f (%.1f samples/s)", step, last["loss"], rate)
            t0, samples = time.perf_counter(), 0
        if main and (step % ckpt_every == 0 or step == steps or step == stop_after):
            checkpoint(out / "last.pt")
            if step % ckpt_every == 0:
                checkpoint(out / f"step_{step}.pt")
        if step == stop_after:
            break

    distributed.barrier()
    if started_group:
        distributed.cleanup()
    return {
        "out": str(out),
        "checkpoint": str(out / "last.pt"),
        "step": step,
        "start_step": start_step,
        "world_size": world,
        "device": str(dev),
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
        "final": last,
        "samples_per_s": float(np.mean(rates)) if rates else None,
        "peak_memory_mb": peak_memory_mb(dev),
    }
