"""Motion: drop still pictures, and a still picture slowly panned or zoomed into a "video".

``motion`` is the mean absolute difference of consecutive sampled frames
(grey, small, 0-1 scale): near 0 for a frozen or still clip. A pan over a
photo moves every pixel, so it passes that test; ``motion_residual`` is the
same difference after the best global shift of the previous frame (searched
over +-``max_shift`` of the frame size), and ``pan_explained`` the share of
``motion`` that shift removes. A translation explains a pan over a still almost
entirely (sub-pixel steps and compression leave a little), while people, water,
or a camera moving through a 3-D scene leave most of the change unexplained.
"""

from __future__ import annotations

import numpy as np

from filters.base import Filter, FilterContext
from media import MediaError
from media.video import read_frames
from shards.record import ClipRecord


def _shifted_diff(a: np.ndarray, b: np.ndarray, dy: int, dx: int) -> float:
    """Mean |b[y, x] - a[y - dy, x - dx]| over the part where both frames overlap."""
    h, w = a.shape
    ya, yb = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    xa, xb = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    return float(np.abs(b[yb, xb] - a[ya, xa]).mean())


def shift_residual(a: np.ndarray, b: np.ndarray, max_dx: int, max_dy: int, peaks: int = 4) -> float:
    """Smallest frame difference left after shifting ``a`` onto ``b``.

    Phase correlation proposes the few likeliest global shifts within the
    bounds (one FFT per pair instead of trying every shift); each is checked
    exactly, with no shift as the fallback.
    """
    h, w = a.shape
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    cross = fb * np.conj(fa)
    corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=(h, w))
    dys = (np.arange(h) + h // 2) % h - h // 2  # index -> signed shift
    dxs = (np.arange(w) + w // 2) % w - w // 2
    allowed = (np.abs(dys)[:, None] <= max_dy) & (np.abs(dxs)[None, :] <= max_dx)
    corr = np.where(allowed, corr, -np.inf)
    best = _shifted_diff(a, b, 0, 0)
    for i in np.argsort(corr, axis=None)[::-1][:peaks]:
        dy, dx = int(dys[i // w]), int(dxs[i % w])
        best = min(best, _shifted_diff(a, b, dy, dx))
    return best


def motion_scores(frames: np.ndarray, max_shift: float) -> dict[str, float]:
    """``motion``, ``motion_residual`` (0-1 grey scale) and ``pan_explained`` (0-1)
    of (N, H, W) grey uint8 frames."""
    f = frames.astype(np.float32) / 255.0
    if len(f) < 2:
        return {"motion": 0.0, "motion_residual": 0.0, "pan_explained": 0.0}
    _, h, w = f.shape
    max_dx, max_dy = int(round(max_shift * w)), int(round(max_shift * h))
    pairs = list(zip(f[:-1], f[1:], strict=True))
    motion = float(np.mean([_shifted_diff(a, b, 0, 0) for a, b in pairs]))
    residual = float(np.mean([shift_residual(a, b, max_dx, max_dy) for a, b in pairs]))
    explained = 1.0 - residual / motion if motion > 0 else 0.0
    return {"motion": motion, "motion_residual": residual, "pan_explained": explained}


class MotionFilter(Filter):
    name = "motion"
    score_names = ("motion", "motion_residual", "pan_explained")

    # mean |frame diff|, 0-1 (1 grey level in 255); below -> static (None: no bound)
    min_motion: float | None = 0.004
    # share of the change a global shift explains, 0-1; above -> pan_still (None: no bound)
    max_pan_explained: float | None = 0.8
    frames: int = 8  # frames sampled over the clip
    width: int = 128  # pixels: frames are squeezed to width x height grey for this
    height: int = 128  # pixels
    max_shift: float = 0.15  # largest shift searched, as a fraction of width/height

    def validate(self) -> None:
        if self.frames < 2:
            self.fail("frames", "must be at least 2")
        if not 0.0 <= self.max_shift < 0.5:
            self.fail("max_shift", "must be within [0, 0.5)")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.mp4:
            raise MediaError(f"{record.key}: no mp4")
        frames = read_frames(record.mp4, self.frames, size=(self.width, self.height), grey=True)
        return motion_scores(frames, self.max_shift)

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if self.min_motion is not None and scores["motion"] < self.min_motion:
            return "static"
        mpe = self.max_pan_explained
        if mpe is not None and scores["pan_explained"] > mpe:
            return "pan_still"
        return None
