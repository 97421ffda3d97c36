"""Recall and speed of the IVF seed index against the exact flat one, on synthetic CLIP-like seeds.

Seeds are unit vectors in clusters (a direction shared by all, as CLIP
embeddings share one, plus a cluster centre, plus per-seed noise of varied
size, so that some neighbours in a cluster lie above the threshold and some
below). Queries are half noisy copies of seeds (frames of a seed's video:
true matches, and often matches of its tight neighbours too) and half random
unit vectors (frames of unrelated videos). Both indexes are built side by side
in one run; for each, one JSON line with build seconds, queries/s of the
thresholded search and the pairs found; for IVF, at each ``--nprobe``, the
recall of the flat index's pairs. Last, one line of ivf_qps / flat_qps::

    .venv/bin/python bench/index_recall.py                       # 200k seeds, about a minute
    .venv/bin/python bench/index_recall.py --n-seeds 2000000 --nprobe 32,128,512
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from miners.index import SeedIndex, default_nlist, default_nprobe


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(
    n_seeds: int, dim: int, n_queries: int, clusters: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(seeds, queries, source)``: ``source[i]`` is the seed query ``i`` copies, or -1 if random.

    float32 throughout and normalised in place, to keep 2M x 512 seeds at 4 GB.
    """
    rng = np.random.default_rng(seed)
    shared = unit(rng.standard_normal((1, dim), dtype=np.float32))
    centres = unit(rng.standard_normal((clusters, dim), dtype=np.float32)) + 0.7 * shared
    seeds = np.empty((n_seeds, dim), dtype=np.float32)
    for lo in range(0, n_seeds, 100_000):  # in blocks: the noise of 2M seeds would be 4 GB more
        hi = min(n_seeds, lo + 100_000)
        noise = unit(rng.standard_normal((hi - lo, dim), dtype=np.float32))
        noise *= rng.uniform(0.4, 1.2, (hi - lo, 1)).astype(np.float32)  # tight to loose members
        seeds[lo:hi] = centres[rng.integers(0, clusters, hi - lo)] + noise
    unit(seeds)
    n_copies = n_queries // 2
    source = np.full(n_queries, -1, dtype=np.int64)
    source[:n_copies] = rng.choice(n_seeds, n_copies, replace=False)
    queries = unit(rng.standard_normal((n_queries, dim), dtype=np.float32))
    # a copy is its seed plus noise of norm 0.4: similarity about 0.93 to its seed
    queries[:n_copies] = unit(seeds[source[:n_copies]] + 0.4 * queries[:n_copies])
    return seeds, queries, source


def timed_search(index: SeedIndex, queries: np.ndarray, threshold: float):
    index.search(queries[:32], threshold)  # warm-up: threads, allocator
    t0 = time.perf_counter()
    rows, cols, _ = index.search(queries, threshold)
    return rows * len(index) + cols, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-seeds", type=int, default=200_000, help="seeds in both indexes")
    ap.add_argument("--dim", type=int, default=512, help="embedding width (ViT-B-32: 512)")
    ap.add_argument("--queries", type=int, default=2000, help="half seed copies, half random")
    ap.add_argument("--clusters", type=int, default=None, help="seed clusters; default N / 20")
    ap.add_argument("--threshold", type=float, default=0.8, help="cosine similarity kept")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists; default about 4·sqrt(N)")
    ap.add_argument("--nprobe", default=None,
                    help="comma-separated IVF nprobe values; default 4,8,16,32,<default>,128")  # fmt: skip
    ap.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads")
    args = ap.parse_args()

    t0 = time.perf_counter()
    seeds, queries, source = make_data(
        args.n_seeds, args.dim, args.queries, args.clusters or max(1, args.n_seeds // 20)
    )
    data_s = time.perf_counter() - t0
    base = {"n_seeds": args.n_seeds, "dim": args.dim, "queries": args.queries,
            "threshold": args.threshold}  # fmt: skip
    copies = source >= 0
    own_pairs = source[copies] + np.flatnonzero(copies) * args.n_seeds  # (copy, its seed)

    t0 = time.perf_counter()
    flat = SeedIndex(seeds, threads=args.threads, kind="flat")
    flat_build = time.perf_counter() - t0
    want, flat_s = timed_search(flat, queries, args.threshold)
    del flat
    flat_qps = len(queries) / flat_s
    print(json.dumps({**base, "index": "flat", "data_s": round(data_s, 2),
                      "build_s": round(flat_build, 2), "qps": round(flat_qps, 1),
                      "pairs": len(want), "own_seed_found": float(np.isin(own_pairs, want).mean())}),
          flush=True)  # fmt: skip

    t0 = time.perf_counter()
    ivf = SeedIndex(seeds, threads=args.threads, kind="ivf", nlist=args.nlist)
    ivf_build = time.perf_counter() - t0
    if args.nprobe:
        probes = [int(p) for p in args.nprobe.split(",")]
    else:
        probes = sorted({4, 8, 16, 32, default_nprobe(default_nlist(args.n_seeds)), 128})
    default = ivf.nprobe
    ratios = {}
    for nprobe in probes:
        ivf.nprobe = nprobe
        got, ivf_s = timed_search(ivf, queries, args.threshold)
        found = np.isin(want, got)
        recall = float(found.mean()) if len(want) else 1.0
        ratios[nprobe] = round(len(queries) / ivf_s / flat_qps, 2)
        print(json.dumps({**base, "index": "ivf", "nlist": ivf.nlist, "nprobe": nprobe,
                          "build_s": round(ivf_build, 2), "qps": round(len(queries) / ivf_s, 1),
                          "pairs": len(got), "recall": round(recall, 5),
                          "extra_pairs": int(len(got) - found.sum()),
                          "own_seed_found": float(np.isin(own_pairs, got).mean())}),
              flush=True)  # fmt: skip
    print(json.dumps({"ivf_qps_over_flat_qps": ratios, "default_nprobe": default}))


if __name__ == "__main__":
    main()
