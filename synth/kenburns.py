"""Ken Burns moves over a still photo: pans and zooms, as an editor renders them.

A "video" made of one photo slowly zoomed into or panned across is a still
picture to the motion filter (``pan_still``); this module makes such clips,
over a frame of real footage used as a photo (:func:`real_photo`) or a painted
one (:func:`painted_photo`), for the tests and the benches.

Each output frame is the photo's crop rectangle of that instant resampled to
the output size with a tent (bilinear, widened when shrinking) filter at
subpixel positions, so a slow move glides rather than jumping a pixel at a
time (ffmpeg's ``zoompan`` rounds the crop to whole pixels and judders).
Rates are given per 10 s so that one rate describes clips of any length:

- ``zoom_in`` / ``zoom_out``: the zoom factor changes geometrically by
  ``zoom_rate`` per 10 s about the photo's centre (1.1 slow, 1.2-1.5 typical);
- ``pan``: the view travels ``pan_rate`` of its width per 10 s to the right
  (and a third of that, as a share of its height, downwards), zoomed in just
  enough to have the room;
- ``zoom_pan``: both at once;
- ``still``: the photo, frozen.

:func:`write_moving_subject` is the counterpart that must *pass* the filter: a
shape moving across the still photo.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from media.audio import AUDIO_RATE
from miners.frames import frame_at
from synth.encode import encode_frames, tone
from synth.realclips import real_clip

MOVES = ("zoom_in", "zoom_out", "pan", "zoom_pan", "still")


def real_photo(name: str = "bigbuckbunny", t: float = 2.0) -> np.ndarray:
    """The frame at ``t`` seconds of the real clip ``name`` (:mod:`synth.realclips`),
    (H, W, 3) uint8 RGB at the clip's own size, to be used as a photo."""
    return frame_at(real_clip(name).path, t)


def painted_photo(width: int = 960, height: int = 540, seed: int = 0) -> np.ndarray:
    """A generated picture with detail at every scale: smooth colour fields, hard-edged
    discs and bars, and fine grain. (H, W, 3) uint8, deterministic for a ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for _ in range(6):  # smooth colour waves
        fx, fy = rng.uniform(0.5, 4.0, 2) * 2 * np.pi / np.array([width, height])
        img += rng.uniform(-40, 40, 3) * np.sin(fx * x + fy * y + rng.uniform(0, 6.3))[..., None]
    img += 128
    for _ in range(40):  # discs
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.01, 0.08) * width
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    for _ in range(15):  # bars
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.01, 0.2, 2) * np.array([width, height])
        img[(x >= x0) & (x < x0 + w) & (y >= y0) & (y < y0 + h)] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)  # grain
    return np.clip(img, 0, 255).astype(np.uint8)


def view(move: str, t: float, seconds: float, zoom_rate: float, pan_rate: float):
    """(zoom, ox, oy) at ``t``: zoom relative to the largest view of the output's aspect
    that fits the photo, and the view centre's offset from the photo centre as a
    share of that largest view's width and height."""
    u = t / seconds if seconds > 0 else 0.0
    travel = pan_rate * seconds / 10.0  # share of the view's width travelled over the clip
    if move == "still":
        return 1.0, 0.0, 0.0
    if move == "zoom_in":
        return zoom_rate ** (t / 10.0), 0.0, 0.0
    if move == "zoom_out":
        return zoom_rate ** ((seconds - t) / 10.0), 0.0, 0.0
    if move in ("pan", "zoom_pan"):
        z0 = 1.0 + travel  # zoomed in just enough for the view to travel inside the photo
        z = z0 * zoom_rate ** (t / 10.0) if move == "zoom_pan" else z0
        return z, (u - 0.5) * travel / z0, (u - 0.5) * travel / 3 / z0
    raise ValueError(f"unknown move {move!r}; known: {MOVES}")


def _taps(n_out: int, start: float, step: float, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Tent-filter taps resampling a source axis: output pixel i covers source
    [start + i*step, start + (i+1)*step) (pixel edges); (indices, weights), (n_out, K)."""
    radius = max(1.0, step)
    centre = start + (np.arange(n_out) + 0.5) * step - 0.5  # in pixel-centre coordinates
    k = int(math.ceil(2 * radius)) + 1
    idx = np.floor(centre - radius).astype(int)[:, None] + 1 + np.arange(k)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs(idx - centre[:, None]) / radius).astype(np.float32)
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, n_in - 1), w


def render(photo: np.ndarray, zoom: float, ox: float, oy: float, width: int, height: int):
    """The view (zoom, ox, oy) of ``photo`` (see :func:`view`) at ``width`` x ``height``."""
    ph, pw = photo.shape[:2]
    aspect = width / height
    base_w, base_h = (pw, pw / aspect) if pw / ph <= aspect else (ph * aspect, ph)
    vw, vh = base_w / zoom, base_h / zoom
    x0, y0 = pw / 2 + ox * base_w - vw / 2, ph / 2 + oy * base_h - vh / 2
    yi, yw = _taps(height, y0, vh / height, ph)
    xi, xw = _taps(width, x0, vw / width, pw)
    rows = np.arange(yi.min(), yi.max() + 1)
    src = photo[rows].astype(np.float32)
    yi = yi - rows[0]
    cols = np.zeros((len(rows), width, 3), np.float32)
    for k in range(xi.shape[1]):
        cols += xw[None, :, k, None] * src[:, xi[:, k]]
    out = np.zeros((height, width, 3), np.float32)
    for k in range(yi.shape[1]):
        out += yw[:, k, None, None] * cols[yi[:, k]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _shrink(photo: np.ndarray, width: int, height: int) -> float:
    """Photo pixels per output pixel of the largest view (zoom 1)."""
    ph, pw = photo.shape[:2]
    return min(pw / width, ph / height)


def _reduce(photo: np.ndarray, shrink: float) -> np.ndarray:
    """``photo`` box-averaged by the whole factor below ``shrink`` (the least shrink of
    any frame), so that rendering needs few taps; an exact 2x2 box keeps the picture."""
    f = max(1, int(shrink))
    if f == 1:
        return photo
    h, w = photo.shape[0] // f * f, photo.shape[1] // f * f
    boxes = photo[:h, :w].reshape(h // f, f, w // f, f, 3).astype(np.float32).mean(axis=(1, 3))
    return np.clip(boxes + 0.5, 0, 255).astype(np.uint8)


def write_ken_burns(
    path: str | Path,
    photo: np.ndarray,
    *,
    seconds: float,
    move: str,
    fps: float = 25.0,
    width: int = 320,
    height: int = 180,
    tone_hz: float | None = 440.0,
    zoom_rate: float = 1.3,  # zoom factor gained (or lost) per 10 s
    pan_rate: float = 0.1,  # share of the view's width travelled per 10 s
) -> Path:
    """Encode ``move`` (one of :data:`MOVES`) over ``photo`` to an H.264 mp4 with a
    sine tone of ``tone_hz`` (None: no audio)."""
    if move not in MOVES:
        raise ValueError(f"unknown move {move!r}; known: {MOVES}")
    n = int(round(seconds * fps))
    views = [view(move, i / fps, seconds, zoom_rate, pan_rate) for i in range(n)]
    photo = _reduce(photo, _shrink(photo, width, height) / max(z for z, _, _ in views))
    frames = (render(photo, *v, width, height) for v in views)
    sound = [] if tone_hz is None else tone(tone_hz, seconds=seconds, sample_rate=AUDIO_RATE)
    return encode_frames(path, frames, fps=fps, width=width, height=height, audio=sound, crf=18)


def write_moving_subject(
    path: str | Path,
    photo: np.ndarray,
    *,
    seconds: float,
    fps: float = 25.0,
    width: int = 320,
    height: int = 180,
    tone_hz: float | None = 440.0,
    radius: float = 0.15,  # the subject's radius, share of the frame height
    speed: float = 0.2,  # share of the frame width crossed per second
) -> Path:
    """A still ``photo`` (its whole view) with a bright disc crossing it left to right,
    bobbing up and down: a moving subject over a still background."""
    background = render(_reduce(photo, _shrink(photo, width, height)), 1.0, 0.0, 0.0, width, height)
    background = background.astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = radius * height

    def frame(t: float) -> np.ndarray:
        cx = (0.1 + speed * t) % 1.0 * width
        cy = height * (0.5 + 0.25 * math.sin(2 * math.pi * t / 2.0))
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        alpha = np.clip(r - d + 0.5, 0, 1)[..., None]  # antialiased edge
        shade = 255 * (0.6 + 0.4 * np.cos(d / r * np.pi / 2))[..., None] * np.array([1, 0.8, 0.3])
        return np.clip(background * (1 - alpha) + shade * alpha + 0.5, 0, 255).astype(np.uint8)

    n = int(round(seconds * fps))
    sound = [] if tone_hz is None else tone(tone_hz, seconds=seconds, sample_rate=AUDIO_RATE)
    frames = (frame(i / fps) for i in range(n))
    return encode_frames(path, frames, fps=fps, width=width, height=height, audio=sound, crf=18)
