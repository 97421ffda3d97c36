"""Training-step throughput and peak memory of the bind trainer, on synthetic batches.

Times ``trainer.train.train_step`` itself (forward under autocast, InfoNCE loss
with the model's temperature, backward, clip, AdamW, schedule) on a model from
``trainer.train.build``, on random batches already in memory (no disk, no
decoding), for a baseline row and the asked-for row, side by side in one run:

    python bench/train_throughput.py --config small --batch-size 64 --device cpu
    python bench/train_throughput.py --config base --device cuda --precision bf16 \
        --baseline-precision fp32

Prints one JSON line: ``{"device": ..., "rows": [{"config", "precision",
"samples_per_s", "step_ms", "peak_memory_mb", "params"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import torch
import torch.nn.functional as F

from trainer.models import count_parameters, load_config
from trainer.train import Recipe, build, peak_memory_mb, train_step


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
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
