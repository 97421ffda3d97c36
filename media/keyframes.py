"""Where a stream copy of a video window can start and end, from ffprobe without decoding.

A stream copy can only start at a key frame and can only end where decode
order and display order agree (B-frames are decoded after the frames they
precede on screen). :func:`video_packets` lists what both questions need: each
packet's presentation and decode time, its duration and whether it is a key
frame, over a short read interval (``-read_intervals``), so a look-up around a
clip costs a few milliseconds however long the video is. :func:`plan_copy`
answers them: the key frame to start at, the instant the last copied frame
ends, and the decode-time limit that keeps exactly the copied packets.

Times count from the video stream's first frame, as everywhere in capmine
(see :mod:`media.probe`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from media.ffmpeg import FFPROBE, MediaError, file_arg, run
from media.probe import ProbeInfo, Streams, describe, probe_data

PACKETS_TIMEOUT = 30.0  # seconds; a local file lists a few seconds of packets in well under one
# Times from ffprobe and from the scan agree to the microsecond; a millisecond
# absorbs rounding and is far below any frame interval.
EPS = 1e-3


class CopyRefused(MediaError):
    """A window that stream copy cannot cut as asked; the message says why."""


@dataclass(frozen=True)
class Packet:
    """One video packet: one coded frame."""

    pts: float  # presentation time, video seconds
    dts: float | None  # decode time, video seconds; None when the container does not say
    duration: float  # seconds on screen; 0.0 when unknown
    key: bool  # a key frame: decoding can start here


@dataclass(frozen=True)
class PacketList:
    """The video stream's packets over a read interval, in decode order."""

    codec: str  # ffprobe's codec_name, e.g. h264
    pix_fmt: str  # e.g. yuv420p
    packets: list[Packet]


# Where a file's video starts on its own clock (the stream's start_time): 0 in
# nearly every mp4; a combined look-up reads this much more on each side, and
# lists packets again when the video starts further off.
START_ALLOWANCE = 2.0  # seconds


def probe_with_packets(
    path: str | Path, lo: float, hi: float, *, timeout: float = PACKETS_TIMEOUT
) -> tuple[ProbeInfo, Streams, PacketList]:
    """:func:`media.probe.probe_streams` and :func:`video_packets` over ``[lo, hi]``
    (video seconds) from one ffprobe run (each run costs tens of milliseconds of
    start-up, as much as listing the packets)."""
    return probe_with_packets_over(path, [(lo, hi)], timeout=timeout)


def probe_with_packets_over(
    path: str | Path,
    spans: list[tuple[float, float]],
    *,
    timeout: float = PACKETS_TIMEOUT,
) -> tuple[ProbeInfo, Streams, PacketList]:
    """:func:`probe_with_packets` over several ``(lo, hi)`` spans at once (the
    windows of every clip of one video): one ffprobe run lists the packets of
    each span (overlapping spans merged), in decode order, and however long the
    video is, it reads only the spans."""
    merged = merge_spans([(lo - START_ALLOWANCE, hi + START_ALLOWANCE) for lo, hi in spans])
    entries = ["-show_entries", _PACKETS, "-read_intervals", _intervals(merged, 0.0)]
    data = probe_data(path, timeout=timeout, also=entries)
    info, streams = describe(path, data)
    if abs(streams.video_start) > START_ALLOWANCE:
        return info, streams, video_packets_over(path, streams, spans, timeout=timeout)
    return info, streams, _listing(path, data, streams)


def merge_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``spans`` sorted, the overlapping ones joined: a packet is listed once."""
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def video_packets(
    path: str | Path,
    streams: Streams,
    lo: float,
    hi: float,
    *,
    timeout: float = PACKETS_TIMEOUT,
) -> PacketList:
    """The video stream's packets from the key frame at or near video time ``lo``
    until past ``hi``.

    ffprobe seeks to ``lo`` (landing on a key frame near it) and reads packets
    until ``hi``; nothing is decoded. Raises :class:`MediaError` naming ``path``
    when ffprobe fails or says nothing usable.
    """
    return video_packets_over(path, streams, [(lo, hi)], timeout=timeout)


def video_packets_over(
    path: str | Path,
    streams: Streams,
    spans: list[tuple[float, float]],
    *,
    timeout: float = PACKETS_TIMEOUT,
) -> PacketList:
    """:func:`video_packets` over several spans, in one ffprobe run."""
    cmd = [FFPROBE, "-v", "error", "-select_streams", str(streams.video_index),
           "-read_intervals", _intervals(merge_spans(spans), streams.video_start),
           "-show_entries", _ENTRIES, "-of", "json", file_arg(path)]  # fmt: skip
    out = run(cmd, what=path, timeout=timeout)
    try:
        data = json.loads(out.decode("utf-8", "replace"))
    except json.JSONDecodeError as e:
        raise MediaError(f"{path}: ffprobe gave no packet list: {e}") from e
    return _listing(path, data, streams)


_PACKETS = "packet=stream_index,pts,dts,duration,flags"
_ENTRIES = f"{_PACKETS}:stream=index,time_base,codec_name,pix_fmt"  # alone; -show_streams has all


def _intervals(spans: list[tuple[float, float]], video_start: float) -> str:
    """ffprobe's ``-read_intervals`` for video seconds ``spans`` (it counts source time)."""
    return ",".join(f"{video_start + max(lo, 0.0):.6f}%{video_start + hi:.6f}" for lo, hi in spans)


def _listing(path: str | Path, data: dict[str, Any], streams: Streams) -> PacketList:
    """The video stream's packets out of ffprobe's answer, in video seconds."""
    index = streams.video_index
    try:
        stream = next(s for s in data["streams"] if int(s["index"]) == index)
        base = _fraction(stream["time_base"])
    except (StopIteration, KeyError, ValueError, ZeroDivisionError) as e:
        raise MediaError(f"{path}: ffprobe gave no packet list: {e!r}") from e
    raw = [p for p in data.get("packets", []) if int(p.get("stream_index", index)) == index]
    return PacketList(
        codec=str(stream.get("codec_name") or ""),
        pix_fmt=str(stream.get("pix_fmt") or ""),
        packets=[p for p in (_packet(r, base, streams) for r in raw) if p],
    )


def _packet(raw: dict[str, Any], base: Fraction, streams: Streams) -> Packet | None:
    """One packet in video seconds, rounded to the microsecond as frame times are
    (:func:`miners.frames.iter_frames`); None for a packet without a time."""
    pts = _ticks(raw.get("pts"))
    if pts is None:
        return None
    dts = _ticks(raw.get("dts"))
    return Packet(
        pts=round(float(pts * base) - streams.video_start, 6),
        dts=None if dts is None else round(float(dts * base) - streams.video_start, 6),
        duration=float((_ticks(raw.get("duration")) or 0) * base),
        key="K" in str(raw.get("flags", "")),
    )


def _ticks(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _fraction(text: str) -> Fraction:
    num, _, den = str(text).partition("/")
    return Fraction(int(num), int(den or 1))


@dataclass(frozen=True)
class CopyPlan:
    """A stream copy of one window: its true bounds and how to tell ffmpeg."""

    start: float  # the key frame the copy starts at, video seconds
    end: float  # when the last copied frame stops being shown, video seconds
    # a decode-time limit, counted from ``start`` (an input ``-t`` of a copy that
    # seeks to ``start``), that keeps exactly the copied packets
    video_seconds: float


def plan_copy(
    packets: list[Packet],
    *,
    start: float,
    length: float,
    shot: tuple[float, float],
    slack: float,
    match_time: float,
) -> CopyPlan:
    """The stream copy of ``length`` seconds from the key frame nearest ``start``.

    The key frame must lie within ``slack`` seconds of ``start``, inside ``shot``
    (``(lo, hi)``, video seconds), and no later than ``match_time``; the copy
    ends at ``hi`` or after ``length`` seconds, whichever is first, and must
    still show the frame at ``match_time``. It ends early rather than late:
    the copied packets are a prefix in decode order whose frames are all
    shown before that end, and that is shown without a gap (B-frames whose
    reference lies past the end are left out with it). Raises
    :class:`CopyRefused` saying why no key frame will do.
    """
    lo, hi = shot
    keys = [
        i
        for i, p in enumerate(packets)
        if p.key and abs(p.pts - start) <= slack + EPS and lo - EPS <= p.pts < hi
    ]
    if not keys:
        raise CopyRefused(
            f"no key frame within {slack:g} s of {start:.3f} s inside the shot [{lo:.3f}, {hi:.3f})"
        )
    reasons = []
    for i in sorted(keys, key=lambda i: (abs(packets[i].pts - start), packets[i].pts)):
        try:
            return _plan_from(packets[i:], min(packets[i].pts + length, hi), match_time)
        except CopyRefused as e:
            reasons.append(str(e))
    raise CopyRefused("; ".join(reasons))


def _plan_from(rest: list[Packet], end: float, match_time: float) -> CopyPlan:
    """The copy from ``rest[0]`` (a key frame) to at most ``end``."""
    key = rest[0]
    if key.pts > match_time + EPS:
        raise CopyRefused(
            f"the key frame at {key.pts:.3f} s comes after the match at {match_time:.3f} s"
        )
    if any(p.dts is None for p in rest):
        raise CopyRefused(f"packets after the key frame at {key.pts:.3f} s have no decode time")
    gop = next((j for j in range(1, len(rest)) if rest[j].key), len(rest))
    if any(p.pts < key.pts - EPS for p in rest[1:gop]):
        # an open GOP: its first frames on screen need the GOP before
        raise CopyRefused(
            f"frames decoded after the key frame at {key.pts:.3f} s are shown before it"
        )
    n = _copied_prefix(rest, end)
    last = max(rest[:n], key=lambda p: p.pts)
    shown_end = min(p.pts for p in rest[n:]) if n < len(rest) else last.pts + last.duration
    if shown_end <= match_time + EPS:
        raise CopyRefused(
            f"a copy from the key frame at {key.pts:.3f} s ends at {shown_end:.3f} s, not past the match at {match_time:.3f} s"
        )
    after = rest[n].dts if n < len(rest) else rest[-1].dts + max(last.duration, 2 * EPS)  # type: ignore[operator]
    limit = (rest[n - 1].dts + after) / 2 - key.pts  # type: ignore[operator]
    if limit <= 0:
        raise CopyRefused(
            f"a copy from the key frame at {key.pts:.3f} s to {end:.3f} s is too short"
        )
    return CopyPlan(start=key.pts, end=round(shown_end, 6), video_seconds=limit)


def _copied_prefix(rest: list[Packet], end: float) -> int:
    """The longest prefix (in decode order) whose frames are all shown before ``end``
    and shown before every frame left out: no gap on screen. At least the key frame."""
    tail_min = [float("inf")] * (len(rest) + 1)
    for j in range(len(rest) - 1, -1, -1):
        tail_min[j] = min(rest[j].pts, tail_min[j + 1])
    best, head_max = 1, float("-inf")
    for j in range(1, len(rest) + 1):
        head_max = max(head_max, rest[j - 1].pts)
        if head_max >= end - EPS:
            break
        if tail_min[j] > head_max:
            best = j
    return best
