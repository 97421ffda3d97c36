"""Any audio ffmpeg reads, as mono float32 samples: what the filters score and the trainer hears.

:func:`decode_audio` reads one file or one buffer; :func:`decode_audio_many`
decodes many short buffers with one ffmpeg process a chunk, since starting
ffmpeg costs more than decoding a short FLAC (10x faster on 2 s clips).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from media.ffmpeg import DEFAULT_TIMEOUT, FFMPEG, MediaError, file_arg, run

AUDIO_RATE = 16000  # Hz: the clips' flac rate, silero-vad's input and the trainer's log-mel input


def _to_raw(rate: int, stream: str = "0:a:0") -> list[str]:
    """Output options: one audio stream (the first input's first), mono, ``rate`` Hz, float32."""
    return ["-map", stream, "-ac", "1", "-ar", str(rate), "-f", "f32le"]


def decode_audio(
    source: str | Path | bytes,
    *,
    rate: int = AUDIO_RATE,
    what: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> np.ndarray:
    """The first audio stream of a file (a path) or a buffer (bytes) as mono float32 in [-1, 1].

    A buffer goes through a pipe: FLAC and WAV need no seeking. Raises
    :class:`MediaError` naming ``what`` (default: the path, or "audio buffer").
    """
    if isinstance(source, bytes | bytearray):
        name, stdin, label = "pipe:0", bytes(source), what or "audio buffer"
    else:
        name, stdin, label = file_arg(source), None, what or f"audio of {source}"
    cmd = [FFMPEG, "-nostdin", "-v", "error", "-i", name, *_to_raw(rate), "pipe:1"]
    out = run(cmd, what=label, timeout=timeout, stdin=stdin)
    return np.frombuffer(out, dtype="<f4").astype(np.float32)


def decode_audio_many(
    items: list[bytes], *, rate: int = AUDIO_RATE, chunk: int = 32, timeout: float = DEFAULT_TIMEOUT
) -> list[np.ndarray | MediaError]:
    """Many buffers' audio, in order: one ffmpeg process a ``chunk`` (N inputs, N raw outputs
    in a temp folder). A chunk that fails is split in halves until the bad buffers are
    alone; each yields its own :class:`MediaError` in its place, the others their samples."""
    out: list[np.ndarray | MediaError] = []
    for start in range(0, len(items), chunk):
        out.extend(_decode_chunk(items[start : start + chunk], rate, timeout))
    return out


def _decode_chunk(part: list[bytes], rate: int, timeout: float) -> list[np.ndarray | MediaError]:
    if len(part) == 1:
        try:
            return [decode_audio(part[0], rate=rate, timeout=timeout)]
        except MediaError as e:
            return [e]
    with tempfile.TemporaryDirectory(prefix="capmine-audio-") as tmp:
        cmd = [FFMPEG, "-nostdin", "-v", "error", "-y"]
        for i, data in enumerate(part):
            src = Path(tmp) / f"{i}.in"
            src.write_bytes(data)
            cmd += ["-i", file_arg(src)]
        for i in range(len(part)):
            cmd += [*_to_raw(rate, f"{i}:a:0"), file_arg(Path(tmp) / f"{i}.raw")]
        try:
            run(cmd, what=f"{len(part)} audio buffers", timeout=timeout)
        except MediaError:
            half = len(part) // 2
            return _decode_chunk(part[:half], rate, timeout) + _decode_chunk(
                part[half:], rate, timeout
            )
        raws = [(Path(tmp) / f"{i}.raw").read_bytes() for i in range(len(part))]
        return [np.frombuffer(raw, dtype="<f4").astype(np.float32) for raw in raws]
