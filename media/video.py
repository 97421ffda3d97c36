"""Frames of a short, already cut clip, and trimming one: what the filters read and re-cut.

Clips are short (about 10 s), so each helper runs one ffmpeg process over the
whole clip and keeps what it needs; nothing here seeks in a long source video
(frame sampling and clip cutting, which do, live in ``miners``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

from media.ffmpeg import FFMPEG, MediaError, file_arg, run
from media.images import centre_square, filter_string
from media.probe import duration


def read_frames(
    path: str | Path, n: int, *, size: tuple[int, int] | int, grey: bool = False
) -> np.ndarray:
    """``n`` frames spread evenly over the clip, uint8.

    ``size`` (width, height) squeezes the whole picture to that shape with
    area averaging (bars and motion keep their proportions, which is all the
    pixel statistics need); an int ``S`` is the embedders' input, made by the
    one resize rule of :mod:`media.images` (shorter side to S, centre crop).
    Returns (n', H, W) grey or (n', H, W, 3) RGB with ``1 <= n' <= n`` (a clip
    shorter than ``n`` frames gives what it has).
    """
    if isinstance(size, int):
        w = h = size
        scale = filter_string(centre_square(size))
    else:
        w, h = size
        scale = f"scale={w}:{h}:flags=area"
    seconds = duration(path)
    # One output frame per n-th of the clip: the source frame nearest each tick.
    rate = n / max(seconds, 1e-3)
    pix, channels = ("gray", 1) if grey else ("rgb24", 3)
    out = run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", file_arg(path), "-map", "0:v:0",
         "-vf", f"fps={rate:.6f}:round=near,{scale},setsar=1", "-frames:v", str(n),
         "-f", "rawvideo", "-pix_fmt", pix, "pipe:1"],
        what=f"frames of {path}",
    )  # fmt: skip
    frame_bytes = w * h * channels
    count = len(out) // frame_bytes
    if count == 0:
        raise MediaError(f"frames of {path}: no frame decoded")
    frames = np.frombuffer(out[: count * frame_bytes], dtype=np.uint8)
    return frames.reshape((count, h, w) if grey else (count, h, w, 3))


def trim(src: str | Path, offset: float, seconds: float, dst: str | Path) -> Path:
    """Re-encode ``seconds`` of ``src`` from ``offset`` into ``dst`` (same container kind).

    Written under a temporary name and renamed, so ``dst`` may be ``src``
    itself. mp4 gets H.264 (+ AAC), anything else keeps ffmpeg's default codec
    for its extension (flac for ``.flac``).
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}{dst.suffix}")
    codecs = (
        ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-movflags", "+faststart"]
        if dst.suffix == ".mp4"
        else []
    )  # fmt: skip
    try:
        run(
            [FFMPEG, "-nostdin", "-v", "error", "-y", "-ss", f"{max(offset, 0.0):.6f}",
             "-i", file_arg(src), "-t", f"{seconds:.6f}", *codecs, file_arg(tmp)],
            what=f"trim {src}",
        )  # fmt: skip
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
