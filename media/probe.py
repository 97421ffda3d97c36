"""What a video holds, asked of ffprobe once, before any decoding.

:func:`probe` answers the questions capmine asks of a video (how long, how
big as displayed, is there sound); :func:`probe_streams` adds what the decoders
(frame sampling, clip cutting) need to pick the same streams and to agree on
where time 0 is.

Time 0 is the presentation time of the video stream's first frame (its
``start_time``), not the container's: MPEG-TS files start at 1.4 s and audio
often starts before video, and a match time must name the same frame whichever
module reads it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from media.ffmpeg import FFPROBE, MediaError, file_arg, run

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 30.0  # seconds; a local file answers in well under one


@dataclass
class ProbeInfo:
    """A video's vital statistics; width and height as displayed (rotation and
    sample aspect ratio applied), which is what frames and clips come out as."""

    duration: float  # seconds
    width: int  # display width in square pixels
    height: int  # display height in square pixels
    fps: float  # average frame rate; 0.0 when the container does not say
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Containers whose index lets ffmpeg seek straight to the key frame before a
# time. Others (MPEG-TS, PS, raw streams) seek by guessing a byte offset and
# can land a GOP late, so decoders start earlier and trim.
_INDEXED_FORMATS = {"mov", "mp4", "matroska", "webm", "avi"}
SEEK_PREROLL = 10.0  # seconds before the target for unindexed containers; covers a GOP


@dataclass(frozen=True)
class Streams:
    """Which streams to decode and where time 0 lies, in ffmpeg's terms.

    Decoders run with ``-copyts``, so filters see the source timestamps:
    video time ``t`` is source time ``video_start + t`` for every module.
    """

    video_index: int  # absolute stream index, for ``[0:N]``
    audio_index: int | None
    audio_channels: int
    video_start: float  # the video stream's start_time, in source seconds
    container_start: float  # the format's start_time: what ``-ss`` counts from
    square_pixels: bool  # False when the sample aspect ratio is not 1:1
    format_name: str = ""

    def source_time(self, time: float) -> float:
        """Source timestamp (as filters see it under ``-copyts``) of video time ``time``."""
        return self.video_start + time

    def seek_before(self, time: float) -> float:
        """An input ``-ss`` that lands at or before video time ``time``; the
        decoder then drops frames up to it with a filter on source times."""
        indexed = bool(_INDEXED_FORMATS & set(self.format_name.split(",")))
        preroll = 0.0 if indexed else SEEK_PREROLL
        return max(0.0, self.source_time(time) - self.container_start - preroll)


def probe(path: str | Path, *, timeout: float = PROBE_TIMEOUT) -> ProbeInfo:
    """Describe ``path``; raise :class:`MediaError` if it is not a playable video."""
    return probe_streams(path, timeout=timeout)[0]


def duration(path: str | Path, *, timeout: float = PROBE_TIMEOUT) -> float:
    """Seconds of media in ``path`` (audio or video), as the container says."""
    cmd = [FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "json"]
    out = run([*cmd, file_arg(path)], what=path, timeout=timeout)
    try:
        return float(json.loads(out)["format"]["duration"])
    except (KeyError, ValueError, TypeError) as e:
        raise MediaError(f"{path}: no duration") from e


def probe_streams(path: str | Path, *, timeout: float = PROBE_TIMEOUT) -> tuple[ProbeInfo, Streams]:
    """:func:`probe` plus the stream choices and time origin the decoders share."""
    return describe(path, probe_data(path, timeout=timeout))


def probe_data(
    path: str | Path, *, timeout: float = PROBE_TIMEOUT, also: Sequence[str] = ()
) -> dict[str, Any]:
    """ffprobe's JSON for ``path`` (format and streams), plus what the ffprobe
    arguments ``also`` ask for in the same run (packets over a read interval,
    :mod:`media.keyframes`): one process where two would cost twice the start-up."""
    return _ffprobe(path, timeout, also)


def describe(path: str | Path, data: dict[str, Any]) -> tuple[ProbeInfo, Streams]:
    """What :func:`probe_streams` says, from :func:`probe_data`'s answer."""
    video = _pick_video(path, data)
    audio = _pick_audio(data)
    width, height = _display_size(video)
    info = ProbeInfo(
        duration=_duration(path, data, video),
        width=width,
        height=height,
        fps=_fps(video),
        has_audio=audio is not None,
        video_codec=video.get("codec_name"),
        audio_codec=audio.get("codec_name") if audio else None,
    )
    container_start = _float(data.get("format", {}).get("start_time"), 0.0)
    streams = Streams(
        video_index=int(video["index"]),
        audio_index=int(audio["index"]) if audio else None,
        audio_channels=int(audio.get("channels") or 0) if audio else 0,
        video_start=_float(video.get("start_time"), container_start),
        container_start=container_start,
        square_pixels=_sar(video) == 1,
        format_name=str(data.get("format", {}).get("format_name", "")),
    )
    return info, streams


def _ffprobe(path: str | Path, timeout: float, also: Sequence[str] = ()) -> dict[str, Any]:
    """ffprobe's JSON for ``path``.

    The same command ``ffmpeg.probe`` runs, but through the runner:
    ffmpeg-python 0.2's ``probe`` has no timeout, and a stalled network mount
    must not stall a worker forever.
    """
    cmd = [FFPROBE, "-v", "error", "-show_format", "-show_streams", *also,
           "-of", "json", file_arg(path)]  # fmt: skip
    out = run(cmd, what=path, timeout=timeout)
    try:
        return json.loads(out.decode("utf-8", "replace"))
    except json.JSONDecodeError as e:
        raise MediaError(f"{path}: ffprobe gave unreadable output: {e}") from e


def _pick_video(path: str | Path, data: dict[str, Any]) -> dict[str, Any]:
    """The first real video stream; cover art (an attached picture) is not one."""
    for stream in data.get("streams", []):
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get(
            "attached_pic"
        ):
            return stream
    raise MediaError(f"{path}: no video stream")


def _pick_audio(data: dict[str, Any]) -> dict[str, Any] | None:
    for stream in data.get("streams", []):
        if stream.get("codec_type") == "audio":
            return stream
    return None


def _duration(path: str | Path, data: dict[str, Any], video: dict[str, Any]) -> float:
    """The container's duration, else the video stream's: some muxers fill only one."""
    for value in (data.get("format", {}).get("duration"), video.get("duration")):
        seconds = _float(value, 0.0)
        if seconds > 0 and math.isfinite(seconds):
            return seconds
    raise MediaError(f"{path}: unknown or zero duration")


def _display_size(video: dict[str, Any]) -> tuple[int, int]:
    """Width and height as a player shows them: stretched by the sample aspect
    ratio (ffmpeg's convention: width changes), then turned by the rotation."""
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    sar = _sar(video)
    if sar != 1:
        width = round(width * sar)
    if abs(_rotation(video)) % 180 == 90:
        width, height = height, width
    return width, height


def _rotation(video: dict[str, Any]) -> int:
    """Degrees from the display matrix (ffprobe >= 5) or the old ``rotate`` tag."""
    for side in video.get("side_data_list", []) or []:
        if "rotation" in side:
            return round(_float(side["rotation"], 0.0))
    return round(_float(video.get("tags", {}).get("rotate"), 0.0))


def _sar(video: dict[str, Any]) -> Fraction:
    """Sample aspect ratio; ``0:1`` and absent both mean unknown, read as square."""
    num, _, den = str(video.get("sample_aspect_ratio") or "1:1").partition(":")
    try:
        sar = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return sar if sar > 0 else Fraction(1)


def _fps(video: dict[str, Any]) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = str(video.get(key) or "0/0").partition("/")
        try:
            rate = Fraction(int(num), int(den or 1))
        except (ValueError, ZeroDivisionError):
            continue
        if rate > 0:
            return float(rate)
    return 0.0


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
