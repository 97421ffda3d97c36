"""Clip cutting throughput: capmine's cut modes beside a bare ffmpeg loop, on the same windows.

Generates ``--count`` videos (640x360 at 25 fps, H.264 with B-frames and a key
frame every ``--gop`` frames, AAC; a moving test pattern), plans ``--clips``
windows of ``--clip-seconds`` at random places, and cuts them all, one worker a
core, in each way, side by side in one run:

* ``exact``: ``miners.cut.cut_records`` re-encoding (mp4 + flac + jpg, the jpg
  from the same ffmpeg pass);
* ``keyframe``: ``cut_records`` stream-copying the video, the jpg a still the
  scan kept (copied), as a mining run cuts;
* ``keyframe_decoded_jpg``: the same, its jpg decoded by a second seek (no still);
* ``bare_reencode``: one plain ffmpeg a clip, the same encoder settings, mp4 + flac;
* ``bare_copy``: one plain ffmpeg a clip, ``-c:v copy``, AAC + flac.

    python bench/cut_throughput.py                      # 4 videos of 60 s, 32 clips
    python bench/cut_throughput.py --count 1 --seconds 24 --clips 4 --workers 2   # tiny

Prints one JSON line: the rows (clips/s, clips/s per core), the ratios
exact/bare_reencode and keyframe/bare_copy, the goals (keyframe >= 5 clips/s
per core; exact >= 0.9 x bare re-encode), and video2dataset's published
exact-mode figure (1.74 samples/s) for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from media.audio import AUDIO_RATE
from media.ffmpeg import FFMPEG, file_arg, run
from miners.cut import cut_records
from miners.fetch import SourceCache
from miners.matching import Candidate
from miners.scan import ScanResult
from shards.record import STATUS_OK, ClipRecord

VIDEO2DATASET_EXACT = 1.74  # samples/s, video2dataset's published figure for exact cutting
GOAL_KEYFRAME_PER_CORE = 5.0
GOAL_EXACT_OVER_BARE = 0.9


def make_videos(
    folder: Path, *, count: int, seconds: float, size: str, fps: int, gop: int
) -> list[Path]:
    """``count`` test-pattern videos with a tone, H.264 (x264 veryfast: B-frames) + AAC."""
    videos = []
    for i in range(count):
        path = folder / f"video{i}.mp4"
        run([FFMPEG, "-v", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency={300 + 50 * i}:sample_rate=44100:duration={seconds}",
             "-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-keyint_min", str(gop),
             "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
             "-shortest", file_arg(path)], what=path, timeout=1200)  # fmt: skip
        videos.append(path)
    return videos


def plan_windows(
    videos: list[Path], *, clips: int, seconds: float, clip_seconds: float
) -> list[tuple[Path, float]]:
    """``clips`` windows, (video, start), at random places (seeded: every run cuts the same)."""
    rng = random.Random(0)
    last = max(0.0, seconds - clip_seconds)
    return [(videos[k % len(videos)], round(rng.uniform(0.0, last), 3)) for k in range(clips)]


def capmine_cut(windows, out: Path, *, mode: str, clip_seconds: float, height: int,
                workers: int, slack: float, still: Path | None) -> int:  # fmt: skip
    """Cut ``windows`` with ``cut_records`` as a mining run does; the number that failed."""
    records, scans = [], {}
    for k, (video, start) in enumerate(windows):
        vid = video.stem
        match = start + clip_seconds / 2
        records.append(ClipRecord(key=f"c{k:05d}", video=str(video), video_id=vid, start=start,
                                  end=start + clip_seconds, match_time=match, similarity=1.0))  # fmt: skip
        scan = scans.setdefault(vid, ScanResult(video=str(video), video_id=vid, local_path=str(video),
                                                source={"has_audio": True}))  # fmt: skip
        scan.candidates.append(Candidate(seed_row=k, video_id=vid, peak_time=match, similarity=1.0,
                                         seg_start=match, seg_end=match, n_frames=1))  # fmt: skip
    cut_records(records, out, scans=scans, sources=SourceCache(out / "cache"), height=height,
                workers=workers, mode=mode, keyframe_slack=slack,
                stills=(lambda r: still) if still else None)  # fmt: skip
    return sum(r.status != STATUS_OK for r in records)


def bare_cut(
    windows, out: Path, *, copy: bool, clip_seconds: float, height: int, workers: int
) -> int:
    """One plain ffmpeg a window: input seek, mp4 (re-encoded as capmine does, or the
    video copied) and a flac; no probing, no jpg, no checks."""
    video = ["-c:v", "copy"] if copy else [
        "-vf", f"scale=-2:'min({height},ih)'", "-c:v", "libx264", "-preset", "veryfast",
        "-crf", "23", "-pix_fmt", "yuv420p"]  # fmt: skip

    def one(item: tuple[int, tuple[Path, float]]) -> None:
        k, (src, start) = item
        run([FFMPEG, "-nostdin", "-v", "error", "-y", "-ss", f"{start:.3f}", "-i", file_arg(src),
             "-t", f"{clip_seconds:.3f}", "-map", "0:v:0", "-map", "0:a:0", *video, "-c:a", "aac",
             "-b:a", "128k", "-movflags", "+faststart", file_arg(out / f"b{k:05d}.mp4"),
             "-map", "0:a:0", "-ac", "1", "-ar", str(AUDIO_RATE), "-c:a", "flac",
             file_arg(out / f"b{k:05d}.flac")], what=src, timeout=600)  # fmt: skip

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, enumerate(windows)))
    return 0


def timed(name: str, fn: Callable[[Path], int], scratch: Path, clips: int, workers: int) -> dict:
    out = scratch / name
    out.mkdir()
    t0 = time.perf_counter()
    failed = fn(out)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    rate = (clips - failed) / seconds
    return {"name": name, "seconds": round(seconds, 3), "clips": clips, "failed": failed,
            "clips_per_s": round(rate, 3), "clips_per_s_per_core": round(rate / workers, 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=4, help="videos generated")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each video, seconds")
    p.add_argument("--size", default="640x360", help="video size WxH")
    p.add_argument("--fps", type=int, default=25, help="frames per second")
    p.add_argument("--gop", type=int, default=50, help="frames between key frames")
    p.add_argument("--clips", type=int, default=32, help="windows cut in each way")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="window length, seconds")
    p.add_argument(
        "--height", type=int, default=360, help="clip height cap (capmine's --clip-height)"
    )
    p.add_argument("--slack", type=float, default=1.0, help="capmine's --keyframe-slack, seconds")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="workers (default: one a core)"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cut_bench_") as tmp:
        scratch = Path(tmp)
        videos = make_videos(scratch, count=args.count, seconds=args.seconds, size=args.size,
                             fps=args.fps, gop=args.gop)  # fmt: skip
        for v in videos:
            v.read_bytes()  # in the page cache for every row alike
        windows = plan_windows(videos, clips=args.clips, seconds=args.seconds,
                               clip_seconds=args.clip_seconds)  # fmt: skip
        still = scratch / "still.jpg"
        Image.fromarray(np.zeros((360, 640, 3), np.uint8)).save(still, quality=90)
        common = {"clip_seconds": args.clip_seconds, "height": args.height, "workers": args.workers}
        capmine = {"slack": args.slack, **common}
        ways = {
            "exact": lambda out: capmine_cut(windows, out, mode="exact", still=None, **capmine),
            "keyframe": lambda out: capmine_cut(windows, out, mode="keyframe", still=still, **capmine),
            "keyframe_decoded_jpg": lambda out: capmine_cut(windows, out, mode="keyframe", still=None, **capmine),
            "bare_reencode": lambda out: bare_cut(windows, out, copy=False, **common),
            "bare_copy": lambda out: bare_cut(windows, out, copy=True, **common),
        }  # fmt: skip
        rows = {
            name: timed(name, fn, scratch, args.clips, args.workers) for name, fn in ways.items()
        }
    return report(args, rows)


def report(args: argparse.Namespace, rows: dict[str, dict]) -> dict:
    rate = {name: row["clips_per_s"] for name, row in rows.items()}
    exact_ratio = rate["exact"] / rate["bare_reencode"] if rate["bare_reencode"] else None
    copy_ratio = rate["keyframe"] / rate["bare_copy"] if rate["bare_copy"] else None
    result = {
        "machine": {"cores": os.cpu_count(), "workers": args.workers},
        "videos": {
            "count": args.count,
            "seconds": args.seconds,
            "size": args.size,
            "fps": args.fps,
            "gop": args.gop,
        },  # fmt: skip
        "clips": args.clips,
        "clip_seconds": args.clip_seconds,
        "rows": list(rows.values()),
        "exact_over_bare_reencode": exact_ratio and round(exact_ratio, 3),
        "keyframe_over_bare_copy": copy_ratio and round(copy_ratio, 3),
        "goals": {
            "keyframe_clips_per_s_per_core>=5": rows["keyframe"]["clips_per_s_per_core"]
            >= GOAL_KEYFRAME_PER_CORE,
            "exact>=0.9xbare_reencode": bool(exact_ratio and exact_ratio >= GOAL_EXACT_OVER_BARE),
        },
        "video2dataset_exact_samples_per_s": VIDEO2DATASET_EXACT,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
