"""Training-step throughput and peak memory of the bind trainer, in memory and fed by its loader.

Times ``trainer.train.train_step`` itself (forward under autocast, InfoNCE loss
with the model's temperature, backward, clip, AdamW, schedule) on a model from
``trainer.train.build``, on random batches already in memory (no disk, no
decoding), for a baseline row and the asked-for row, side by side in one run.

Then the real loop (``--loop``, on by default): it generates class shards
(``synth.shardgen``, ``--clips`` clips of ``--clip-seconds``), precomputes the
frozen features and the mel cache (untimed; their build times are reported
apart), and times the training loop as ``capmine train`` runs it (the loader
of ``trainer.train.train_batches`` with ``--num-workers`` workers, then
``train_step``), and the loader alone. ``loop_over_step`` is the loop's
samples/s over the in-memory step's, same config, precision and width:

    python bench/train_throughput.py --config small --batch-size 64 --device cpu
    python bench/train_throughput.py --config base --device cuda --precision bf16 \
        --baseline-precision fp32

Prints one JSON line: ``{"device": ..., "rows": [{"config", "precision",
"samples_per_s", "step_ms", "peak_memory_mb", "params"}, ...], "loop": {...},
"cache_build_s": {"features", "audio"}, "loop_over_step": ...}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from miners.embedders import PixelEmbedder, normalize
from synth.shardgen import make_class_shards
from trainer.features import precompute_audio, precompute_features, read_cache_meta
from trainer.models import count_parameters, load_config
from trainer.train import (
    Process,
    Recipe,
    build,
    loader_workers,
    next_batch,
    peak_memory_mb,
    train_batches,
    train_step,
)


def synthetic_batch(cfg: dict, batch_size: int, dim: int, device: torch.device) -> dict:
    frames = round(cfg["audio"]["audio_seconds"] * 100)
    g = torch.Generator().manual_seed(0)
    batch = {
        "audio": torch.randn(batch_size, 1, cfg["audio"]["n_mels"], frames, generator=g),
        "has_audio": torch.ones(batch_size, dtype=torch.bool),
        "video": F.normalize(
            torch.randn(batch_size, cfg["video"]["n_frames"], dim, generator=g), dim=-1
        ),
        "text": F.normalize(torch.randn(batch_size, dim, generator=g), dim=-1),
        "image": F.normalize(torch.randn(batch_size, dim, generator=g), dim=-1),
    }
    return {k: v.to(device) for k, v in batch.items()}


def measure(
    config: str,
    precision: str,
    *,
    batch_size: int,
    dim: int,
    device: torch.device,
    warmup: int,
    steps: int,
    threads: int | None = None,
) -> dict:
    """Steps per second of one config at one precision, after ``warmup`` untimed steps."""
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config)
    if device.type == "cuda":  # as trainer.train: fp32 matmuls in TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    recipe = Recipe(1e-4, 0.05, warmup=0, steps=warmup + steps, precision=precision, seed=0)
    state = build(cfg, dim, None, device, recipe)
    state.net.train()
    batch = synthetic_batch(cfg, batch_size, dim, device)

    for _ in range(warmup):
        train_step(state, batch, device, grad_clip=1.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(state, batch, device, grad_clip=1.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    row = {
        "config": config,
        "precision": precision,
        "batch_size": batch_size,
        "params": count_parameters(state.model),
        "step_ms": round(dt * 1000, 2),
        "samples_per_s": round(batch_size / dt, 1),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }
    return row


# --------------------------------------------------------------------------- the real loop


class WideEmbedder:
    """PixelEmbedder's colour layout through a fixed random projection to ``dim``: cached
    features as wide as a real CLIP's, so the loop and the in-memory step are the same size."""

    def __init__(self, dim: int):
        self.pixels = PixelEmbedder()
        self.dim, self.image_size = dim, self.pixels.image_size
        rng = np.random.default_rng(0)
        self.proj = rng.standard_normal((self.pixels.dim, dim)).astype(np.float32)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return normalize(self.pixels.embed_images(images) @ self.proj)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return normalize(self.pixels.embed_texts(texts) @ self.proj)


def make_cache(root: Path, *, clips: int, seconds: float, dim: int, n_frames: int) -> dict:
    """Generated shards, their features and their mel cache; the two build times apart."""
    n_classes = 8
    info = make_class_shards(
        root, n_classes=n_classes, per_class=max(1, clips // n_classes),
        n_shards=max(1, clips // 64), seconds=seconds,
    )  # fmt: skip
    t0 = time.perf_counter()
    cache = precompute_features(
        info["pattern"], WideEmbedder(dim), embedder_id=f"bench-wide-{dim}", n_frames=n_frames,
        audio=False,
    )  # fmt: skip
    t1 = time.perf_counter()
    precompute_audio(info["pattern"], cache)
    t2 = time.perf_counter()
    build_s = {"features": round(t1 - t0, 2), "audio": round(t2 - t1, 2)}
    return {"pattern": info["pattern"], "cache": str(cache), "build_s": build_s}


def _timed(fn, n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` calls (after the GPU has caught up)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / n


def measure_loop(
    config: str,
    precision: str,
    *,
    shards: dict,
    batch_size: int,
    num_workers: int | None,
    device: torch.device,
    warmup: int,
    steps: int,
    threads: int | None = None,
) -> dict:
    """The loader alone, then loader + train_step as ``capmine train`` runs them
    (``num_workers`` None: as ``capmine train`` picks them)."""
    num_workers = loader_workers(num_workers, device)
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cache = Path(shards["cache"])
    dim = int(read_cache_meta(cache)["dim"])
    proc = Process(device, 0, 1, False)

    def batches(start: int):
        it = train_batches(shards["pattern"], cache, cfg, proc, batch_size, num_workers,
                           seed=0, start=start)  # fmt: skip
        for _ in range(warmup):  # workers started, their first units in flight
            next_batch(it, 0)
        return it

    alone = batches(0)
    n_alone = max(steps, 4 * max(1, num_workers))  # past what the workers prefetched
    loader_dt = _timed(functools.partial(next_batch, alone, 0), n_alone, torch.device("cpu"))
    del alone  # its workers stop before the loop's start
    recipe = Recipe(1e-4, 0.05, warmup=0, steps=warmup + steps, precision=precision, seed=0)
    state = build(cfg, dim, None, device, recipe)
    state.net.train()
    it = batches(0)
    for _ in range(warmup):
        train_step(state, next_batch(it, state.step), device, grad_clip=1.0)
    dt = _timed(lambda: train_step(state, next_batch(it, state.step), device, 1.0), steps, device)
    return {
        "config": config,
        "precision": precision,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "step_ms": round(dt * 1000, 2),
        "samples_per_s": round(batch_size / dt, 1),
        "loader_samples_per_s": round(batch_size / loader_dt, 1),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small", help="model config name or JSON path")
    p.add_argument("--batch-size", type=int, default=64, help="clips a step")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument(
        "--precision", default=None, help="fp32, bf16 or fp16 (default: bf16 on cuda, fp32 on cpu)"
    )
    p.add_argument(
        "--baseline-config", default=None, help="baseline row's config (default: same config)"
    )
    p.add_argument("--baseline-precision", default="fp32", help="baseline row's precision")
    p.add_argument("--dim", type=int, default=512, help="CLIP width (512: ViT-B-32)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the real loop (loader + step) on generated shards")  # fmt: skip
    p.add_argument("--clips", type=int, default=256, help="generated clips for the loop")
    p.add_argument("--clip-seconds", type=float, default=6.0, help="length of each clip")
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="loader workers (default: capmine train's, none on a CPU)",
    )
    args = p.parse_args(argv)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    baseline = (args.baseline_config or args.config, args.baseline_precision)
    rows = []
    # Each row in a fresh process, so its peak memory (RSS on CPU) is its own.
    ctx = multiprocessing.get_context("spawn")
    for config, prec in (baseline, (args.config, precision)):
        kw = dict(batch_size=args.batch_size, dim=args.dim, device=device)
        kw.update(warmup=args.warmup, steps=args.steps, threads=args.threads)
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(measure, (config, prec), kw))
    result = {
        "bench": "train_throughput",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": args.threads or torch.get_num_threads(),
        "baseline": rows[0],
        "rows": rows,
        "speedup": round(rows[1]["samples_per_s"] / rows[0]["samples_per_s"], 2),
    }
    if args.loop:
        result.update(loop_rows(args, precision, device, ctx))
        result["loop_over_step"] = round(
            result["loop"]["samples_per_s"] / rows[1]["samples_per_s"], 2
        )
    print(json.dumps(result))
    return result


def _run_and_send(conn, fn, args: tuple, kw: dict) -> None:
    try:
        conn.send(("ok", fn(*args, **kw)))
    except BaseException as e:
        conn.send(("error", repr(e)))
        raise


def in_fresh_process(ctx, fn, args: tuple, kw: dict):
    """``fn(*args, **kw)`` in a new, non-daemonic process (a Pool's are daemonic, and the
    loop's loader starts worker processes of its own)."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_and_send, args=(send, fn, args, kw))
    proc.start()
    send.close()
    try:
        status, value = recv.recv()
    except EOFError:
        status, value = "error", f"exited with {proc.exitcode}"
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed: {value}")
    return value


def loop_rows(args: argparse.Namespace, precision: str, device: torch.device, ctx) -> dict:
    """The real loop's row on shards generated (and removed) here, in a fresh process."""
    root = Path(tempfile.mkdtemp(prefix="capmine-bench-train-"))
    try:
        cfg = load_config(args.config)
        shards = make_cache(
            root, clips=args.clips, seconds=args.clip_seconds, dim=args.dim,
            n_frames=cfg["video"]["n_frames"],
        )  # fmt: skip
        kw = dict(shards=shards, batch_size=args.batch_size, num_workers=args.num_workers)
        kw.update(device=device, warmup=args.warmup, steps=args.steps, threads=args.threads)
        loop = in_fresh_process(ctx, measure_loop, (args.config, precision), kw)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    loop.update(clips=args.clips, clip_seconds=args.clip_seconds)
    return {"loop": loop, "cache_build_s": shards["build_s"]}


if __name__ == "__main__":
    main()
