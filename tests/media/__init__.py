"""Tiny media made at test time, with the expected answer painted into it.

Everything here shells out to the system ffmpeg; nothing is downloaded and no
binary is committed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

FrameFn = Callable[[int, float], np.ndarray]  # (frame index, time in s) -> (H, W, 3) uint8


def grey_frame(level: int, width: int = 64, height: int = 48) -> np.ndarray:
    return np.full((height, width, 3), level, dtype=np.uint8)


def write_video(
    path: str | Path,
    frame_fn: FrameFn,
    *,
    seconds: float,
    fps: float = 5.0,
    width: int = 64,
    height: int = 48,
    tone_hz: float | None = 440.0,
    sample_rate: int = 16000,
    gop: int | None = None,
) -> Path:
    """Encode ``frame_fn`` frames (and a sine tone of ``tone_hz``, or no audio) to H.264 mp4."""
    path = Path(path)
    n = int(round(seconds * fps))
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "pipe:0",
    ]
    if tone_hz is not None:
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate={sample_rate}:duration={seconds}",
        ]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-crf", "18"]
    if gop:
        cmd += ["-g", str(gop)]
    if tone_hz is not None:
        cmd += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    cmd += [str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    for i in range(n):
        frame = np.ascontiguousarray(frame_fn(i, i / fps), dtype=np.uint8)
        assert frame.shape == (height, width, 3), frame.shape
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {err}")
    return path


def write_grey_ramp_video(
    path: str | Path, *, seconds: float = 10.0, fps: float = 5.0, **kw
) -> Path:
    """Frame *i* is painted grey level ``(16 * second) % 256`` where second = floor(t):
    a sampled frame's level tells which second it came from."""
    w, h = kw.pop("width", 64), kw.pop("height", 48)
    return write_video(
        path,
        lambda i, t: grey_frame((16 * int(t)) % 256, w, h),
        seconds=seconds,
        fps=fps,
        width=w,
        height=h,
        **kw,
    )


def write_image(path: str | Path, array: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    Image.fromarray(array).save(path)
    return path


def truncate(path: str | Path, keep_fraction: float = 0.3) -> Path:
    """Cut a file short, as an interrupted download leaves it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path
