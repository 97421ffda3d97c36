"""Motion: drop still pictures, and a still picture slowly panned or zoomed into a "video".

``motion`` is the mean absolute difference of consecutive sampled frames
(grey, small, 0-1 scale): near 0 for a frozen or still clip. A pan or a zoom
over a photo (the Ken Burns effect) moves every pixel, so it passes that test.
So the change between consecutive frames is fitted with one global motion: a
similarity transform without rotation, i.e. a shift (within +-``max_shift`` of
the frame size) and a scale about the frame centre (within 1/``max_zoom`` ..
``max_zoom``); a zoom about any other point is that plus a shift, and the
squeeze of the frame to width x height keeps a scale a scale. Rotation is left
out: editors' Ken Burns moves do not turn the photo, and every freedom added
also explains more of real motion. ``motion_residual`` is the difference left
after the best such transform, and ``pan_explained`` the share of the change
it removes. The transform explains a move over a still almost entirely, while
people, water, or a camera moving through a 3-D scene (parallax) leave most of
the change unexplained.

The fit: the shift-only answer (phase correlation proposes the likeliest
integer shifts, each checked exactly); then, at half size, each of a few
log-spaced scales warps the previous frame and phase correlation proposes its
shift; from the best, Gauss-Newton (Lucas-Kanade) steps at half and full size
refine scale and shift to subpixel accuracy. Warps are bilinear and separable
(no rotation), and only the part of the frame both frames cover is compared.
The lowest residual of all candidates counts, so the model never explains less
than the shift alone. ``max_zoom`` 1.15 a step covers Ken Burns rates (1.1-1.5
per 10 s is about 1.01-1.05 a step; 2x in 3.5 s is 1.15) and leaves out faster
zooms, which an editor does not make of a photo: a fractal zoomed into at about
1.3 a step (the acceptance set's mandelbrot clips) stays mostly unexplained. 8 frames over up to 10 s put a slow zoom's step under a
pixel at the frame edge; so the fit runs on frames smoothed by ``blur`` (which
makes bilinear resampling nearly exact), and ``noise_floor``, the residual that
8-bit rounding and resampling leave even for a perfect fit, is taken off both
the residual and the change before their ratio. About 0.1 s a clip of 8 frames
at 128x128 on one core (bench/motion_model.py).
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
    best = _shifted_diff(a, b, 0, 0)
    for dy, dx in _phase_peaks(a, b, max_dy, max_dx, peaks):
        best = min(best, _shifted_diff(a, b, dy, dx))
    return best


def _warp(
    a: np.ndarray, scale: float, dy: float, dx: float
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """``a`` scaled by ``scale`` about its centre, then shifted by (dy, dx) pixels: the
    frame ``b`` with b[y, x] = a[c + ((y, x) - c - (dy, dx)) / scale], sampled bilinearly.

    The transform has no rotation, so sampling is separable (rows, then columns).
    Returns the warped frame and the rectangle of it that ``a`` covers (elsewhere
    edge pixels are repeated).
    """
    out = a
    valid = []
    for axis, shift in ((0, dy), (1, dx)):
        n = a.shape[axis]
        c = (n - 1) / 2
        src = c + (np.arange(n) - c - shift) / scale
        inside = np.flatnonzero((src >= -1e-6) & (src <= n - 1 + 1e-6))
        valid.append(slice(inside[0], inside[-1] + 1) if len(inside) else slice(0, 0))
        src = np.clip(src, 0, n - 1)
        i0 = np.minimum(src.astype(np.intp), n - 2)
        f = (src - i0).astype(np.float32)
        if axis == 0:
            out = out[i0] * (1 - f)[:, None] + out[i0 + 1] * f[:, None]
        else:
            out = out[:, i0] * (1 - f)[None, :] + out[:, i0 + 1] * f[None, :]
    return out, (valid[0], valid[1])


def _warp_residual(a: np.ndarray, b: np.ndarray, scale: float, dy: float, dx: float) -> float:
    """Mean |b - warped a| over the part of ``b`` that warped ``a`` covers
    (inf when that is under :data:`MIN_OVERLAP` of the frame)."""
    w, (ys, xs) = _warp(a, scale, dy, dx)
    part = np.abs(b[ys, xs] - w[ys, xs])
    return float(part.mean()) if part.size >= MIN_OVERLAP * b.size else float("inf")


MIN_OVERLAP = 0.5  # share of the frame a warped frame must cover to be compared


def _phase_peaks(a: np.ndarray, b: np.ndarray, max_dy: int, max_dx: int, peaks: int):
    """The ``peaks`` likeliest integer shifts (dy, dx) of ``a`` onto ``b`` within the
    bounds, by phase correlation."""
    h, w = a.shape
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    cross = fb * np.conj(fa)
    corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=(h, w))
    dys = (np.arange(h) + h // 2) % h - h // 2  # index -> signed shift
    dxs = (np.arange(w) + w // 2) % w - w // 2
    allowed = (np.abs(dys)[:, None] <= max_dy) & (np.abs(dxs)[None, :] <= max_dx)
    corr = np.where(allowed, corr, -np.inf)
    flat = corr.ravel()
    top = np.argpartition(flat, -peaks)[-peaks:]
    top = top[np.argsort(flat[top])[::-1]]
    return [(int(dys[i // w]), int(dxs[i % w])) for i in top]


def _refine(a, b, scale, dy, dx, iterations: int):
    """Gauss-Newton steps on (log scale, dy, dx) minimising the squared difference of
    warped ``a`` and ``b`` (Lucas-Kanade for a zoom about the centre plus a shift);
    yields each new estimate."""
    h, w = a.shape
    uy = (np.arange(h) - (h - 1) / 2).astype(np.float32)[:, None]
    ux = (np.arange(w) - (w - 1) / 2).astype(np.float32)[None, :]
    for _ in range(iterations):
        warped, (ys, xs) = _warp(a, scale, dy, dx)
        ys = slice(ys.start + 1, ys.stop - 1)  # np.gradient is one-sided at the edges
        xs = slice(xs.start + 1, xs.stop - 1)
        if ys.stop - ys.start < 8 or xs.stop - xs.start < 8:
            return
        gy, gx = np.gradient(warped)
        gy, gx = gy[ys, xs].ravel(), gx[ys, xs].ravel()
        jac = np.stack([gy * np.broadcast_to(uy, (h, w))[ys, xs].ravel()
                        + gx * np.broadcast_to(ux, (h, w))[ys, xs].ravel(), gy, gx], axis=1)  # fmt: skip
        r = (warped[ys, xs] - b[ys, xs]).ravel()
        hess = jac.T @ jac
        hess += np.eye(3) * (1e-6 * np.trace(hess) + 1e-12)
        dsig, ddy, ddx = np.linalg.solve(hess.astype(np.float64), jac.T @ r)
        # The new warp is the old one after the step: W'(u) = W(u - dt - dsig * u).
        k = 1.0 - dsig
        if k <= 0.5:
            return
        scale, dy, dx = scale / k, (dy + ddy) / k, (dx + ddx) / k
        yield scale, dy, dx


def _half(f: np.ndarray) -> np.ndarray:
    """``f`` at half size, 2x2 box averages."""
    h, w = f.shape[0] // 2 * 2, f.shape[1] // 2 * 2
    return f[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def similarity_residual(
    a: np.ndarray,
    b: np.ndarray,
    max_shift: float,
    max_zoom: float,
    zoom_steps: int,
    peaks: int = 2,
    iterations: int = 4,
) -> tuple[float, float]:
    """Smallest frame difference left after scaling ``a`` about its centre and shifting it
    onto ``b``, and the log scale that gives it: (residual, log scale).

    Coarse: at half size, each of ``2 * zoom_steps + 1`` log-spaced scales within
    [1 / max_zoom, max_zoom] proposes its likeliest shifts by phase correlation, each
    checked exactly. Fine: from the best, Gauss-Newton steps at half then full size
    reach subpixel shift and scale. Every estimate within the bounds is checked;
    the best one counts.
    """
    h, w = a.shape
    a2, b2 = _half(a), _half(b)
    lo, hi = 1.0 / max_zoom - 1e-6, max_zoom + 1e-6
    bound_y, bound_x = max_shift * h + 1, max_shift * w + 1  # full-size pixels

    def ok(s, dy, dx):
        return lo <= s <= hi and abs(dy) <= bound_y and abs(dx) <= bound_x

    best = (float("inf"), 1.0, 0.0, 0.0)
    my, mx = int(round(max_shift * a2.shape[0])), int(round(max_shift * a2.shape[1]))
    for s in np.exp(np.linspace(-np.log(max_zoom), np.log(max_zoom), 2 * zoom_steps + 1)):
        warped, _ = _warp(a2, float(s), 0.0, 0.0)
        for dy, dx in _phase_peaks(warped, b2, my, mx, peaks):
            r = _warp_residual(a2, b2, float(s), dy, dx)
            if r < best[0]:
                best = (r, float(s), float(dy), float(dx))
    est = best[1:]
    for s, dy, dx in _refine(a2, b2, *est, iterations):
        if not ok(s, 2 * dy, 2 * dx):
            break
        est = (s, dy, dx)
    est = (est[0], 2 * est[1], 2 * est[2])
    best = (_warp_residual(a, b, *est) if ok(*est) else float("inf"), *est)
    for s, dy, dx in _refine(a, b, *est, iterations):
        if not ok(s, dy, dx):
            break
        r = _warp_residual(a, b, s, dy, dx)
        if r < best[0]:
            best = (r, s, dy, dx)
    return best[0], float(np.log(best[1]))


def _blur(f: np.ndarray, sigma: float) -> np.ndarray:
    """(N, H, W) frames smoothed by a Gaussian of ``sigma`` pixels (edges repeated)."""
    if sigma <= 0:
        return f
    r = int(np.ceil(3 * sigma))
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2)).astype(np.float32)
    k /= k.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        p = np.pad(f, pad, mode="edge")
        n = f.shape[axis]
        f = sum(k[i] * p.take(np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return f


def motion_scores(
    frames: np.ndarray,
    max_shift: float,
    max_zoom: float = 1.0,
    zoom_steps: int = 6,
    blur: float = 0.0,
    noise_floor: float = 0.0,
) -> dict[str, float]:
    """``motion``, ``motion_residual`` (0-1 grey scale), ``pan_explained`` (0-1) and
    ``zoom`` (mean |log scale| a step) of (N, H, W) grey uint8 frames.

    ``motion`` is on the frames as read. The global model is fitted to them smoothed
    by ``blur`` (Gaussian sigma, pixels); ``motion_residual`` is what it leaves, and
    ``pan_explained`` is 1 - (residual - floor) / (change - floor), both on the
    smoothed frames, ``noise_floor`` being the residual no model removes. ``max_zoom``
    1 models a shift only (``zoom`` is then 0); above 1, a shift and a scale within
    [1 / max_zoom, max_zoom] between consecutive frames. Defaults: the shift-only
    model on raw frames, as the filter was before it modelled zooms."""
    f = frames.astype(np.float32) / 255.0
    if len(f) < 2:
        return {"motion": 0.0, "motion_residual": 0.0, "pan_explained": 0.0, "zoom": 0.0}
    _, h, w = f.shape
    max_dx, max_dy = int(round(max_shift * w)), int(round(max_shift * h))
    steps = zip(f[:-1], f[1:], strict=True)
    motion = float(np.mean([_shifted_diff(a, b, 0, 0) for a, b in steps]))
    g = _blur(f, blur)
    pairs = list(zip(g[:-1], g[1:], strict=True))
    change = float(np.mean([_shifted_diff(a, b, 0, 0) for a, b in pairs]))
    residuals, zooms = [], []
    for a, b in pairs:
        r, z = shift_residual(a, b, max_dx, max_dy), 0.0
        if max_zoom > 1.0:
            rs, zs = similarity_residual(a, b, max_shift, max_zoom, zoom_steps)
            if rs < r:
                r, z = rs, zs
        residuals.append(r)
        zooms.append(abs(z))
    residual = float(np.mean(residuals))
    if change > noise_floor:
        explained = 1.0 - max(residual - noise_floor, 0.0) / (change - noise_floor)
    else:
        explained = 0.0
    return {
        "motion": motion,
        "motion_residual": residual,
        "pan_explained": explained,
        "zoom": float(np.mean(zooms)),
    }


class MotionFilter(Filter):
    name = "motion"
    score_names = ("motion", "motion_residual", "pan_explained", "zoom")

    # mean |frame diff|, 0-1 (1 grey level in 255); below -> static (None: no bound)
    min_motion: float | None = 0.004
    # share of the change a global shift explains, 0-1; above -> pan_still (None: no bound)
    max_pan_explained: float | None = 0.8
    frames: int = 8  # frames sampled over the clip
    width: int = 128  # pixels: frames are squeezed to width x height grey for this
    height: int = 128  # pixels
    max_shift: float = 0.15  # largest shift searched, as a fraction of width/height
    # largest scale change searched between sampled frames, ratio (1: shift only)
    max_zoom: float = 1.15
    zoom_steps: int = 6  # scales tried on each side of 1 before refining (log-spaced)
    blur: float = 1.4  # pixels (Gaussian sigma at width x height) smoothing before the fit
    # 0-1 grey: residual no model removes (8-bit rounding, resampling), taken off both sides
    noise_floor: float = 0.001

    def validate(self) -> None:
        if self.frames < 2:
            self.fail("frames", "must be at least 2")
        if not 0.0 <= self.max_shift < 0.5:
            self.fail("max_shift", "must be within [0, 0.5)")
        if not 1.0 <= self.max_zoom <= 2.0:
            self.fail("max_zoom", "must be within [1, 2]")
        if self.zoom_steps < 1:
            self.fail("zoom_steps", "must be at least 1")
        if self.blur < 0 or self.noise_floor < 0:
            self.fail("blur" if self.blur < 0 else "noise_floor", "must be at least 0")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.mp4:
            raise MediaError(f"{record.key}: no mp4")
        frames = read_frames(record.mp4, self.frames, size=(self.width, self.height), grey=True)
        return motion_scores(
            frames, self.max_shift, self.max_zoom, self.zoom_steps, self.blur, self.noise_floor
        )

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if self.min_motion is not None and scores["motion"] < self.min_motion:
            return "static"
        mpe = self.max_pan_explained
        if mpe is not None and scores["pan_explained"] > mpe:
            return "pan_still"
        return None
