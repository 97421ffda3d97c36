"""Cut one clip window out of a video: the mp4, its audio and its still.

A sample is ``K.mp4`` (H.264, AAC when there is sound), ``K.flac`` (mono
16 kHz, what the audio encoder eats) and ``K.jpg`` (the matched frame). Each is
written under a temporary name and renamed when complete, so a crash never
leaves a file that looks finished, and a failure removes what it started.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
from PIL import Image

from media.audio import AUDIO_RATE
from media.ffmpeg import FFMPEG, MediaError, file_arg, run
from media.images import fit_short_side
from media.probe import Streams, probe_streams
from miners.fetch import FetchError, SourceCache
from miners.frames import frame_at
from miners.scan import ScanResult
from shards.keys import is_valid_key
from shards.record import STATUS_FAILED, ClipRecord

log = logging.getLogger(__name__)

JPEG_QUALITY = 90


@dataclass
class CutResult:
    mp4: Path
    flac: Path | None
    jpg: Path
    duration: float  # seconds of the window that lie inside the video


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
) -> CutResult:
    """Write ``key``.mp4/.flac/.jpg for ``[start, end)`` of ``src`` into ``out_dir``.

    Times count from the video stream's first frame, as :func:`miners.frames.iter_frames`
    reports them. Raises :class:`MediaError` (leaving nothing behind) when
    ffmpeg fails, ``ValueError`` for a bad key or an empty window.
    """
    if not is_valid_key(key):
        raise ValueError(f"key {key!r} must be letters, digits, '_' or '-'")
    if not end > start:
        raise ValueError(f"empty window [{start}, {end})")
    out_dir = Path(out_dir)
    info, streams = probe_streams(src)
    if has_audio and streams.audio_index is None:
        raise MediaError(f"{src}: has_audio was given but there is no audio stream")
    size = fit_short_side(info.width, info.height, height)
    final = {ext: out_dir / f"{key}.{ext}" for ext in ("mp4", "flac", "jpg")}
    if not has_audio:
        del final["flac"]
    token = secrets.token_hex(4)
    temp = {ext: out_dir / f".{key}.{ext}.{token}.part" for ext in final}
    try:
        _encode(src, start, end, streams, size, temp["mp4"], temp.get("flac"), timeout)
        _write_jpg(src, match_time, height, temp["jpg"])
        for ext, path in temp.items():
            os.replace(path, final[ext])
    finally:
        for path in temp.values():
            path.unlink(missing_ok=True)
    log.debug("cut %s [%.3f, %.3f) -> %s", src, start, end, final["mp4"])
    return CutResult(
        mp4=final["mp4"],
        flac=final.get("flac"),
        jpg=final["jpg"],
        duration=max(0.0, min(end, info.duration) - max(start, 0.0)),
    )


def _encode(
    src: str | Path,
    start: float,
    end: float,
    streams: Streams,
    size: tuple[int, int],
    mp4: Path,
    flac: Path | None,
    timeout: float,
) -> None:
    """One ffmpeg run decodes the window once and writes both mp4 and flac."""
    cmd = (
        ffmpeg.merge_outputs(*_outputs(src, start, end, streams, size, mp4, flac))
        .global_args("-nostdin", "-hide_banner", "-copyts", "-loglevel", "error", "-y")
        .compile(cmd=FFMPEG)
    )
    run(cmd, what=f"{src} [{start:.3f}, {end:.3f})", timeout=timeout)


def _outputs(
    src: str | Path,
    start: float,
    end: float,
    streams: Streams,
    size: tuple[int, int],
    mp4: Path,
    flac: Path | None,
) -> list[ffmpeg.nodes.OutputStream]:
    """The mp4 (and flac) outputs of the window ``[start, end)``.

    ffmpeg seeks to a key frame before ``start`` and decodes from there;
    ``trim``/``atrim`` on source timestamps (``-copyts``) then cut both streams
    at the same instants, to the frame and the sample, and ``setpts`` moves
    ``start`` to 0 for both, which keeps them in sync (a first video frame
    between two source frames' times starts a little after 0, as with
    ffmpeg's own ``-ss``). ffmpeg stops reading once both trims have ended.
    """
    t0, t1 = streams.source_time(max(start, 0.0)), streams.source_time(end)
    source = ffmpeg.input(file_arg(src), ss=f"{streams.seek_before(start):.6f}")
    video = (
        source[str(streams.video_index)]
        .trim(start=f"{t0:.6f}", end=f"{t1:.6f}")
        .setpts(f"PTS-{t0:.6f}/TB")
        .filter("scale", size[0], size[1], flags="bicubic")
        .filter("setsar", 1)
    )
    video_args = {
        "vcodec": "libx264",
        "preset": "veryfast",
        "crf": 23,
        "pix_fmt": "yuv420p",
        "movflags": "+faststart",
        "format": "mp4",
    }
    if flac is None:
        return [ffmpeg.output(video, file_arg(mp4), **video_args)]
    audio = (
        source[str(streams.audio_index)]
        .filter("atrim", start=f"{t0:.6f}", end=f"{t1:.6f}")
        .filter("asetpts", f"PTS-{t0:.6f}/TB")
        .filter_multi_output("asplit", 2)
    )
    audio_args: dict[str, object] = {"acodec": "aac", "audio_bitrate": "128k"}
    if streams.audio_channels > 2:
        audio_args["ac"] = 2  # mono and stereo pass as they are; surround folds to stereo
    return [
        ffmpeg.output(video, audio[0], file_arg(mp4), **video_args, **audio_args),
        ffmpeg.output(
            audio[1],
            file_arg(flac),
            acodec="flac",
            ac=1,
            ar=AUDIO_RATE,
            sample_fmt="s16",
            format="flac",
        ),
    ]


def _write_jpg(src: str | Path, match_time: float, height: int, path: Path) -> None:
    """The matched frame, sized by the same rule as the mp4, so they line up."""
    image = Image.fromarray(frame_at(src, match_time, height=height))
    image.save(path, format="JPEG", quality=JPEG_QUALITY)


def cut_records(
    records: list[ClipRecord],
    out_dir: Path,
    *,
    scans: dict[str, ScanResult],
    sources: SourceCache,
    height: int = 360,
    workers: int = 2,
) -> None:
    """Cut every record's window into ``out_dir`` on ``workers`` threads (ffmpeg does the
    work); each record gets its media paths, or is marked failed with its error."""
    cut = functools.partial(_cut_one, out_dir=out_dir, scans=scans, sources=sources, height=height)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(cut, records))


def _cut_one(
    record: ClipRecord,
    *,
    out_dir: Path,
    scans: dict[str, ScanResult],
    sources: SourceCache,
    height: int,
) -> None:
    """Cut one clip; a failure marks the record failed with its error, not the shard."""
    scan = scans[record.video_id]
    try:
        src = sources.path(scan.video_id, scan.video, scan.local_path)
        res = cut_clip(src, record.start, record.end, out_dir, record.key,
                       match_time=record.match_time, height=height,
                       has_audio=bool(scan.source.get("has_audio")))  # fmt: skip
        record.mp4, record.jpg = str(res.mp4), str(res.jpg)
        record.flac = str(res.flac) if res.flac else None
    except (FetchError, MediaError, OSError) as e:
        record.status, record.error = STATUS_FAILED, f"cut: {e}"
        log.warning("clip %s failed: %s", record.key, e)
