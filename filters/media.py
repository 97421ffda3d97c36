"""Decode a cut clip's audio and a few of its frames for the filters, through ffmpeg.

Clips are short (about 10 s) and already cut, so each helper runs one ffmpeg
process over the whole clip and keeps what it needs; nothing here seeks in a
long source video. Errors raise :class:`MediaError`, which the filter base turns
into a logged scoring error for that one record.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import numpy as np

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
AUDIO_RATE = 16000  # Hz: the clips' flac rate, and what silero-vad takes
TIMEOUT = 120.0  # seconds for one ffmpeg run over one short clip


class MediaError(Exception):
    """A clip's media cannot be read: a scoring error for that record, not for the run."""


def _run(cmd: list[str], what: str) -> bytes:
    try:
        proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"{what}: ffmpeg timed out after {TIMEOUT:g} s") from e
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise MediaError(f"{what}: ffmpeg failed: {' | '.join(tail)}")
    return proc.stdout


def duration(path: str | Path) -> float:
    """Seconds of media in ``path``, as the container says."""
    out = _run(
        [FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        f"probe {path}",
    )
    try:
        return float(json.loads(out)["format"]["duration"])
    except (KeyError, ValueError, TypeError) as e:
        raise MediaError(f"probe {path}: no duration") from e


def read_audio(path: str | Path, rate: int = AUDIO_RATE) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 samples in [-1, 1] at ``rate``."""
    out = _run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
         "-ar", str(rate), "-f", "f32le", "pipe:1"],
        f"audio of {path}",
    )  # fmt: skip
    return np.frombuffer(out, dtype="<f4").astype(np.float32)


def read_frames(
    path: str | Path, n: int, *, size: tuple[int, int] | int, grey: bool = False
) -> np.ndarray:
    """``n`` frames spread evenly over the clip, uint8.

    ``size`` (width, height) squeezes the whole picture to that shape (bars and
    motion keep their proportions, which is all the pixel statistics need);
    an int ``S`` scales the shorter side to S and centre-crops S x S, the
    embedders' preprocessing. Returns (n', H, W) grey or (n', H, W, 3) RGB with
    ``1 <= n' <= n`` (a clip shorter than ``n`` frames gives what it has).
    """
    if isinstance(size, int):
        w = h = size
        scale = f"scale={w}:{h}:force_original_aspect_ratio=increase:flags=area,crop={w}:{h}"
    else:
        w, h = size
        scale = f"scale={w}:{h}:flags=area"
    seconds = duration(path)
    # One output frame per n-th of the clip: the source frame nearest each tick.
    rate = n / max(seconds, 1e-3)
    pix, channels = ("gray", 1) if grey else ("rgb24", 3)
    out = _run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
         "-vf", f"fps={rate:.6f}:round=near,{scale},setsar=1", "-frames:v", str(n),
         "-f", "rawvideo", "-pix_fmt", pix, "pipe:1"],
        f"frames of {path}",
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
        _run(
            [FFMPEG, "-nostdin", "-v", "error", "-y", "-ss", f"{max(offset, 0.0):.6f}",
             "-i", str(src), "-t", f"{seconds:.6f}", *codecs, str(tmp)],
            f"trim {src}",
        )  # fmt: skip
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
