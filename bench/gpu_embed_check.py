"""The open_clip embedder on CUDA (bf16/fp16 autocast) against the same weights on the CPU.

Checks that the GPU path gives the same embeddings (cosine per row) and the
same best seed for every frame, then reports throughput on both. Random
weights, seeded, so both devices hold the same model::

    python bench/gpu_embed_check.py --model ViT-B-32
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from miners.embedders import OpenClipEmbedder


def build(model: str, device: str) -> OpenClipEmbedder:
    torch.manual_seed(0)
    return OpenClipEmbedder(model, None, device=device, batch_size=64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--n", type=int, default=128)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: nothing to compare")
    cpu, gpu = build(args.model, "cpu"), build(args.model, "cuda")
    rng = np.random.default_rng(0)
    # smooth random pictures (blocks), closer to frames than white noise
    small = rng.integers(0, 255, (args.n, 7, 7, 3), dtype=np.uint8)
    frames = np.kron(small, np.ones((1, 32, 32, 1), dtype=np.uint8))[
        :, : cpu.image_size, : cpu.image_size
    ]
    a, b = cpu.embed_images(frames), gpu.embed_images(frames)
    cos = (a * b).sum(axis=1)
    seeds_a, seeds_b = a[: args.n // 2], b[: args.n // 2]
    same_best = float(np.mean((a @ seeds_a.T).argmax(1) == (b @ seeds_b.T).argmax(1)))
    ta, tb = (
        cpu.embed_texts(["a dog on a beach", "a red car"]),
        gpu.embed_texts(["a dog on a beach", "a red car"]),
    )
    print(json.dumps({
        "model": args.model, "gpu": torch.cuda.get_device_name(),
        "autocast": "bf16" if torch.cuda.is_bf16_supported() else "fp16",
        "image_cosine_min": round(float(cos.min()), 5), "image_cosine_mean": round(float(cos.mean()), 5),
        "text_cosine_min": round(float((ta * tb).sum(1).min()), 5), "same_best_seed": same_best,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
