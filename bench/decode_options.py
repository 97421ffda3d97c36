"""What cheaper decoding of a high-resolution source would save, and what it would change.

The scan's ffmpeg command (:func:`miners.frames._sampling_command`, 224 square
at ``--fps``) is run on a generated 1080p H.264 clip as it is and with one
change each:

* ``prescale_area`` / ``prescale_fast_bilinear``: a cheap 2x downscale before
  the bicubic one to 224 (ffmpeg's decoder-side ``-lowres`` does not exist for
  H.264, HEVC, VP9 or AV1: their decoders allow none);
* ``skip_loop_filter``: the H.264 decoder skips deblocking (``-skip_loop_filter all``);
* ``keyframes``: only key frames decoded (``--sampler keyframes``), for scale.

For each: ffmpeg's CPU seconds (user + system, the least of ``--repeats``, so a
busy machine blurs it less than wall time would), and the mean and largest
absolute difference of the frames from the current command's (uint8 levels).
Prints one JSON line::

    .venv/bin/python bench/decode_options.py
    .venv/bin/python bench/decode_options.py --seconds 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages

import numpy as np  # noqa: E402
from hwdecode_check import make_clip  # noqa: E402

from media.ffmpeg import FilterLog  # noqa: E402
from media.probe import probe_streams  # noqa: E402
from miners.frames import _sampling_command  # noqa: E402

SIZE = 224
VARIANTS = ("current", "prescale_area", "prescale_fast_bilinear", "skip_loop_filter", "keyframes")


def command(clip: Path, variant: str, fps: float, threads: int) -> list[str]:
    """The scan's command with ``variant``'s one change."""
    _, streams = probe_streams(clip)
    sampler = "keyframes" if variant == "keyframes" else "exact"
    cmd = _sampling_command(clip, streams, fps=fps, size=SIZE, threads=threads,
                            showinfo=FilterLog("showinfo"), sampler=sampler)  # fmt: skip
    graph = cmd.index("-filter_complex") + 1
    if variant.startswith("prescale_"):
        flags = variant.removeprefix("prescale_")
        first = f"scale={SIZE}:{SIZE}:flags=bicubic"
        assert first in cmd[graph], cmd[graph]
        cmd[graph] = cmd[graph].replace(first, f"scale=iw/2:ih/2:flags={flags},{first}", 1)
    elif variant == "skip_loop_filter":
        cmd[cmd.index("-i") : cmd.index("-i")] = ["-skip_loop_filter", "all"]
    return cmd


def cpu_run(cmd: list[str], repeats: int) -> tuple[float, np.ndarray]:
    """The least CPU seconds of ``repeats`` runs, and the frames of the last."""
    best, out = float("inf"), b""
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, used)
    return best, np.frombuffer(out, np.uint8).reshape(-1, SIZE, SIZE, 3)


def measure(work: Path, args: argparse.Namespace) -> dict:
    clip = make_clip(work / "clip.mp4", size=args.size, seconds=args.seconds, fps=25)
    rows, reference = {}, None
    for variant in VARIANTS:
        cpu, frames = cpu_run(command(clip, variant, args.fps, args.threads), args.repeats)
        row = {"cpu_s": round(cpu, 3), "frames": len(frames)}
        if reference is None:
            reference = frames.astype(int)
        if frames.shape == reference.shape:
            diff = np.abs(frames.astype(int) - reference)
            row |= {"mean_abs_diff": round(float(diff.mean()), 3), "max_abs_diff": int(diff.max())}
        rows[variant] = row
    base = rows["current"]["cpu_s"]
    for row in rows.values():
        row["cpu_vs_current"] = round(row["cpu_s"] / base, 3) if base else None
    clip_info = {"size": args.size, "seconds": args.seconds, "fps": 25}
    return {"clip": clip_info, "sampling_fps": args.fps, "threads": args.threads, **rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate of the scan")
    ap.add_argument("--threads", type=int, default=1, help="ffmpeg decoder threads")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="capmine-decode-options-") as work:
        print(json.dumps(measure(Path(work), args)))


if __name__ == "__main__":
    main()
