"""Frames out of a video, sampled and scaled by ffmpeg, centre-cropped as they are read.

:func:`iter_frames` feeds the embedder: at most one real source frame per
``1/fps`` bucket, shorter side scaled to ``size`` and centre-cropped (the same
preprocessing seed images get; the whole scaled frame is there too, for a
peak's still), streamed from ffmpeg's stdout in batches so a
long video never sits in memory. Each frame carries the exact presentation
time of the source frame it came from, so a match points at a frame that
:func:`frame_at` and :func:`miners.cut.cut_clip` can find again.

Times count from the video stream's first frame (see :mod:`media.probe`).

Two options make the decode cheaper. ``sampler="keyframes"`` decodes only the
key frames (``-skip_frame nokey``) and keeps at most one of them per bucket,
each still at its exact time: far less decoding, but a scene without a key
frame in it is never seen. ``hwaccel="cuda"`` decodes on an NVIDIA GPU (NVDEC)
and downloads the pictures for the same CPU filters; ``"auto"`` does so only
where ffmpeg and the machine can, and a hardware decode that fails before its
first frame is done once more in software.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from media.ffmpeg import FFMPEG, FilterLog, MediaError, Pipe, file_arg, run
from media.images import SQUARE_PIXELS, FilterStep, centre_square, fit_short_side
from media.probe import Streams, probe_streams

log = logging.getLogger(__name__)

# frame_at takes the first frame at or after a time; looking a millisecond
# early keeps a time read from iter_frames on its own frame despite rounding.
SEEK_SLACK = 1e-3
FRAME_TIMEOUT = 60.0  # seconds for frame_at: one seek and one decoded frame

# showinfo's own lines, matched from the start of what the filter said (FilterLog.body)
_FRAME_RE = re.compile(r"n:\s*\d+\s+pts:\s*(\S+)\s+pts_time:(\S+)")
_SIZE_RE = re.compile(r"\ss:(\d+)x(\d+)\s")
_TIME_BASE_RE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")

SAMPLERS = ("exact", "keyframes")  # every frame decoded, or key frames only
HWACCELS = ("none", "auto", "cuda")  # decoder: software, NVDEC where it works, NVDEC
# ffmpeg's decoder options per sampler, given before -i
_SAMPLER_INPUT = {"exact": {}, "keyframes": {"skip_frame": "nokey"}}
_PROBE_TIMEOUT = 10.0  # seconds for `ffmpeg -hwaccels` or `nvidia-smi -L`
_NVIDIA_DEVICE = Path("/dev/nvidia0")  # the first GPU's node, where the driver is loaded


def resolve_hwaccel(hwaccel: str) -> str:
    """``none`` or ``cuda``: ``auto`` is cuda only where :func:`cuda_decoding_available`."""
    if hwaccel not in HWACCELS:
        raise ValueError(f"hwaccel must be one of {', '.join(HWACCELS)}, not {hwaccel!r}")
    if hwaccel == "auto":
        return "cuda" if cuda_decoding_available() else "none"
    return hwaccel


@functools.cache
def cuda_decoding_available() -> bool:
    """ffmpeg was built with cuda among its hwaccels and an NVIDIA device is present.

    Asked once per process: a device node or a working ``nvidia-smi``, then
    ``ffmpeg -hwaccels``. Debian's ffmpeg lists cuda on every machine, so the
    list alone says nothing about the GPU.
    """
    if not (_NVIDIA_DEVICE.exists() or _nvidia_smi_runs()):
        return False
    try:
        listed = run([FFMPEG, "-hide_banner", "-hwaccels"], what="ffmpeg -hwaccels",
                     timeout=_PROBE_TIMEOUT)  # fmt: skip
    except MediaError as e:
        log.info("no hardware decoding: %s", e)
        return False
    return "cuda" in listed.decode("utf-8", "replace").split()


def _nvidia_smi_runs() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, timeout=_PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _software_fallback(
    sample: Callable[..., Iterator[tuple[np.ndarray, ...]]],
) -> Callable[..., Iterator[tuple[np.ndarray, ...]]]:
    """``hwaccel`` resolved; a hardware decode that fails before its first frame
    (no device, a driver that will not load) is tried once more in software, and
    logged. A failure after frames came out is the video's, as in software."""

    @functools.wraps(sample)
    def frames(path: str | Path, *, hwaccel: str = "none", **options):
        hwaccel = resolve_hwaccel(hwaccel)
        with contextlib.closing(sample(path, hwaccel=hwaccel, **options)) as batches:
            if hwaccel == "none":
                yield from batches
                return
            try:
                first = next(batches, None)
            except MediaError as e:
                log.warning("%s: %s decoding failed before the first frame, decoding in "
                            "software instead: %s", path, hwaccel, e)  # fmt: skip
                yield from sample(path, hwaccel="none", **options)
                return
            if first is not None:
                yield first
                yield from batches

    return frames


@_software_fallback
def iter_frames(
    path: str | Path,
    *,
    fps: float = 1.0,
    size: int = 224,
    batch_size: int = 64,
    timeout: float | None = None,
    threads: int = 0,
    sampler: str = "exact",
    hwaccel: str = "none",
    whole: bool = False,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield ``(times, frames)`` batches: float64 seconds ``(n,)`` and uint8 RGB
    ``(n, size, size, 3)``, ``n <= batch_size``.

    ``timeout`` bounds the whole decode; ``threads`` is ffmpeg's decoder thread
    count (0: ffmpeg decides), worth pinning when many workers share a machine.
    ``sampler`` is ``exact`` (every frame decoded) or ``keyframes`` (key frames
    only); ``hwaccel`` is ``none``, ``cuda`` or ``auto`` (see the module's notes).
    With ``whole``, batches are ``(times, frames, wholes)``: ``wholes`` holds the
    whole frames, shorter side scaled to ``size`` keeping the displayed aspect
    (ffmpeg's scale, as the rule does it), and ``frames`` is a view of their
    centre squares (:func:`centre_crop`).
    Raises :class:`MediaError` when ffmpeg fails or nothing decodes; a file cut
    short that ffmpeg still decodes in part yields what it could, with a warning.
    """
    if fps <= 0 or size <= 0 or batch_size <= 0:
        raise ValueError(f"fps, size and batch_size must be positive: {fps}, {size}, {batch_size}")
    info, streams = probe_streams(path)
    showinfo = FilterLog("showinfo")
    cmd = _sampling_command(path, streams, fps=fps, size=size, threads=threads, showinfo=showinfo,
                            sampler=sampler, hwaccel=hwaccel)  # fmt: skip
    log.debug("sampling %s: %s", path, cmd)
    n_frames = 0
    last_time = float("nan")
    clock = _FrameClock(path, showinfo)
    with Pipe(cmd, what=path, timeout=timeout, on_line=clock.parse, on_close=clock.close) as pipe:
        for times, wholes in _read_batches(pipe, clock, batch_size):
            # ffprobe gives the start to the microsecond; finer digits are noise.
            times = np.round(times - streams.video_start, 6)
            n_frames += len(times)
            last_time = float(times[-1])
            frames = centre_crop(wholes, size)
            yield (times, frames, wholes) if whole else (times, np.ascontiguousarray(frames))
        pipe.finish()
        if n_frames == 0:
            raise MediaError(f"{path}: no frames decoded: {pipe.tail() or 'no message'}")
        if pipe.problems(errors_only=True):
            log.warning(
                "%s: decoded %d frames up to %.2f s of %.2f s despite errors: %s",
                path, n_frames, last_time, info.duration, pipe.tail(),
            )  # fmt: skip


def frame_at(
    path: str | Path, time: float, *, height: int | None = None, timeout: float = FRAME_TIMEOUT
) -> np.ndarray:
    """One whole RGB frame, ``(h, w, 3)`` uint8: the first frame at or after
    ``time``, or the last frame when ``time`` lies past it but inside the video.

    Frame accurate: ffmpeg seeks to a key frame before ``time``, decodes, and a
    ``select`` on source timestamps drops frames until ``time``, so a time from
    :func:`iter_frames` gives back the very frame that was matched. The shorter
    side is scaled to at most ``height`` (never up), keeping the display
    aspect, with even sides.
    """
    info, streams = probe_streams(path)
    size = fit_short_side(info.width, info.height, height)
    frame = _grab(path, streams, time - SEEK_SLACK, size, timeout)
    if frame is None and 0 < time <= info.duration:
        # Past the last frame's start, yet that frame is still on screen.
        lookback = max(1.0, 3.0 / info.fps) if info.fps else 2.0
        frame = _grab(path, streams, time - lookback, size, timeout, last=True)
    if frame is None:
        raise MediaError(f"{path}: no frame at {time:.3f} s (duration {info.duration:.3f} s)")
    return frame


def _grab(
    path: str | Path,
    streams: Streams,
    time: float,
    size: tuple[int, int],
    timeout: float,
    *,
    last: bool = False,
) -> np.ndarray | None:
    """The first frame from video time ``time`` on, or None if there is none;
    with ``last``, the final frame of the video (ffmpeg reverses the few
    scaled frames from ``time`` to the end)."""
    width, height = size
    video = (
        ffmpeg.input(file_arg(path), ss=f"{streams.seek_before(time):.6f}")[
            str(streams.video_index)
        ]
        .filter("select", f"gte(t,{streams.source_time(time):.6f})")
        .filter("scale", width, height, flags="bicubic")
        .filter("setsar", 1)
    )
    if last:
        video = video.filter("reverse")
    cmd = (
        video.output("pipe:", format="rawvideo", pix_fmt="rgb24", **{"frames:v": 1})
        .global_args("-nostdin", "-hide_banner", "-copyts", "-loglevel", "error")
        .compile(cmd=FFMPEG)
    )
    out = run(cmd, what=path, timeout=timeout)
    n_bytes = width * height * 3
    if len(out) < n_bytes:
        return None
    return np.frombuffer(out[:n_bytes], dtype=np.uint8).reshape(height, width, 3).copy()


def _sampling_command(
    path: str | Path,
    streams: Streams,
    *,
    fps: float,
    size: int,
    threads: int,
    showinfo: FilterLog,
    sampler: str = "exact",
    hwaccel: str = "none",
) -> list[str]:
    """ffmpeg picks, times and scales; Python reads bytes and cuts the square.

    ``-copyts`` keeps the source timestamps, so showinfo reports them as they
    are and the buckets count from the video stream's own start (ffmpeg would
    otherwise shift by the container start, which for MPEG-TS even depends on
    which streams are mapped). ``select`` keeps the first frame whose bucket
    ``floor((t - start) * fps)`` is past the last kept one: no drift and no
    duplicated frames, unlike the ``fps`` filter; ``passthrough`` stops the
    muxer from duplicating or dropping frames to fake a constant rate.
    ``showinfo`` names the instance whose lines carry the frame times.

    ``keyframes`` has the decoder skip every frame but the key frames, so the
    same ``select`` sees only those and keeps the first of each bucket (a
    bucket without one stays empty). ``cuda`` decodes with NVDEC; without an
    output format the frames come back to system memory for the CPU filters.
    ``hwaccel`` here is already resolved: ``none`` or ``cuda``.
    """
    if sampler not in _SAMPLER_INPUT:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
    if hwaccel not in ("none", "cuda"):
        raise ValueError(f"hwaccel must be none or cuda here, not {hwaccel!r}")
    decoder = dict(_SAMPLER_INPUT[sampler])
    if hwaccel == "cuda":
        decoder["hwaccel"] = "cuda"

    def bucket(t: str) -> str:  # +1e-6: a frame on a bucket boundary stays in its bucket
        return f"floor(({t}-({streams.video_start:.6f}))*{float(fps)!r}+1e-6)"

    keep = f"isnan(prev_selected_t)+gt({bucket('t')},{bucket('prev_selected_t')})"
    video = ffmpeg.input(file_arg(path), threads=threads, **decoder)[str(streams.video_index)]
    video = video.filter("select", keep)
    # The rule's scale without its crop: the whole frame comes out (a peak's still),
    # and centre_crop cuts the square ffmpeg's crop would have. showinfo sits last,
    # so its lines carry the size of the frames written.
    steps = ([] if streams.square_pixels else SQUARE_PIXELS) + centre_square(size)[:1]
    video = apply_filters(video, steps).filter(showinfo.name)
    out = video.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    return out.global_args(
        "-nostdin", "-hide_banner", "-nostats", "-copyts", "-loglevel", "level+info"
    ).compile(cmd=FFMPEG)


def apply_filters(stream, steps: list[FilterStep]):
    """``steps`` (see :mod:`media.images`) applied to an ffmpeg-python stream, in order."""
    for name, args, kwargs in steps:
        stream = stream.filter(name, *args, **kwargs)
    return stream


def _read_batches(
    pipe: Pipe, clock: _FrameClock, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Fill fresh arrays frame by frame (a consumer may keep earlier batches);
    the i-th frame on stdout takes the i-th showinfo time.

    Every frame has the first frame's size: ffmpeg scales a frame whose source
    changed resolution mid-stream to the size it started writing (``-autoscale``).
    """
    shape = clock.frame_size(pipe)
    if shape is None:
        return
    width, height = shape
    while True:
        frames = np.empty((batch_size, height, width, 3), dtype=np.uint8)
        times = np.empty(batch_size, dtype=np.float64)
        n = 0
        while n < batch_size and pipe.read_into(memoryview(frames[n]).cast("B")):
            times[n] = clock.next_time(pipe)
            n += 1
        if n:
            yield times[:n], frames[:n]
        if n < batch_size:
            return


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` square of ``(n, h, w, 3)`` frames, as a view.

    The very pixels ffmpeg's ``crop=size:size`` gives: it places the square at
    ``(in - out) / 2`` rounded half to even (``lrint``), as Python's ``round`` does.
    """
    height, width = frames.shape[1:3]
    if height < size or width < size:
        raise ValueError(f"frames of {width}x{height} are smaller than the {size}-pixel square")
    top, left = round((height - size) / 2), round((width - size) / 2)
    return frames[:, top : top + size, left : left + size]


class _FrameClock:
    """The presentation time of every frame ffmpeg writes, read from showinfo's stderr lines.

    showinfo logs a frame before ffmpeg writes it, so by the time a frame is
    read from stdout its time is in the queue or on its way. Only lines of the
    ``showinfo`` instance count: the input's file name and metadata, printed
    to the same stderr, cannot add or move a time.
    """

    def __init__(self, path: str | Path, showinfo: FilterLog):
        self.path = path
        self._showinfo = showinfo
        self._times: queue.Queue[float | None] = queue.Queue()
        self._time_base: Fraction | None = None
        self._exhausted = False
        self._size: tuple[int, int] | None = None
        self._seen_frame = False
        self._first = threading.Event()  # the first frame's line is read, or stderr ended

    def parse(self, line: str) -> bool:
        """Take a showinfo line (True); leave any other line to the pipe's tail (False)."""
        said = self._showinfo.body(line)
        if said is None:
            return False
        if match := _FRAME_RE.match(said):
            if self._size is None and (size := _SIZE_RE.search(said)):
                self._size = int(size[1]), int(size[2])
            self._seen_frame = True
            self._first.set()
            self._times.put(self._seconds(match[1], match[2]))
        elif match := _TIME_BASE_RE.match(said):
            self._time_base = Fraction(int(match[1]), int(match[2]))
        return True

    def close(self) -> None:
        self._first.set()
        self._times.put(None)

    def frame_size(self, pipe: Pipe) -> tuple[int, int] | None:
        """(width, height) of the frames ffmpeg writes, from the first frame's line
        (logged before the frame is written); None when no frame came."""
        self._first.wait()
        if self._size is None and self._seen_frame:
            raise MediaError(f"{self.path}: ffmpeg wrote a frame without a size: {pipe.tail()}")
        return self._size

    def next_time(self, pipe: Pipe) -> float:
        """The time of the frame just read."""
        value = None if self._exhausted else self._times.get()
        if value is None:
            self._exhausted = True
            raise MediaError(f"{self.path}: ffmpeg wrote a frame without a time: {pipe.tail()}")
        return value

    def _seconds(self, pts: str, pts_time: str) -> float:
        """pts times the time base: exact, where ffmpeg 5's ``pts_time`` keeps
        only six significant digits (10 ms resolution past 1000 s). A frame
        without a timestamp (``NOPTS``) still gets a time, NaN, so frames and
        times stay paired."""
        try:
            if self._time_base:
                return float(int(pts) * self._time_base)
            return float(pts_time)
        except ValueError:
            return float("nan")
