"""Hard cuts: where one shot ends and the next begins, whatever either shot looks like.

Why not PySceneDetect's ContentDetector: it scores each frame by its mean
HSV change from the frame before, against one fixed threshold, and merges a
run of frames over the threshold into one "flash". Footage that changes a
lot every frame (per-pixel noise, a fast texture, a busy real scene) is over
any useful threshold on every frame, so the cut into or out of it is one
flash among many and goes unseen, even at threshold 8.

Here the evidence of a cut between frames ``t-1`` and ``t`` is the change of
two per-frame features that per-pixel noise cannot disturb:

* a coarse thumbnail, the mean of each colour over blocks of
  :data:`BLOCK` pixels of a small decoded frame (:data:`SIZE`): noise
  averages out inside a block, while the layout of a shot (where its light
  and colours lie) is kept. Its change is the mean absolute difference of
  two thumbnails, in grey levels (0-255);
* a colour histogram per channel (:data:`BINS` bins): it ignores where
  things are, so noise, texture and camera motion barely move it, while a
  new shot with another palette moves it a lot. Its change is the total
  variation distance of two histograms, 0 (same) to 1 (disjoint), averaged
  over the three channels.

Each change is judged against the typical change around it, as PySceneDetect's
AdaptiveDetector does: the median change of the ``window`` frames on either
side of ``t`` (``t`` itself left out). A cut is a change at least ``ratio``
times that typical change and at least an absolute ``floor`` (the thumbnail's
``thumb_floor`` grey levels or the histogram's ``hist_floor``), in either
feature, and the largest such change within ``min_gap`` seconds. The adaptive
part is what keeps a fast real camera (big changes on every frame) free of
false cuts; the floor keeps a still shot (changes near zero) free of them.

:func:`find_cuts` decides on decoded frames (pure numpy, unit-testable);
:func:`detect_cuts` decodes a region of a file with ffmpeg and calls it;
:func:`shot_at` turns cuts into the shot holding a time.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from media.ffmpeg import DEFAULT_TIMEOUT, FFMPEG, FilterLog, MediaError, Pipe, file_arg
from media.probe import probe_streams

SIZE = (64, 36)  # (width, height) pixels the frames are decoded at, area-averaged
BLOCK = 4  # pixels: the thumbnail is the colour mean of each BLOCK x BLOCK block (16x9 at SIZE)
BINS = 16  # histogram bins per colour channel
EPS = 1e-4  # seconds: frames on a region's edge are kept or dropped despite float rounding
CHUNK = 256  # frames read from ffmpeg at a time
# a frame line of showinfo, matched from the start of what the filter said (FilterLog.body)
_PTS_TIME = re.compile(r"n:\s*\d+\s+pts:\s*\S+\s+pts_time:\s*(-?[0-9.eE+-]+)")


# The decision's tuning, each a keyword of find_cuts and detect_cuts.
DEFAULTS: dict[str, float] = {
    "window": 4,  # frames on each side whose median change is the typical change
    "ratio": 3.0,  # a cut's change is at least this many times the typical change
    "thumb_floor": 10.0,  # grey levels (0-255): least thumbnail change of a cut
    "hist_floor": 0.3,  # total variation (0-1): least histogram change of a cut
    "min_gap": 0.2,  # seconds: of two cuts closer than this, the stronger one is kept
}


def frame_features(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails (N, H/BLOCK, W/BLOCK, 3) float32 and histograms (N, 3, BINS) float32
    (each channel's sums to 1) of ``frames`` (N, H, W, 3) uint8 RGB."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames of shape {frames.shape}, expected (N, H, W, 3)")
    n, h, w, _ = frames.shape
    hb, wb = max(h // BLOCK, 1), max(w // BLOCK, 1)
    crop = frames[:, : hb * (h // hb), : wb * (w // wb)].astype(np.float32)
    thumbs = crop.reshape(n, hb, h // hb, wb, w // wb, 3).mean(axis=(2, 4))
    bins = frames.reshape(n, -1, 3) // (256 // BINS)  # (N, pixels, 3) bin indices
    offsets = (np.arange(n)[:, None] * 3 + np.arange(3)[None, :]) * BINS  # (N, 3)
    flat = (bins.astype(np.int64) + offsets[:, None, :]).ravel()
    hists = np.bincount(flat, minlength=n * 3 * BINS).reshape(n, 3, BINS).astype(np.float32)
    return thumbs, hists / max(h * w, 1)


def feature_changes(thumbs: np.ndarray, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Change into each frame from the one before: thumbnail (grey levels) and histogram
    (0-1) changes, each (N,) float64 with 0 for the first frame."""
    n = len(thumbs)
    d_thumb, d_hist = np.zeros(n), np.zeros(n)
    if n > 1:
        d_thumb[1:] = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2, 3))
        d_hist[1:] = 0.5 * np.abs(np.diff(hists, axis=0)).sum(axis=2).mean(axis=1)
    return d_thumb, d_hist


def _typical(change: np.ndarray, window: int) -> np.ndarray:
    """Median of ``change`` over the ``window`` frames on each side of each frame, the frame
    itself (and frame 0, which has no change) left out."""
    n = len(change)
    out = np.zeros(n)
    for t in range(1, n):
        around = np.r_[change[max(1, t - window) : t], change[t + 1 : t + 1 + window]]
        out[t] = np.median(around) if len(around) else 0.0
    return out


def cut_strength(
    d_thumb: np.ndarray, d_hist: np.ndarray, *, window: int, ratio: float,
    thumb_floor: float, hist_floor: float,
) -> np.ndarray:  # fmt: skip
    """How strongly each frame starts a new shot: >= 1 is a cut (see the module's doc).

    Each feature scores ``min(change / floor, change / (ratio * typical))``; the frame's
    strength is the larger of the two features' scores.
    """
    window = max(int(window), 1)
    scores = []
    for change, floor in ((d_thumb, thumb_floor), (d_hist, hist_floor)):
        typical = ratio * _typical(change, window)
        adaptive = np.where(typical > 0, change / np.maximum(typical, 1e-12), np.inf)
        scores.append(np.minimum(change / floor, adaptive))
    strength = np.maximum(*scores)
    strength[:1] = 0.0
    return strength


def find_cuts(frames: np.ndarray, times: Sequence[float], **tuning: float) -> list[float]:
    """Hard cut times among ``frames`` (N, H, W, 3) uint8 RGB shown at ``times`` (seconds):
    the time of the first frame of each new shot. ``tuning`` overrides :data:`DEFAULTS`."""
    thumbs, hists = frame_features(frames)
    return cuts_from_features(thumbs, hists, times, **tuning)


def cuts_from_features(
    thumbs: np.ndarray, hists: np.ndarray, times: Sequence[float], **tuning: float
) -> list[float]:
    """:func:`find_cuts` on features already made by :func:`frame_features`."""
    unknown = set(tuning) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown cut tuning {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **tuning}
    times = np.asarray(times, dtype=float)
    if len(times) != len(thumbs):
        raise ValueError(f"{len(thumbs)} frames but {len(times)} times")
    if len(times) < 2:
        return []
    d_thumb, d_hist = feature_changes(thumbs, hists)
    strength = cut_strength(
        d_thumb, d_hist, window=int(opts["window"]), ratio=opts["ratio"],
        thumb_floor=opts["thumb_floor"], hist_floor=opts["hist_floor"],
    )  # fmt: skip
    # Strongest first; a cut too close to a kept one is the same event (a flash, a torn frame).
    kept: list[int] = []
    for t in sorted(np.flatnonzero(strength >= 1.0), key=lambda i: -strength[i]):
        if all(abs(times[t] - times[k]) >= opts["min_gap"] for k in kept):
            kept.append(int(t))
    return [float(times[t]) for t in sorted(kept)]


def decode_region(
    path: str | Path, start: float = 0.0, end: float | None = None, *, fps: float = 25.0,
    size: tuple[int, int] = SIZE, timeout: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Frames of ``path`` in [start, end) (source seconds), at most ``fps`` a second, ``size``
    (width, height) RGB uint8, and their times (source seconds).

    At or under ``fps`` every frame is kept; over it, the first frame of each 1/fps
    tick (counted from the video's start): no frame is repeated, none is invented.
    """
    frames: list[np.ndarray] = []
    times = _decode(path, start, end, fps, size, timeout, frames.append)
    w, h = size
    if not frames:
        return np.zeros((0, h, w, 3), np.uint8), times
    return np.concatenate(frames), times


def _decode(path, start, end, fps, size, timeout, take) -> np.ndarray:
    """Decode as :func:`decode_region` says, handing ``take`` the frames a chunk at a time
    (a long region is never held whole); returns the times of all frames."""
    info, streams = probe_streams(path)
    if end is not None and end <= start:
        return np.zeros(0)
    start = max(start, 0.0)
    span = (info.duration if end is None else end) - start
    if timeout is None:  # small frames decode far faster than real time
        timeout = DEFAULT_TIMEOUT + 2.0 * max(span, 0.0)
    # -copyts: filters see source timestamps, as every decoder of capmine does (media.probe)
    trim = f"trim=start={streams.source_time(start) - EPS:.6f}"
    if end is not None:
        trim += f":end={streams.source_time(end) - EPS:.6f}"
    tick = f"floor((t-({streams.video_start:.6f}))*{float(fps)!r}+1e-6)"
    keep = f"select='isnan(prev_selected_t)+gt({tick},{tick.replace('(t-', '(prev_selected_t-')})'"
    w, h = size
    showinfo = FilterLog("showinfo")  # its lines alone carry frame times, not the input's tags
    vf = f"{trim},{keep},{showinfo.name},scale={w}:{h}:flags=area,format=rgb24"
    cmd = [
        FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-copyts", "-loglevel", "level+info",
        "-ss", f"{streams.seek_before(start):.6f}", "-i", file_arg(path),
        "-map", f"0:{streams.video_index}", "-vf", vf, "-an", "-sn", "-fps_mode", "passthrough",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]  # fmt: skip
    stamps: list[float] = []

    def on_line(line: str) -> bool:
        said = showinfo.body(line)
        if said is None:
            return False
        if m := _PTS_TIME.match(said):
            stamps.append(float(m[1]) - streams.video_start)
        return True

    count = 0
    with Pipe(cmd, what=f"cuts of {path}", timeout=timeout, on_line=on_line) as pipe:
        while True:
            chunk = np.empty((CHUNK, h, w, 3), np.uint8)
            n = 0
            while n < CHUNK and pipe.read_into(memoryview(chunk[n]).cast("B")):
                n += 1
            if n:
                take(chunk[:n])
                count += n
            if n < CHUNK:
                break
        pipe.finish()
    if len(stamps) < count:
        raise MediaError(f"cuts of {path}: {count} frames but {len(stamps)} frame times")
    return np.asarray(stamps[:count], dtype=float)


def detect_cuts(
    path, start: float = 0.0, end: float | None = None, *, fps: float = 25.0,
    timeout: float | None = None, **tuning,
) -> list[float]:  # fmt: skip
    """Hard cut times (source seconds: the time of the first frame of the new shot),
    strictly inside (start, end) of the file at `path`. Raises media.MediaError on a file
    ffmpeg cannot read."""
    thumbs, hists = [], []

    def take(chunk: np.ndarray) -> None:
        th, hi = frame_features(chunk)
        thumbs.append(th)
        hists.append(hi)

    times = _decode(path, start, end, fps, SIZE, timeout, take)
    if not thumbs:
        return []
    cuts = cuts_from_features(np.concatenate(thumbs), np.concatenate(hists), times, **tuning)
    return [t for t in cuts if start < t and (end is None or t < end)]


def shot_at(t: float, cuts: Sequence[float], start: float, end: float) -> tuple[float, float]:
    """The shot [a, b) holding time t, bounded by the cuts and by [start, end]."""
    ordered = sorted(c for c in cuts if start < c < end)
    i = bisect.bisect_right(ordered, t)
    a = ordered[i - 1] if i > 0 else start
    b = ordered[i] if i < len(ordered) else end
    return a, b
