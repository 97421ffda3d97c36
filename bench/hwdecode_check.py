"""Does NVDEC decoding work on this machine, and how fast is it against software decoding?

Generates a 1080p H.264 clip (10 s at 25 fps by default), then for ``none``
and ``cuda``:

* ``full_decode``: ffmpeg decodes every frame to nothing (``-f null``), frames
  downloaded to system memory as capmine's filters need them: source frames/s;
* ``scan_sampling``: :func:`miners.frames.iter_frames` at ``--fps`` with the
  embedder's 224 square, as the scan samples: sampled frames/s and source
  (video) seconds/s, for ``exact`` and ``keyframes``.

It also says whether ``cuda`` really decoded (ffmpeg exits 0 with
``-hwaccel cuda``, and iter_frames logged no fallback to software), what
``--hwaccel auto`` resolves to here, and how far the cuda frames are from the
software ones (mean and max absolute difference of the 224 squares). Prints
one JSON line::

    .venv/bin/python bench/hwdecode_check.py
    .venv/bin/python bench/hwdecode_check.py --seconds 30 --size 3840x2160
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages

import numpy as np  # noqa: E402

from media.ffmpeg import FFMPEG, MediaError, file_arg, run  # noqa: E402
from miners.frames import cuda_decoding_available, iter_frames, resolve_hwaccel  # noqa: E402


def make_clip(path: Path, *, size: str, seconds: float, fps: int) -> Path:
    """A moving test pattern with a little grain, H.264 at about 6 Mbit/s, x264's own key frames."""
    src = f"testsrc2=size={size}:rate={fps}:duration={seconds},noise=alls=4:allf=t"
    run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", src, "-c:v", "libx264",
         "-preset", "veryfast", "-b:v", "6M", "-maxrate", "8M", "-bufsize", "16M",
         "-pix_fmt", "yuv420p", str(path)], what=path, timeout=1200)  # fmt: skip
    return path


def full_decode(path: Path, hwaccel: str, n_frames: int) -> dict:
    """Every frame decoded by ffmpeg alone; ``ok`` False with ffmpeg's message when it fails."""
    hw = ["-hwaccel", "cuda"] if hwaccel == "cuda" else []
    cmd = [FFMPEG, "-v", "error", "-nostdin", *hw, "-i", file_arg(path), "-f", "null", "-"]
    t0 = time.perf_counter()
    try:
        run(cmd, what=path, timeout=600)
    except MediaError as e:
        return {"ok": False, "error": str(e)[-300:]}
    seconds = time.perf_counter() - t0
    return {"ok": True, "seconds": round(seconds, 3), "frames_per_s": round(n_frames / seconds, 1)}


class _Fallbacks(logging.Handler):
    """Counts iter_frames' 'decoding in software instead' warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += "software instead" in record.getMessage()


def sample(path: Path, hwaccel: str, sampler: str, fps: float, duration: float) -> dict:
    """iter_frames as the scan runs it; the frames too, to compare decoders."""
    watch = _Fallbacks()
    logging.getLogger("miners.frames").addHandler(watch)
    t0 = time.perf_counter()
    try:
        batches = list(iter_frames(path, fps=fps, size=224, sampler=sampler, hwaccel=hwaccel))
    finally:
        logging.getLogger("miners.frames").removeHandler(watch)
    seconds = time.perf_counter() - t0
    frames = np.concatenate([f for _, f in batches])
    return {"frames": frames, "seconds": round(seconds, 3), "n": len(frames),
            "frames_per_s": round(len(frames) / seconds, 1),
            "video_s_per_s": round(duration / seconds, 1), "fell_back": watch.n > 0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--source-fps", type=int, default=25)
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate of the scan")
    ap.add_argument("--work", help="folder for the clip (default: a temp dir)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        print(json.dumps(check(Path(args.work), args)))
    else:
        with tempfile.TemporaryDirectory(prefix="capmine-hwdecode-") as work:
            print(json.dumps(check(Path(work), args)))


def check(work: Path, args: argparse.Namespace) -> dict:
    """Both decoders on a clip made in ``work``: the figures main prints."""
    clip = make_clip(work / "clip.mp4", size=args.size, seconds=args.seconds, fps=args.source_fps)
    n_frames = round(args.seconds * args.source_fps)
    out = {"clip": {"size": args.size, "seconds": args.seconds, "fps": args.source_fps},
           "cores": len(os.sched_getaffinity(0)), "cuda_decoding_available": cuda_decoding_available(),
           "auto_resolves_to": resolve_hwaccel("auto")}  # fmt: skip
    frames = {}
    for hwaccel in ("none", "cuda"):
        row = {"full_decode": full_decode(clip, hwaccel, n_frames)}
        for sampler in ("exact", "keyframes"):
            got = sample(clip, hwaccel, sampler, args.fps, args.seconds)
            frames[hwaccel, sampler] = got.pop("frames")
            row[f"scan_sampling_{sampler}"] = got
        out[hwaccel] = row
    cuda = out["cuda"]
    out["cuda_worked"] = cuda["full_decode"]["ok"] and not cuda["scan_sampling_exact"]["fell_back"]
    out["cuda_vs_software_pixels"] = None  # only when cuda decoded them itself
    a, b = frames["none", "exact"].astype(int), frames["cuda", "exact"].astype(int)
    if out["cuda_worked"] and a.shape == b.shape:
        out["cuda_vs_software_pixels"] = {"mean_abs": round(float(np.abs(a - b).mean()), 4),
                                          "max_abs": int(np.abs(a - b).max())}  # fmt: skip
    return out


if __name__ == "__main__":
    main()
