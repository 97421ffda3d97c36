"""Clips for the filter tests, made with ffmpeg's lavfi sources at test time.

Each helper writes ``NAME.mp4`` (and ``NAME.flac`` when there is sound) and
returns a :class:`ClipRecord` pointing at them, as the cutter leaves records.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from shards.record import Caption, ClipRecord

SIZE = "128x72"
RATE = 10


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def lavfi_video(src: str) -> str:
    """A lavfi video source string at the tests' size and rate."""
    sep = ":" if "=" in src else "="
    return f"{src}{sep}size={SIZE}:rate={RATE}"


def make_clip(
    folder: Path,
    name: str,
    video: str | list[str],
    *,
    seconds: float = 4.0,
    audio: str | None = "sine=frequency=440",
    vf: str | None = None,
    af: str | None = None,
    caption: str = "a test clip",
    video_id: str = "v0",
    similarity: float = 0.9,
    start: float = 0.0,
    match_time: float | None = None,
) -> ClipRecord:
    """Encode a clip from lavfi ``video`` (one source, or several concatenated: hard cuts).

    ``audio`` is a lavfi audio source (``anullsrc`` for digital silence) or None,
    ``vf``/``af`` filters applied to the picture/sound.
    Times in the record are source-video seconds: the clip spans [start, start + seconds).
    """
    folder.mkdir(parents=True, exist_ok=True)
    sources = [video] if isinstance(video, str) else video
    each = seconds / len(sources)
    args: list[str] = []
    for src in sources:
        args += ["-f", "lavfi", "-t", str(each), "-i", lavfi_video(src)]
    chain = "".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}];" for i in range(len(sources)))
    chain += "".join(f"[v{i}]" for i in range(len(sources)))
    chain += f"concat=n={len(sources)}:v=1:a=0[cat];[cat]{vf or 'null'}[out]"
    mp4 = folder / f"{name}.mp4"
    ffmpeg(*args, "-filter_complex", chain, "-map", "[out]", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p", str(mp4))  # fmt: skip
    flac = None
    if audio:
        flac = folder / f"{name}.flac"
        sep = ":" if "=" in audio else "="
        ffmpeg("-f", "lavfi", "-i", f"{audio}{sep}sample_rate=16000", "-t", str(seconds),
               "-af", af or "anull", "-ac", "1", str(flac))  # fmt: skip
    return ClipRecord(
        key=name,
        video=f"{video_id}.mp4",
        video_id=video_id,
        start=start,
        end=start + seconds,
        match_time=start + seconds / 2 if match_time is None else match_time,
        similarity=similarity,
        captions=[Caption("s0", caption, similarity, start + seconds / 2)],
        mp4=str(mp4),
        flac=str(flac) if flac else None,
    )


def make_pan_clip(folder: Path, name: str, *, seconds: float = 4.0, speed: int = 6) -> ClipRecord:
    """A still picture (one testsrc2 frame, 320x180) panned left to right at ``speed`` px/s."""
    folder.mkdir(parents=True, exist_ok=True)
    still = folder / f"{name}_still.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=1", "-frames:v", "1", str(still))
    mp4 = folder / f"{name}.mp4"
    w, h = SIZE.split("x")
    ffmpeg("-loop", "1", "-framerate", str(RATE), "-i", str(still), "-t", str(seconds),
           "-vf", f"crop={w}:{h}:x='20+t*{speed}':y=40,format=yuv420p", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "18", str(mp4))  # fmt: skip
    return ClipRecord(
        key=name, video="pan.mp4", video_id="pan", start=0.0, end=seconds,
        match_time=seconds / 2, similarity=0.9, mp4=str(mp4),
    )  # fmt: skip
