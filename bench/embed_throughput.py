"""Frame-embedding throughput of an open_clip tower, on the CPU and (where present) a GPU.

Random weights are enough: the cost of a forward pass does not depend on the
values. Prints one JSON line per device and, with two devices, their ratio::

    .venv/bin/python bench/embed_throughput.py --model ViT-B-32 --batch-size 64 --batches 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from miners.embedders import OpenClipEmbedder


def measure(model: str, device: str, batch_size: int, batches: int) -> dict:
    emb = OpenClipEmbedder(model, None, device=device, batch_size=batch_size)
    images = np.random.default_rng(0).integers(
        0, 255, (batch_size, emb.image_size, emb.image_size, 3), dtype=np.uint8
    )
    emb.embed_images(images)  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(batches):
        emb.embed_images(images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"model": model, "device": device, "batch_size": batch_size, "threads": torch.get_num_threads(),
           "images_per_s": round(batches * batch_size / seconds, 1)}  # fmt: skip
    if device.startswith("cuda"):
        row["gpu"] = torch.cuda.get_device_name()
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--gpu-batches", type=int, default=50)
    args = ap.parse_args()
    rows = [measure(args.model, "cpu", args.batch_size, args.batches)]
    if torch.cuda.is_available():
        rows.append(measure(args.model, "cuda", args.batch_size, args.gpu_batches))
    for r in rows:
        print(json.dumps(r))
    if len(rows) == 2:
        print(
            json.dumps(
                {"gpu_over_cpu": round(rows[1]["images_per_s"] / rows[0]["images_per_s"], 1)}
            )
        )


if __name__ == "__main__":
    main()
