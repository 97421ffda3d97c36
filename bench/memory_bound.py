"""Peak memory of mining against video length and seed count: bounded by design.

Two questions, each answered in fresh processes (peak RSS, ``ru_maxrss``, is a
process's high-water mark):

- **Video length.** One video scanned (:func:`miners.scan.scan_video`: decode, embed,
  search) at ``--short-seconds`` and at ``--long-seconds`` (default 2 hours). The videos are
  generated cheaply (``testsrc2`` at 160x90, 5 fps, x264 ultrafast). Frames stream through
  the scan in batches, so the growth of peak RSS over the process's size before the scan
  should not depend on the length.
- **Seed count.** A seed index (:class:`miners.index.SeedIndex`, IVF-Flat by default) of
  ``--few-seeds`` and ``--many-seeds`` random unit vectors of width ``--dim`` is searched by
  ``--frames`` random frame vectors in batches, as a scan does. Peak RSS minus the process
  before the index and minus the index's own bytes (its embedding matrix and faiss's copy)
  should stay flat. ``--dim`` defaults to 128, not an embedder's 512: a million 512-wide
  rows are 2 GB before faiss copies them.

Prints one JSON line::

    .venv/bin/python bench/memory_bound.py                       # 2 h video, 1M seeds
    .venv/bin/python bench/memory_bound.py --long-seconds 60 --many-seeds 10000   # tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from media.ffmpeg import FFMPEG, run

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def peak_mb() -> float:
    """This process's peak RSS in MiB (Linux reports ``ru_maxrss`` in KiB). ffmpeg's own is
    left out: a child's ``ru_maxrss`` counts the parent's pages it was forked with."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def make_video(path: Path, seconds: float, size: str = "160x90", fps: int = 5) -> Path:
    """A cheap moving test pattern with a tone, ``seconds`` long."""
    cmd = [FFMPEG, "-nostdin", "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps * 10),
           "-c:a", "aac", "-b:a", "32k", str(path)]  # fmt: skip
    run(cmd, what=path, timeout=max(600.0, seconds))
    return path


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def child_scan(video: Path, embedder: str, threshold: float, fps: float) -> dict:
    """Scan one video in this process; peak RSS before and after."""
    from miners.embedders import get_embedder
    from miners.index import SeedIndex
    from miners.scan import scan_video
    from miners.videos import VideoInput

    model = get_embedder(embedder, "cpu")
    index = SeedIndex(unit_rows(1000, model.dim, 0), kind="flat")
    model.embed_images(np.zeros((2, model.image_size, model.image_size, 3), np.uint8))
    before = peak_mb()
    with tempfile.TemporaryDirectory() as cache:
        result = scan_video(VideoInput(str(video), video.stem), index=index, embedder=model,
                            threshold=threshold, fps=fps, cache_dir=Path(cache))  # fmt: skip
    if not result.ok:
        raise SystemExit(f"scan of {video} failed: {result.error}")
    peak = peak_mb()
    return {"frames": result.n_frames, "rss_before_mb": before, "peak_rss_mb": peak,
            "growth_mb": round(peak - before, 1)}  # fmt: skip


def child_seeds(n: int, dim: int, kind: str, frames: int, batch: int, threshold: float) -> dict:
    """Build an index of ``n`` seeds and search ``frames`` queries in batches; peak RSS."""
    from miners.index import SeedIndex

    before = peak_mb()
    index = SeedIndex(unit_rows(n, dim, 0), kind=kind)
    index_mb = round(_index_bytes(index) / MB, 1)
    built = peak_mb()
    hits = 0
    for start in range(0, frames, batch):
        queries = unit_rows(min(batch, frames - start), dim, 1 + start)
        hits += len(index.search(queries, threshold)[0])
    peak = peak_mb()
    return {"seeds": n, "kind": index.kind, "dim": dim, "frames": frames, "hits": hits,
            "rss_before_mb": before, "index_mb": index_mb, "peak_after_build_mb": built,
            "peak_rss_mb": peak, "peak_minus_index_mb": round(peak - before - index_mb, 1),
            "search_growth_mb": round(peak - built, 1)}  # fmt: skip


def _index_bytes(index) -> int:
    """The index's own size: its embedding matrix, faiss's vectors and ids, the centroids."""
    n, d = index.embeddings.shape
    size = index.embeddings.nbytes + n * d * 4
    if index.kind == "ivf":
        size += n * 8 + (index.nlist or 0) * d * 4  # list ids, coarse centroids
    return size


def _child(*args: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace, work: Path) -> dict:
    t0 = time.monotonic()
    scans = {}
    for name, seconds in (("short", args.short_seconds), ("long", args.long_seconds)):
        video = make_video(work / f"{name}.mp4", seconds)
        scans[name] = {"seconds": seconds, **_child("scan", str(video), args.embedder,
                                                     str(args.threshold), str(args.fps))}  # fmt: skip
    seeds = {
        name: _child(
            "seeds",
            str(n),
            str(args.dim),
            args.kind,
            str(args.frames),
            str(args.batch_size),
            str(args.seed_threshold),
        )  # fmt: skip
        for name, n in (("few", args.few_seeds), ("many", args.many_seeds))
    }
    return {
        "bench": "memory_bound", "date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
        "embedder": args.embedder, "scan": scans, "seeds": seeds,
        "scan_growth_long_minus_short_mb": round(
            scans["long"]["growth_mb"] - scans["short"]["growth_mb"], 1),
        "seeds_overhead_many_minus_few_mb": round(
            seeds["many"]["peak_minus_index_mb"] - seeds["few"]["peak_minus_index_mb"], 1),
        "seconds": round(time.monotonic() - t0, 1),
    }  # fmt: skip


def child_main(argv: list[str]) -> None:
    """``--child scan VIDEO EMBEDDER THRESHOLD FPS`` or ``--child seeds N DIM KIND FRAMES
    BATCH THRESHOLD``: one measurement, one JSON line."""
    what, rest = argv[0], argv[1:]
    if what == "scan":
        row = child_scan(Path(rest[0]), rest[1], float(rest[2]), float(rest[3]))
    else:
        row = child_seeds(int(rest[0]), int(rest[1]), rest[2], int(rest[3]), int(rest[4]),
                          float(rest[5]))  # fmt: skip
    print(json.dumps(row))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-seconds", type=float, default=30.0, help="the short video (s)")
    ap.add_argument("--long-seconds", type=float, default=7200.0, help="the long video (s)")
    ap.add_argument("--embedder", default="miners.embedders:pixel_embedder",
                    help="embedder of the scans (default: the weight-free pixel one)")  # fmt: skip
    ap.add_argument("--fps", type=float, default=1.0, help="frames sampled per second")
    ap.add_argument("--threshold", type=float, default=0.9, help="match threshold of the scans")
    ap.add_argument("--few-seeds", type=int, default=1000)
    ap.add_argument("--many-seeds", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128, help="seed vector width (512: 2 GB at 1M)")
    ap.add_argument("--kind", default="ivf", choices=("flat", "ivf", "auto"),
                    help="seed index kind (default: ivf)")  # fmt: skip
    ap.add_argument("--frames", type=int, default=7200, help="frame vectors searched")
    ap.add_argument("--batch-size", type=int, default=64, help="frames per search")
    ap.add_argument("--seed-threshold", type=float, default=0.5,
                    help="similarity threshold of the seed search")  # fmt: skip
    ap.add_argument("--work", help="folder for the generated videos (default: temporary)")
    args = ap.parse_args()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        print(json.dumps(measure(args, Path(args.work))))
        return
    with tempfile.TemporaryDirectory(prefix="capmine-memory-") as work:
        print(json.dumps(measure(args, Path(work))))


if __name__ == "__main__":
    main()
