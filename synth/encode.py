"""The one encoder of generated frames: raw RGB from Python into an H.264 mp4.

The planted set's videos (:mod:`synth.footage`), the tests' painted videos
(:mod:`synth.testmedia`) and the trainer's class clips (:mod:`synth.shardgen`)
are all written here, through the media layer's runner: a deadline on the
call, and a :class:`~media.ffmpeg.MediaError` quoting ffmpeg when it fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from media.ffmpeg import FFMPEG, run

# Generated videos are small (a 40 s planted video takes about a second to encode);
# ten minutes only catches an ffmpeg that hangs.
ENCODE_TIMEOUT = 600.0


def tone(hz: float, *, seconds: float, sample_rate: int) -> list[str]:
    """ffmpeg input arguments for a sine tone of ``hz``, ``seconds`` long (lavfi's ``sine``)."""
    return [
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={hz}:sample_rate={sample_rate}:duration={seconds}",
    ]


def encode_frames(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    width: int,
    height: int,
    audio: Sequence[str] = (),
    crf: int | None = None,
    gop: int | None = None,
    threads: int | None = None,
    audio_bitrate: str = "64k",
    also: Sequence[str] = (),
) -> Path:
    """Encode ``frames``, each (height, width, 3) uint8 RGB, at ``fps`` into ``path``.

    Video is H.264 (ultrafast, yuv420p; ``crf`` None keeps x264's default, ``gop``
    sets the keyframe interval, ``threads`` x264's threads). ``audio`` holds
    ffmpeg input arguments of a sound track (:func:`tone`, or ``["-i", wav]``),
    encoded as AAC and cut to the video; none gives a silent mp4. ``also``
    appends further outputs of the same inputs, e.g. a flac of the sound.
    """
    path = Path(path)
    cmd = [
        FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0", *audio,
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
    ]  # fmt: skip
    if crf is not None:
        cmd += ["-crf", str(crf)]
    if gop:
        cmd += ["-g", str(gop)]
    if threads:
        cmd += ["-threads", str(threads)]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", audio_bitrate, "-shortest"]
    cmd += [str(path), *also]
    raw = b"".join(_rgb_bytes(frame, width, height) for frame in frames)
    run(cmd, what=path, stdin=raw, timeout=ENCODE_TIMEOUT)
    return path


def _rgb_bytes(frame: np.ndarray, width: int, height: int) -> bytes:
    """A frame as ffmpeg's rawvideo reads it; a frame of another size would shear every one after it."""
    frame = np.asarray(frame, dtype=np.uint8)
    if frame.shape != (height, width, 3):
        raise ValueError(f"frame of shape {frame.shape}, expected {(height, width, 3)}")
    return frame.tobytes()
