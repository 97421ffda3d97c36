"""Frames out of a video, sampled, scaled and cropped by ffmpeg.

:func:`iter_frames` feeds the embedder: at most one real source frame per
``1/fps`` bucket, shorter side scaled to ``size`` and centre-cropped (the same
preprocessing seed images get), streamed from ffmpeg's stdout in batches so a
long video never sits in memory. Each frame carries the exact presentation
time of the source frame it came from, so a match points at a frame that
:func:`frame_at` and :func:`miners.cut.cut_clip` can find again.

Times count from the video stream's first frame (see :mod:`miners.probe`).
"""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO

import ffmpeg
import numpy as np

from miners.probe import FFMPEG, Streams, VideoError, probe_streams, stderr_tail

log = logging.getLogger(__name__)

# frame_at takes the first frame at or after a time; looking a millisecond
# early keeps a time read from iter_frames on its own frame despite rounding.
SEEK_SLACK = 1e-3
FRAME_TIMEOUT = 60.0  # seconds for frame_at: one seek and one decoded frame

_FRAME_RE = re.compile(r"\bn:\s*\d+\s+pts:\s*(\S+)\s+pts_time:(\S+)")
_TIME_BASE_RE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")
_SHOWINFO = "Parsed_showinfo"
_ERROR_TAGS = ("[error]", "[fatal]", "[panic]")  # -loglevel level+info tags each line


def iter_frames(
    path: str | Path,
    *,
    fps: float = 1.0,
    size: int = 224,
    batch_size: int = 64,
    timeout: float | None = None,
    threads: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(times, frames)`` batches: float64 seconds ``(n,)`` and uint8 RGB
    ``(n, size, size, 3)``, ``n <= batch_size``.

    ``timeout`` bounds the whole decode; ``threads`` is ffmpeg's decoder thread
    count (0: ffmpeg decides), worth pinning when many workers share a machine.
    Raises :class:`VideoError` when ffmpeg fails or nothing decodes; a file cut
    short that ffmpeg still decodes in part yields what it could, with a warning.
    """
    if fps <= 0 or size <= 0 or batch_size <= 0:
        raise ValueError(f"fps, size and batch_size must be positive: {fps}, {size}, {batch_size}")
    info, streams = probe_streams(path)
    cmd = _sampling_command(path, streams, fps=fps, size=size, threads=threads)
    log.debug("sampling %s: %s", path, cmd)
    n_frames = 0
    last_time = float("nan")
    with _FfmpegPipe(cmd, path, timeout) as pipe:
        for times, frames in _read_batches(pipe, size, batch_size):
            # ffprobe gives the start to the microsecond; finer digits are noise.
            times = np.round(times - streams.video_start, 6)
            n_frames += len(times)
            last_time = float(times[-1])
            yield times, frames
        pipe.finish()
        if n_frames == 0:
            raise VideoError(f"{path}: no frames decoded: {pipe.tail() or 'no message'}")
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
        raise VideoError(f"{path}: no frame at {time:.3f} s (duration {info.duration:.3f} s)")
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
        ffmpeg.input(str(path), ss=f"{streams.seek_before(time):.6f}")[str(streams.video_index)]
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
    out = _run(cmd, path, timeout)
    n_bytes = width * height * 3
    if len(out) < n_bytes:
        return None
    return np.frombuffer(out[:n_bytes], dtype=np.uint8).reshape(height, width, 3).copy()


def fit_short_side(width: int, height: int, limit: int | None) -> tuple[int, int]:
    """Scale so the shorter side is at most ``limit`` (never up), both sides even.

    Even because H.264 in yuv420p needs it; :mod:`miners.cut` uses this for
    both the clip and its still, so the two always agree.
    """
    scale = 1.0
    if limit is not None and min(width, height) > limit:
        scale = limit / min(width, height)
    return _even(width * scale), _even(height * scale)


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def _sampling_command(
    path: str | Path, streams: Streams, *, fps: float, size: int, threads: int
) -> list[str]:
    """ffmpeg picks, times, scales and crops; Python only reads bytes.

    ``-copyts`` keeps the source timestamps, so showinfo reports them as they
    are and the buckets count from the video stream's own start (ffmpeg would
    otherwise shift by the container start, which for MPEG-TS even depends on
    which streams are mapped). ``select`` keeps the first frame whose bucket
    ``floor((t - start) * fps)`` is past the last kept one: no drift and no
    duplicated frames, unlike the ``fps`` filter; ``passthrough`` stops the
    muxer from duplicating or dropping frames to fake a constant rate.
    """

    def bucket(t: str) -> str:  # +1e-6: a frame on a bucket boundary stays in its bucket
        return f"floor(({t}-({streams.video_start:.6f}))*{float(fps)!r}+1e-6)"

    keep = f"isnan(prev_selected_t)+gt({bucket('t')},{bucket('prev_selected_t')})"
    video = ffmpeg.input(str(path), threads=threads)[str(streams.video_index)]
    video = video.filter("select", keep).filter("showinfo")
    if not streams.square_pixels:
        video = video.filter("scale", "iw*sar", "ih").filter("setsar", 1)
    video = video.filter(
        "scale", size, size, force_original_aspect_ratio="increase", flags="bicubic"
    ).filter("crop", size, size)
    out = video.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    return out.global_args(
        "-nostdin", "-hide_banner", "-nostats", "-copyts", "-loglevel", "level+info"
    ).compile(cmd=FFMPEG)


def _read_batches(
    pipe: _FfmpegPipe, size: int, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Fill fresh arrays frame by frame (a consumer may keep earlier batches);
    the i-th frame on stdout takes the i-th showinfo time."""
    while True:
        frames = np.empty((batch_size, size, size, 3), dtype=np.uint8)
        times = np.empty(batch_size, dtype=np.float64)
        n = 0
        while n < batch_size and pipe.read_frame(frames[n]):
            times[n] = pipe.next_time()
            n += 1
        if n:
            yield times[:n], frames[:n]
        if n < batch_size:
            return


def _run(cmd: list[str], path: str | Path, timeout: float) -> bytes:
    """Run ffmpeg to completion; its failure becomes a VideoError naming ``path``."""
    try:
        proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise VideoError(f"{path}: ffmpeg timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        raise VideoError(f"{path}: ffmpeg failed: {stderr_tail(proc.stderr) or 'no message'}")
    return proc.stdout


class _FfmpegPipe:
    """A running ffmpeg whose stdout is raw frames and whose stderr, drained by
    a thread (else ffmpeg blocks on a full pipe), gives one time per frame.

    Leaving the ``with`` block, normally or on a closed generator, kills and
    reaps ffmpeg, so no process outlives its reader.
    """

    def __init__(self, cmd: list[str], path: str | Path, timeout: float | None):
        self.cmd = cmd
        self.path = path
        self.timeout = timeout
        self.timed_out = False
        self.returncode: int | None = None
        self._times: queue.Queue[float | None] = queue.Queue()
        self._time_base: Fraction | None = None
        self._lines: deque[str] = deque(maxlen=50)
        self._exhausted = False

    def __enter__(self) -> _FfmpegPipe:
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._reader.start()
        self._timer = None
        if self.timeout is not None:
            self._timer = threading.Timer(self.timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def _expire(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def read_frame(self, out: np.ndarray) -> bool:
        """Fill ``out`` with the next frame; False at the end (a torn frame is dropped)."""
        view = memoryview(out).cast("B")
        got = 0
        assert self.proc.stdout is not None
        while got < len(view):
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                return False
            got += n
        return True

    def next_time(self) -> float:
        """The showinfo time of the frame just read; showinfo logs a frame
        before ffmpeg writes it, so the line is there or on its way."""
        value = None if self._exhausted else self._times.get()
        if value is None:
            self._exhausted = True
            raise VideoError(f"{self.path}: ffmpeg wrote a frame without a time: {self.tail()}")
        return value

    def finish(self) -> None:
        """Wait for ffmpeg to exit; a failure or a timeout is the video's error."""
        self.returncode = self.proc.wait()
        self._reader.join()
        if self.returncode == 0:
            return
        if self.timed_out:
            raise VideoError(f"{self.path}: ffmpeg timed out after {self.timeout:g} s")
        raise VideoError(
            f"{self.path}: ffmpeg exited {self.returncode}: {self.tail() or 'no message'}"
        )

    def problems(self, *, errors_only: bool = False) -> list[str]:
        """Lines ffmpeg tagged as errors (and warnings, unless ``errors_only``:
        some are routine, such as swscale's note on yuvj420p)."""
        tags = _ERROR_TAGS if errors_only else ("[warning]", *_ERROR_TAGS)
        return [line for line in self._lines if any(tag in line for tag in tags)]

    def tail(self) -> str:
        """ffmpeg's own complaints if it made any, else its last lines."""
        return stderr_tail("\n".join(self.problems() or self._lines))

    def _drain(self, stderr: IO[bytes]) -> None:
        try:
            for raw in iter(stderr.readline, b""):
                self._parse(raw.decode("utf-8", "replace").rstrip())
        finally:
            self._times.put(None)

    def _parse(self, line: str) -> None:
        if _SHOWINFO not in line:
            self._lines.append(line)
            return
        if match := _FRAME_RE.search(line):
            self._times.put(self._seconds(match[1], match[2]))
        elif match := _TIME_BASE_RE.search(line):
            self._time_base = Fraction(int(match[1]), int(match[2]))

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
