"""Tiny media made at test time, with the expected answer painted into it.

Frame *i* of :func:`write_grey_ramp_video` is grey level 16 times its second, so a
sampled frame tells which second it came from. Videos go through the one
encoder of generated frames (:func:`synth.encode.encode_frames`); nothing is
downloaded and no binary is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from media.audio import AUDIO_RATE
from media.ffmpeg import FFMPEG, run
from synth.encode import encode_frames, tone

FrameFn = Callable[[int, float], np.ndarray]  # (frame index, time in s) -> (H, W, 3) uint8


def grey_frame(level: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A frame of one grey ``level``."""
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
    """Encode ``frame_fn`` frames (and a sine tone of ``tone_hz``, or no audio) to H.264 mp4.

    At ``crf`` 18, near lossless, the painted answer survives the encoding.
    """
    n = int(round(seconds * fps))
    frames = (frame_fn(i, i / fps) for i in range(n))
    sound = [] if tone_hz is None else tone(tone_hz, seconds=seconds, sample_rate=sample_rate)
    return encode_frames(
        path, frames, fps=fps, width=width, height=height, audio=sound, crf=18, gop=gop
    )


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
    """``array`` (H, W, 3) uint8 as an image file, its format named by the suffix."""
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


def sine_wave(hz: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    """Mono float32 samples at 16 kHz of a sine whose frequency names it."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def flac_bytes(wave: np.ndarray) -> bytes:
    """``wave`` (mono float32 at 16 kHz) encoded as FLAC, as a clip's ``K.flac`` holds it."""
    cmd = [FFMPEG, "-v", "error", "-f", "f32le", "-ar", str(AUDIO_RATE), "-ac", "1"]
    cmd += ["-i", "pipe:0", "-c:a", "flac", "-f", "flac", "pipe:1"]
    return run(cmd, what="sine wave", stdin=wave.astype("<f4").tobytes())
