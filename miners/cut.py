"""Cut one clip window out of a video: the mp4, its audio and its still.

A sample is ``K.mp4`` (H.264, AAC when there is sound), ``K.flac`` (mono
16 kHz, what the audio encoder eats) and ``K.jpg`` (the matched frame). Each is
written under a temporary name and renamed when complete, so a crash never
leaves a file that looks finished, and a failure removes what it started.

Three ways to cut (``mode``):

* ``exact`` re-encodes the window, frame-accurate at both ends; the jpg is
  the matched frame of the same decode;
* ``keyframe`` copies the video stream as it is from the key frame nearest
  the planned start (within ``keyframe_slack`` seconds, inside the clip's shot,
  not after the match), about ten times cheaper; the clip's true start is that
  key frame, and :class:`CutResult` says so. Only an H.264 yuv420p source in an
  indexed container (mp4, mov, mkv) whose shorter side is within ``height``
  can be copied; any other clip fails with the reason;
* ``auto`` copies where ``keyframe`` can and re-encodes the rest.

Audio is always re-encoded (AAC in the mp4, flac beside it) in the same
ffmpeg run as the video, trimmed to the same instants, so the two stay in sync.

:func:`cut_records` copies the clips of one video together: one ffprobe run
lists the packets around all their windows, and one ffmpeg run (up to
``BATCH_CLIPS`` clips) writes every copy, each from inputs of its own, so each
comes out as a copy alone would; if that run fails, its clips are cut one by one.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image

from media.audio import AUDIO_RATE
from media.ffmpeg import FFMPEG, MediaError, file_arg, run
from media.images import fit_short_side
from media.keyframes import (
    EPS,
    CopyPlan,
    CopyRefused,
    PacketList,
    plan_copy,
    probe_with_packets,
    probe_with_packets_over,
)
from media.probe import ProbeInfo, Streams, probe_streams
from miners.fetch import FetchError, SourceCache
from miners.frames import SEEK_SLACK, frame_at
from miners.scan import ScanResult
from shards.keys import is_valid_key
from shards.record import STATUS_FAILED, ClipRecord

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
MODES = ("auto", "exact", "keyframe")
CUT_EXACT, CUT_KEYFRAME = "exact", "keyframe"  # how a clip was cut: re-encoded or copied
COPY_CODECS = {"h264"}
COPY_PIX_FMTS = {"yuv420p", "yuvj420p"}
# Demuxers whose index seeks straight to a key frame: a copy starts exactly there.
COPY_FORMATS = {"mov", "mp4", "matroska"}
READ_MARGIN = 1.0  # seconds of packets listed past the window: B-frames reorder within it
BATCH_CLIPS = 16  # copies one ffmpeg run makes at most: bounds its command and open files
CUT_TIMEOUT = 300.0  # seconds one ffmpeg run of a cut may take


@dataclass
class CutResult:
    mp4: Path
    flac: Path | None
    jpg: Path
    duration: float  # seconds of the window that lie inside the video
    start: float  # the clip's true start, video seconds (a key frame's time when copied)
    end: float  # the clip's true end, video seconds
    cut: str = CUT_EXACT  # CUT_EXACT (re-encoded) or CUT_KEYFRAME (video stream copied)


def cut_clip(
    src: str | Path,
    start: float,
    end: float,
    out_dir: Path,
    key: str,
    *,
    match_time: float,
    height: int = 360,
    has_audio: bool,
    timeout: float = 300,
    mode: str = "exact",
    shot: tuple[float, float] | None = None,
    keyframe_slack: float = 1.0,
    still: Path | None = None,
) -> CutResult:
    """Write ``key``.mp4/.flac/.jpg for ``[start, end)`` of ``src`` into ``out_dir``.

    Times count from the video stream's first frame, as :func:`miners.frames.iter_frames`
    reports them. ``mode`` is ``exact``, ``keyframe`` or ``auto`` (module
    docstring); ``shot`` bounds where a copy may start and end (None: the whole
    video). The jpg of a re-encoded clip comes from its own pass, at the clip's
    size; a copied clip decodes nothing, so ``still``, the JPEG of the matched
    frame the scan kept (the embedder's size), becomes its jpg as it is, and
    without one the frame is decoded. Raises :class:`MediaError`
    (leaving nothing behind) when ffmpeg fails or, in ``keyframe`` mode, when
    the window cannot be copied (:class:`~media.keyframes.CopyRefused`);
    ``ValueError`` for a bad key, mode or an empty window.
    """
    _check_args(key, start, end, mode)
    out_dir = Path(out_dir)
    info, streams, plan = _prepare(src, (start, end, match_time, shot), height=height,
                                   slack=keyframe_slack, mode=mode)  # fmt: skip
    if has_audio and streams.audio_index is None:
        raise MediaError(f"{src}: has_audio was given but there is no audio stream")
    final = {ext: out_dir / f"{key}.{ext}" for ext in ("mp4", "flac", "jpg")}
    if not has_audio:
        del final["flac"]
    temp = _temps(final)
    try:
        if plan is not None:
            _copy(src, plan, streams, temp["mp4"], temp.get("flac"), timeout)
            frame = None
        else:  # the window is decoded anyway: its jpg, at the clip's size, comes from it
            size = fit_short_side(info.width, info.height, height)
            frame = _encode(src, start, end, streams, size, temp["mp4"], temp.get("flac"),
                            timeout, match_time)  # fmt: skip
            still = None
        _write_jpg(src, match_time, height, temp["jpg"], still=still, frame=frame)
        for ext, path in temp.items():
            os.replace(path, final[ext])
    finally:
        _discard(temp.values())
    if plan is not None:
        start, end = plan.start, plan.end
    log.debug("cut %s [%.3f, %.3f) -> %s", src, start, end, final["mp4"])
    return CutResult(
        mp4=final["mp4"],
        flac=final.get("flac"),
        jpg=final["jpg"],
        duration=max(0.0, min(end, info.duration) - max(start, 0.0)),
        start=start,
        end=end,
        cut=CUT_EXACT if plan is None else CUT_KEYFRAME,
    )


def _temps(final: dict[str, Path]) -> dict[str, Path]:
    """A temporary name beside each final one; ffmpeg writes there, a rename publishes."""
    token = secrets.token_hex(4)
    return {ext: path.with_name(f".{path.name}.{token}.part") for ext, path in final.items()}


def _discard(paths) -> None:
    """Remove what a failed cut started; what cannot be removed does not hide its error."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove %s: %s", path, e)


def _check_args(key: str, start: float, end: float, mode: str) -> None:
    if not is_valid_key(key):
        raise ValueError(f"key {key!r} must be letters, digits, '_' or '-'")
    if not end > start:
        raise ValueError(f"empty window [{start}, {end})")
    if mode not in MODES:
        raise ValueError(f"cut mode must be one of {', '.join(MODES)}, not {mode!r}")


def _prepare(
    src: str | Path,
    window: tuple[float, float, float, tuple[float, float] | None],
    *,
    height: int,
    slack: float,
    mode: str,
) -> tuple[ProbeInfo, Streams, CopyPlan | None]:
    """What the video holds and, unless ``mode`` is exact, how to copy ``window``
    (start, end, match time, shot); None: re-encode."""
    start, end, match_time, shot = window
    if mode == CUT_EXACT:
        return (*probe_streams(src), None)
    # the packets a copy needs, listed by the probe's own ffprobe run
    lo, hi = start - slack - READ_MARGIN, end + slack + READ_MARGIN
    info, streams, listing = probe_with_packets(src, lo, hi)
    bounded = (start, end, match_time, shot or (0.0, info.duration))
    return info, streams, _copy_plan(src, info, streams, listing, bounded, height, slack, mode)


def _copy_plan(
    src: str | Path,
    info: ProbeInfo,
    streams: Streams,
    listing: PacketList,
    window: tuple[float, float, float, tuple[float, float]],
    height: int,
    slack: float,
    mode: str,
) -> CopyPlan | None:
    """How to copy ``window`` (start, end, match time, shot), or None where ``auto``
    re-encodes instead; in ``keyframe`` mode a window that cannot be copied raises
    :class:`CopyRefused`."""
    start, end, match_time, (lo, hi) = window
    try:
        _check_copyable(src, info, streams, height)
        if listing.pix_fmt not in COPY_PIX_FMTS:
            raise CopyRefused(f"stream copy needs yuv420p video, {src} has {listing.pix_fmt}")
        return plan_copy(listing.packets, start=start, length=end - start,
                         shot=(max(lo, 0.0), min(hi, info.duration)), slack=slack,
                         match_time=match_time)  # fmt: skip
    except CopyRefused as e:
        if mode == CUT_KEYFRAME:
            raise CopyRefused(f"{src}: {e}" if str(src) not in str(e) else str(e)) from None
        log.debug("%s [%.3f, %.3f): re-encoded: %s", src, start, end, e)
        return None


def _check_copyable(src: str | Path, info: ProbeInfo, streams: Streams, height: int) -> None:
    """Stream copy keeps the source's codec and size: only H.264 within ``height``
    fits the sample contract, and only an indexed container seeks to a key frame exactly."""
    if info.video_codec not in COPY_CODECS:
        raise CopyRefused(f"stream copy needs H.264 video, {src} has {info.video_codec}")
    if min(info.width, info.height) > height:
        raise CopyRefused(
            f"stream copy keeps the size: {src} is {info.width}x{info.height}, over {height} px"
        )
    if not streams.square_pixels:
        raise CopyRefused(f"stream copy needs square pixels, {src} has non-square ones")
    if not COPY_FORMATS & set(streams.format_name.split(",")):
        raise CopyRefused(f"stream copy needs an indexed container, {src} is {streams.format_name}")


def _copy(
    src: str | Path,
    plan: CopyPlan,
    streams: Streams,
    mp4: Path,
    flac: Path | None,
    timeout: float,
) -> None:
    """One ffmpeg run copies the video packets of ``plan`` and re-encodes the audio
    of the same instants into the mp4 and the flac (:func:`_copy_outputs`)."""
    outputs = _copy_outputs(src, plan, streams, mp4, flac)
    _run_outputs(outputs, f"{src} [{plan.start:.3f}, {plan.end:.3f}) copied", timeout)


def _copy_outputs(
    src: str | Path,
    plan: CopyPlan,
    streams: Streams,
    mp4: Path,
    flac: Path | None,
) -> list[ffmpeg.nodes.OutputStream]:
    """The mp4 (and flac) outputs of a copy of ``plan``, from inputs of their own.

    Both inputs (the same file, opened twice) seek to the key frame, so ffmpeg
    counts time from it for both and the video starts at 0. The video input's
    ``-t`` is a decode-time limit (what ffmpeg applies to copied packets) that
    keeps exactly the planned packets; ``atrim`` ends the audio at the instant
    the last copied frame ends. (``-frames:v`` would end the audio with the video.)
    Input options belong to their input, so the outputs of several copies can
    share one ffmpeg run and each comes out as it would alone.
    """
    seek = f"{streams.source_time(plan.start) - streams.container_start:.6f}"
    video = ffmpeg.input(file_arg(src), ss=seek, t=f"{plan.video_seconds:.6f}")[
        str(streams.video_index)
    ]
    video_args = {"vcodec": "copy", "movflags": "+faststart", "format": "mp4"}
    if flac is None:
        return [ffmpeg.output(video, file_arg(mp4), **video_args)]
    audio = (
        ffmpeg.input(file_arg(src), ss=seek)[str(streams.audio_index)]
        .filter("atrim", start="0", end=f"{plan.end - plan.start:.6f}")
        .filter_multi_output("asplit", 2)
    )
    return [
        ffmpeg.output(video, audio[0], file_arg(mp4), **video_args, **_aac_args(streams)),
        ffmpeg.output(audio[1], file_arg(flac), **_FLAC_ARGS),
    ]


def _run_outputs(outputs: list[ffmpeg.nodes.OutputStream], what: str, timeout: float) -> None:
    cmd = (
        ffmpeg.merge_outputs(*outputs)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
        .compile(cmd=FFMPEG)
    )
    run(cmd, what=what, timeout=timeout)


_FLAC_ARGS = {"acodec": "flac", "ac": 1, "ar": AUDIO_RATE, "sample_fmt": "s16", "format": "flac"}


def _aac_args(streams: Streams) -> dict[str, object]:
    args: dict[str, object] = {"acodec": "aac", "audio_bitrate": "128k"}
    if streams.audio_channels > 2:
        args["ac"] = 2  # mono and stereo pass as they are; surround folds to stereo
    return args


def _encode(
    src: str | Path,
    start: float,
    end: float,
    streams: Streams,
    size: tuple[int, int],
    mp4: Path,
    flac: Path | None,
    timeout: float,
    jpg_time: float | None = None,
) -> np.ndarray | None:
    """One ffmpeg run decodes the window once and writes both mp4 and flac; with
    ``jpg_time`` it also returns the frame shown then (None when the window has none)."""
    outputs = _outputs(src, start, end, streams, size, mp4, flac, jpg_time)
    cmd = (
        ffmpeg.merge_outputs(*outputs)
        .global_args("-nostdin", "-hide_banner", "-copyts", "-loglevel", "error", "-y")
        .compile(cmd=FFMPEG)
    )
    out = run(cmd, what=f"{src} [{start:.3f}, {end:.3f})", timeout=timeout)
    n_bytes = size[0] * size[1] * 3
    if jpg_time is None or len(out) < n_bytes:
        return None
    return np.frombuffer(out[:n_bytes], dtype=np.uint8).reshape(size[1], size[0], 3).copy()


def _outputs(
    src: str | Path,
    start: float,
    end: float,
    streams: Streams,
    size: tuple[int, int],
    mp4: Path,
    flac: Path | None,
    jpg_time: float | None = None,
) -> list[ffmpeg.nodes.OutputStream]:
    """The mp4 (and flac, and the still's raw frame on stdout) outputs of the window ``[start, end)``.

    ffmpeg seeks to a key frame before ``start`` and decodes from there;
    ``trim``/``atrim`` on source timestamps (``-copyts``) then cut both streams
    at the same instants, to the frame and the sample, and ``setpts`` moves
    ``start`` to 0 for both, which keeps them in sync (a first video frame
    between two source frames' times starts a little after 0, as with
    ffmpeg's own ``-ss``). ffmpeg stops reading once both trims have ended.
    The still takes the first frame from ``jpg_time`` on, scaled by the very
    filters :func:`miners.frames.frame_at` uses, so it is the frame (and the
    pixels) a separate seek would give.
    """
    t0, t1 = streams.source_time(max(start, 0.0)), streams.source_time(end)
    source = ffmpeg.input(file_arg(src), ss=f"{streams.seek_before(start):.6f}")
    window = (
        source[str(streams.video_index)]
        .trim(start=f"{t0:.6f}", end=f"{t1:.6f}")
        .setpts(f"PTS-{t0:.6f}/TB")
    )
    outputs = []
    if jpg_time is not None:
        window = window.filter_multi_output("split", 2)
        at = streams.source_time(jpg_time - SEEK_SLACK) - t0
        still = _scaled(window[1].filter("select", f"gte(t,{at:.6f})"), size)
        outputs.append(ffmpeg.output(still, "pipe:", format="rawvideo", pix_fmt="rgb24",
                                     **{"frames:v": 1}))  # fmt: skip
        window = window[0]
    video = _scaled(window, size)
    video_args = {
        "vcodec": "libx264",
        "preset": "veryfast",
        "crf": 23,
        "pix_fmt": "yuv420p",
        "movflags": "+faststart",
        "format": "mp4",
    }
    if flac is None:
        return [ffmpeg.output(video, file_arg(mp4), **video_args), *outputs]
    audio = (
        source[str(streams.audio_index)]
        .filter("atrim", start=f"{t0:.6f}", end=f"{t1:.6f}")
        .filter("asetpts", f"PTS-{t0:.6f}/TB")
        .filter_multi_output("asplit", 2)
    )
    return [
        ffmpeg.output(video, audio[0], file_arg(mp4), **video_args, **_aac_args(streams)),
        ffmpeg.output(audio[1], file_arg(flac), **_FLAC_ARGS),
        *outputs,
    ]


def _scaled(stream: ffmpeg.nodes.FilterableStream, size: tuple[int, int]):
    """The one scaling of clips and stills (as :func:`miners.frames.frame_at` scales)."""
    return stream.filter("scale", size[0], size[1], flags="bicubic").filter("setsar", 1)


def _write_jpg(
    src: str | Path,
    match_time: float,
    height: int,
    path: Path,
    *,
    still: Path | None = None,
    frame: np.ndarray | None = None,
) -> None:
    """The matched frame, sized by the same rule as the mp4, so they line up: the
    scan's ``still`` copied as it is, else the ``frame`` the cut decoded, else one
    decoded now."""
    if still is not None:
        shutil.copyfile(still, path)
        return
    if frame is None:
        frame = frame_at(src, match_time, height=height)
    Image.fromarray(frame).save(path, format="JPEG", quality=JPEG_QUALITY)


def cut_records(
    records: list[ClipRecord],
    out_dir: Path,
    *,
    scans: dict[str, ScanResult],
    sources: SourceCache,
    height: int = 360,
    workers: int = 2,
    mode: str = "exact",
    keyframe_slack: float = 1.0,
    stills: Callable[[ClipRecord], Path | None] | None = None,
) -> None:
    """Cut every record's window into ``out_dir`` on ``workers`` threads (ffmpeg does the
    work); each record gets its media paths, or is marked failed with its error.

    ``mode`` and ``keyframe_slack`` as :func:`cut_clip`; a copied clip's record
    gets the key frame's start and its true end. Unless ``mode`` is ``exact``
    each record says how it was cut (``record.cut``). ``stills(record)`` gives
    the JPEG the scan kept of a record's matched frame, or None to decode one.
    Copies are made a video at a time (module docstring); re-encoded clips, and
    the clips of a video that could not be looked up, are cut one by one.
    """
    if mode not in MODES:
        raise ValueError(f"cut mode must be one of {', '.join(MODES)}, not {mode!r}")
    one = functools.partial(_cut_one, out_dir=out_dir, scans=scans, sources=sources,
                            height=height, mode=mode, keyframe_slack=keyframe_slack,
                            stills=stills)  # fmt: skip
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if mode == CUT_EXACT:
            list(pool.map(one, records))
            return
        plan = functools.partial(_plan_source, scans=scans, sources=sources, height=height,
                                 mode=mode, slack=keyframe_slack)  # fmt: skip
        planned = list(pool.map(plan, _by_source(records)))
        size = _batch_size(sum(len(p.copies) for p in planned), workers)
        tasks = [functools.partial(one, r) for p in planned for r in p.rest]
        for p in planned:
            for i in range(0, len(p.copies), size):
                tasks.append(functools.partial(_copy_batch, p, p.copies[i : i + size],
                                               out_dir=out_dir, height=height, stills=stills,
                                               one=one))  # fmt: skip
        list(pool.map(lambda task: task(), tasks))


def _by_source(records: list[ClipRecord]) -> list[list[ClipRecord]]:
    """``records`` grouped by their video, in the order they come."""
    groups: dict[str, list[ClipRecord]] = {}
    for record in records:
        groups.setdefault(record.video_id, []).append(record)
    return list(groups.values())


def _batch_size(copies: int, workers: int) -> int:
    """Clips per ffmpeg run: as few runs as keep every worker busy, at most BATCH_CLIPS."""
    return max(1, min(BATCH_CLIPS, math.ceil(copies / max(1, workers))))


@dataclass
class _SourcePlan:
    """One video's clips in ``keyframe``/``auto`` mode: those to copy and how, and the
    rest (re-encoded, or cut one by one where looking the video up failed)."""

    src: str | Path = ""
    streams: Streams | None = None
    has_audio: bool = False
    copies: list[tuple[ClipRecord, CopyPlan]] = field(default_factory=list)
    rest: list[ClipRecord] = field(default_factory=list)


def _plan_source(
    records: list[ClipRecord],
    *,
    scans: dict[str, ScanResult],
    sources: SourceCache,
    height: int,
    mode: str,
    slack: float,
) -> _SourcePlan:
    """One ffprobe run lists the packets around all of one video's windows; each
    window is planned from it as :func:`cut_clip` plans it. A window ``keyframe``
    mode cannot copy marks its record failed with the reason."""
    scan = scans[records[0].video_id]
    has_audio = bool(scan.source.get("has_audio"))
    try:
        src = sources.path(scan.video_id, scan.video, scan.local_path)
        for r in records:
            _check_args(r.key, r.start, r.end, mode)
        spans = [(r.start - slack - READ_MARGIN, r.end + slack + READ_MARGIN) for r in records]
        info, streams, listing = probe_with_packets_over(src, spans)
        if has_audio and streams.audio_index is None:
            raise MediaError(f"{src}: has_audio was given but there is no audio stream")
    except (FetchError, MediaError, OSError, ValueError) as e:
        log.debug("%s: clips cut one by one: %s", scan.video_id, e)  # each fails on its own
        return _SourcePlan(rest=records)
    plan = _SourcePlan(src=src, streams=streams, has_audio=has_audio)
    for r in records:
        window = (r.start, r.end, r.match_time, shot_of(r, scan))
        try:
            copy = _copy_plan(src, info, streams, listing, window, height, slack, mode)
        except CopyRefused as e:
            r.status, r.error = STATUS_FAILED, f"cut: {e}"
            log.warning("clip %s failed: %s", r.key, e)
            continue
        if copy is None:
            plan.rest.append(r)
        else:
            plan.copies.append((r, copy))
    return plan


def _copy_batch(
    source: _SourcePlan,
    copies: list[tuple[ClipRecord, CopyPlan]],
    *,
    out_dir: Path,
    height: int,
    stills: Callable[[ClipRecord], Path | None] | None,
    one: Callable[[ClipRecord], None],
) -> None:
    """One ffmpeg run writes every clip of ``copies`` (each from inputs of its own, to
    temporary names); then each gets its jpg and is renamed into place. When the run
    fails, the clips are cut one by one, so a bad one fails alone with its own error."""
    src, streams = source.src, source.streams
    assert streams is not None
    exts = ("mp4", "flac", "jpg") if source.has_audio else ("mp4", "jpg")
    finals = [{ext: Path(out_dir) / f"{r.key}.{ext}" for ext in exts} for r, _ in copies]
    temps = [_temps(final) for final in finals]
    first: dict[CopyPlan, int] = {}  # a window copied twice is written once, then copied
    outputs = []
    for i, ((_, plan), temp) in enumerate(zip(copies, temps, strict=True)):
        if first.setdefault(plan, i) == i:
            outputs += _copy_outputs(src, plan, streams, temp["mp4"], temp.get("flac"))
    try:
        _run_outputs(outputs, f"{src}: {len(copies)} clips copied", CUT_TIMEOUT)
        for (_, plan), temp in zip(copies, temps, strict=True):
            for ext in ("mp4", "flac"):
                if ext in temp and temps[first[plan]][ext] != temp[ext]:
                    shutil.copyfile(temps[first[plan]][ext], temp[ext])
    except (MediaError, OSError, ValueError) as e:  # ValueError: ffmpeg-python's own refusal
        log.info("%s; cutting them one by one", e)
        for temp in temps:
            _discard(temp.values())
        for record, _ in copies:
            one(record)
        return
    for (record, plan), temp, final in zip(copies, temps, finals, strict=True):
        _publish(record, plan, src, temp, final, height=height,
                 still=stills(record) if stills else None)  # fmt: skip


def _publish(
    record: ClipRecord,
    plan: CopyPlan,
    src: str | Path,
    temp: dict[str, Path],
    final: dict[str, Path],
    *,
    height: int,
    still: Path | None,
) -> None:
    """A copied clip's jpg, then its files renamed into place and its record filled in;
    a failure marks the record failed and leaves no file of it."""
    try:
        _write_jpg(src, record.match_time, height, temp["jpg"], still=still)
        for ext, path in temp.items():
            os.replace(path, final[ext])
    except (MediaError, OSError) as e:
        record.status, record.error = STATUS_FAILED, f"cut: {e}"
        log.warning("clip %s failed: %s", record.key, e)
        return
    finally:
        _discard(temp.values())
    log.debug("cut %s [%.3f, %.3f) -> %s", src, plan.start, plan.end, final["mp4"])
    record.mp4, record.jpg = str(final["mp4"]), str(final["jpg"])
    record.flac = str(final["flac"]) if "flac" in final else None
    record.start, record.end, record.cut = plan.start, plan.end, CUT_KEYFRAME


def _cut_one(
    record: ClipRecord,
    *,
    out_dir: Path,
    scans: dict[str, ScanResult],
    sources: SourceCache,
    height: int,
    mode: str = "exact",
    keyframe_slack: float = 1.0,
    stills: Callable[[ClipRecord], Path | None] | None = None,
) -> None:
    """Cut one clip; a failure marks the record failed with its error, not the shard."""
    scan = scans[record.video_id]
    try:
        src = sources.path(scan.video_id, scan.video, scan.local_path)
        res = cut_clip(src, record.start, record.end, out_dir, record.key,
                       match_time=record.match_time, height=height,
                       has_audio=bool(scan.source.get("has_audio")), mode=mode,
                       shot=shot_of(record, scan), keyframe_slack=keyframe_slack,
                       still=stills(record) if stills else None)  # fmt: skip
        record.mp4, record.jpg = str(res.mp4), str(res.jpg)
        record.flac = str(res.flac) if res.flac else None
        record.start, record.end = res.start, res.end
        if mode != CUT_EXACT:
            record.cut = res.cut
    except (FetchError, MediaError, OSError) as e:
        record.status, record.error = STATUS_FAILED, f"cut: {e}"
        log.warning("clip %s failed: %s", record.key, e)


def shot_of(record: ClipRecord, scan: ScanResult) -> tuple[float, float]:
    """The shot ``record``'s window was placed in: that of the candidate whose peak is the
    record's match (the whole video when the scan found no shot, as the window's
    placement assumed). When no candidate says, the window itself: a copy then
    never reaches outside what was planned."""
    for c in scan.candidates:
        if abs(c.peak_time - record.match_time) > 1e-6:
            continue
        if c.shot is None:
            return 0.0, math.inf
        if c.shot[0] - EPS <= record.start and record.end <= c.shot[1] + EPS:
            return c.shot
    return record.start, record.end
