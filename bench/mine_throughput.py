"""Mining throughput against its own limits: decode-only, embed-only and the full scan, side
by side in one run, and the fixed cost of a small ``capmine mine`` run.

It generates one video (``--width`` x ``--height`` at ``--fps``, ``--seconds`` long,
``--codec``, with an AAC tone) and copies it ``--videos`` times, then measures:

- **decode-only**: every video through :func:`miners.frames.iter_frames` at the
  scan's sampling rate and size (whole frames, as the scan reads them), on
  ``--scan-workers`` threads as the flow's thread runner scans, output discarded;
- **embed-only**: as many frames, already in memory, through the embedder in
  batches of ``--batch-size``;
- **the scan**: :func:`runs.stages.scan_video_into` over every video on
  ``--scan-workers`` threads, the real pipeline (fetch, sampling, the embedding
  service, search, peaks); frames/s and video-seconds/s;
- **the fixed cost**: a one-video ``capmine mine`` run as a subprocess of the CLI,
  its wall time less the scan time its report gives.

The threshold defaults to 1.0, so nothing matches: the figures are the scan's
decode, embed and search, not shot detection or cutting. The ratios are
throughput ratios (the slower stage's seconds alone over the scan's seconds; 1.0
means the scan runs as fast as that stage alone). Prints one JSON line::

    .venv/bin/python bench/mine_throughput.py --videos 6 --seconds 120
    .venv/bin/python bench/mine_throughput.py --videos 2 --seconds 10   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from flows.threads import default_threads
from media.ffmpeg import FFMPEG, run
from miners.embedders import get_embedder, resolve_device
from miners.frames import iter_frames
from miners.videos import VideoInput
from runs.folder import RunFolder
from runs.seeds import embed_seed_chunk, merge_seed_chunks, plan_seeds
from runs.stages import scan_video_into
from synth.testmedia import write_image

ROOT = Path(__file__).resolve().parent.parent
MEMORY_FRAMES = 2048  # distinct frames held for embed-only; more are cycled


def make_videos(folder: Path, args: argparse.Namespace) -> list[Path]:
    """One generated video (moving test pattern and a tone), copied ``--videos`` times."""
    first = folder / "video_000.mp4"
    run([FFMPEG, "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={args.width}x{args.height}:rate={args.fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
         "-t", str(args.seconds), "-c:v", args.codec, "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(first)],
        what=first, timeout=3600)  # fmt: skip
    paths = [first]
    for i in range(1, args.videos):
        paths.append(folder / f"video_{i:03d}.mp4")
        shutil.copyfile(first, paths[-1])
    return paths


def make_seeds(folder: Path, n: int = 4) -> Path:
    seeds = folder / "seeds"
    seeds.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(seeds / f"s{i}.png", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
        (seeds / f"s{i}.txt").write_text(f"random picture {i}")
    return seeds


def decode_only(paths: list[Path], args: argparse.Namespace, size: int) -> dict:
    def decode(path: Path) -> int:
        n = 0
        for times, _, _ in iter_frames(path, fps=args.sample_fps, size=size,
                                       batch_size=args.batch_size, whole=True,
                                       sampler=args.sampler, hwaccel=args.hwaccel,
                                       threads=args.decode_threads):  # fmt: skip
            n += len(times)
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.scan_workers) as pool:
        frames = sum(pool.map(decode, paths))
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "frames": frames, "frames_per_s": rate(frames, seconds)}


def embed_only(embedder, n_frames: int, batch_size: int, device: str) -> dict:
    size = embedder.image_size
    pool = np.random.default_rng(1).integers(
        0, 256, (min(n_frames, MEMORY_FRAMES), size, size, 3), dtype=np.uint8
    )
    embedder.embed_images(pool[:batch_size])  # warm-up: kernels, allocator
    sync(device)
    t0 = time.perf_counter()
    for i in range(0, n_frames, batch_size):
        rows = np.arange(i, min(i + batch_size, n_frames)) % len(pool)
        embedder.embed_images(pool[rows])
    sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "frames": n_frames,
            "frames_per_s": rate(n_frames, seconds)}  # fmt: skip


def full_scan(folder: RunFolder, paths: list[Path], args: argparse.Namespace) -> dict:
    videos = [VideoInput(url=str(p), video_id=p.stem) for p in paths]

    def scan(video: VideoInput):
        return scan_video_into(
            folder, video, embedder=args.embedder, device=args.device, threshold=args.threshold,
            fps=args.sample_fps, batch_size=args.batch_size, sampler=args.sampler,
            hwaccel=args.hwaccel, decode_threads=args.decode_threads,
        )  # fmt: skip

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.scan_workers) as pool:
        scans = list(pool.map(scan, videos))
    seconds = time.perf_counter() - t0
    failed = [s.error for s in scans if not s.ok]
    if failed:
        raise RuntimeError(f"scans failed: {failed[:3]}")
    frames = sum(s.n_frames for s in scans)
    video_seconds = sum(s.duration or 0.0 for s in scans)
    return {"seconds": round(seconds, 3), "frames": frames, "frames_per_s": rate(frames, seconds),
            "video_seconds_per_s": rate(video_seconds, seconds)}  # fmt: skip


def fixed_cost(work: Path, seeds: Path, video: Path, args: argparse.Namespace) -> dict:
    """A one-video ``capmine mine`` run: wall time, its scan stage, and the rest."""
    listing = work / "one.txt"
    listing.write_text(f"{video}\n")
    out = work / "one_out"
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect"), HF_HUB_OFFLINE="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))  # fmt: skip
    cmd = [sys.executable, "-m", "flows.cli", "mine", "--seeds", str(seeds), "--videos",
           str(listing), "--out", str(out), "--embedder", args.embedder, "--device", args.device,
           "--threshold", str(args.threshold), "--filters", "none", "--fps", str(args.sample_fps),
           "--batch-size", str(args.batch_size), "--sampler", args.sampler,
           "--hwaccel", args.hwaccel, "--no-progress"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"capmine mine exited {proc.returncode}: {proc.stderr[-2000:]}")
    scan = json.loads((out / "report.json").read_text())["seconds"]["scan"]
    return {"wall": round(wall, 3), "scan": round(scan, 3), "fixed": round(wall - scan, 3)}


def machine(device: str) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cores": cores, "cpu": cpu, "gpu": None}
    if device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def rate(amount: float, seconds: float) -> float:
    return round(amount / seconds, 2) if seconds > 0 else float("nan")


def measure(args: argparse.Namespace, work: Path) -> dict:
    args.device = resolve_device(args.device)
    if args.decode_threads is None:
        args.decode_threads = default_threads(args.scan_workers)
    paths = make_videos(work, args)
    seeds = make_seeds(work)
    folder = RunFolder(work / "out")
    plan = plan_seeds(folder, str(seeds), embedder=args.embedder, device=args.device)
    files = [embed_seed_chunk(folder, str(seeds), plan.fingerprint, a, b,
                              embedder=args.embedder, device=args.device) for a, b in plan.chunks]  # fmt: skip
    merge_seed_chunks(folder, plan, files, embedder=args.embedder)
    embedder = get_embedder(args.embedder, args.device, args.batch_size)
    decoded = decode_only(paths, args, embedder.image_size)
    embedded = embed_only(embedder, decoded["frames"], args.batch_size, args.device)
    scanned = full_scan(folder, paths, args)
    slower = max(decoded["seconds"], embedded["seconds"])
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(args.device),
        "setup": {k: getattr(args, k) for k in ("videos", "seconds", "width", "height", "fps",
                  "codec", "embedder", "device", "sample_fps", "batch_size", "scan_workers",
                  "threshold", "sampler", "hwaccel", "decode_threads")},  # fmt: skip
        "decode_only": decoded, "embed_only": embedded, "scan": scanned,
        "ratios": {"scan_vs_decode_only": round(decoded["seconds"] / scanned["seconds"], 3),
                   "scan_vs_embed_only": round(embedded["seconds"] / scanned["seconds"], 3),
                   "scan_vs_slower_stage": round(slower / scanned["seconds"], 3),
                   # both stages alone, one after the other: on a CPU they share the cores
                   "scan_vs_stages_in_series": round(
                       (decoded["seconds"] + embedded["seconds"]) / scanned["seconds"], 3)},
    }  # fmt: skip
    if not args.no_fixed_cost:
        doc["fixed_cost"] = fixed_cost(work, seeds, paths[0], args)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=6, help="videos to scan (default: 6)")
    p.add_argument("--seconds", type=float, default=120.0, help="length of each (default: 120)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=25.0, help="the videos' frame rate (default: 25)")
    p.add_argument("--codec", default="libx264", help="ffmpeg video encoder (default: libx264)")
    p.add_argument("--embedder", default="open_clip:ViT-S-32", help="default: random weights")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--sample-fps", type=float, default=1.0, help="frames sampled a second")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--scan-workers", type=int, default=2, help="videos scanned at once")
    p.add_argument("--threshold", type=float, default=1.0, help="1.0: nothing matches")
    p.add_argument("--sampler", default="exact", choices=["exact", "keyframes"])
    p.add_argument("--hwaccel", default="none", choices=["none", "auto", "cuda"])
    p.add_argument(
        "--decode-threads",
        type=int,
        default=None,
        help="ffmpeg decoder threads a video (default: cores / scan workers, as a run)",
    )
    p.add_argument("--no-fixed-cost", action="store_true", help="skip the capmine mine run")
    p.add_argument("--workdir", help="keep the generated files here (default: a temp folder)")
    args = p.parse_args(argv)
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=False)
        doc = measure(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="mine_throughput_") as tmp:
            doc = measure(args, Path(tmp))
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
