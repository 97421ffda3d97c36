"""Pictures of the planted set: scenes drawn from shape layouts, and what a camera sees of them.

Each picture is a *scene*: a few large shapes on a coloured background, drawn
wider than the seed so a 16:9 camera window can pan and zoom over it without
black borders. The seed JPEG is the scene's centre; the centre square of the
frame (what the embedder sees after its shorter-side scale and centre crop) is
that same square, zoomed by at most ``Z_MAX`` and panned by at most ``PAN_X``, ``PAN_Y``.
Pictures are drawn by rejection against :class:`~miners.embedders.PixelEmbedder`,
so the margins below hold for it by construction (a CLIP model sees the same
layouts, but nothing is promised).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from miners.embedders import PixelEmbedder

# Camera motion over a planted or distractor picture, relative to the seed's side S.
Z_MIN, Z_MAX = 0.95, 1.15  # zoom: the embedder's square is S / z
PAN_X, PAN_Y = 0.08, 0.05  # the window centre moves at most this * S from the picture centre

# Rejection bounds under PixelEmbedder (cosine of unit vectors).
VIEW_MIN_COS = 0.8  # a picture under any allowed camera view vs. its own seed
SEPARATION_MAX_COS = 0.35  # any view of one picture vs. another seed (seeds and distractors)

SCENE_SIDE = 256  # S, the seed's square in scene pixels
CHECK_SCALE = 0.25  # candidates are checked on a quarter-size drawing: 10x faster, same 8x8 layout
BLUR = 8.0  # soft edges (px at S = 256): an edge crossing an 8x8 cell moves the vector less
MAX_TRIES = 20000

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (130, 50, 170),
    "pink": (245, 150, 190),
    "cyan": (40, 200, 210),
    "brown": (120, 70, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
}
# A colourless background adds nothing after PixelEmbedder's mean removal, so the
# shapes' layout decides; coloured ones all share a 2-D chroma plane and correlate.
NEUTRAL = ("white", "black", "grey")
NEUTRAL_BACKGROUND_P = 0.6
_COUNT_WORDS = {2: "two", 3: "three"}
_PLACES = [
    "at the top left", "at the top", "at the top right",
    "on the left", "in the centre", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
]  # fmt: skip


@dataclass
class Layout:
    """What a picture shows, in units of S around the scene centre, and its caption."""

    background: str
    # (kind, colour, *geometry); kind is circle, square, triangle, hstripe or vstripe
    shapes: list[tuple]
    caption: str


@dataclass
class Picture:
    """A drawn scene, its caption, and PixelEmbedder vectors of its camera views."""

    scene: Image.Image
    caption: str
    views: np.ndarray  # (n_views, dim); row 0 is the seed's own (centre, unzoomed) view


def scene_size(width: int, height: int) -> tuple[int, int]:
    """Scene pixels needed so any allowed camera window of the frame's aspect stays inside."""
    aspect = width / height
    reach_w = SCENE_SIDE * (max(aspect, 4 / 3) / Z_MIN + 2 * PAN_X)  # 4/3: landscape seeds
    reach_h = SCENE_SIDE * (max(1 / aspect, 1.0) / Z_MIN + 2 * PAN_Y)
    return math.ceil(reach_w) + 8, math.ceil(reach_h) + 8


def sample_layout(rng: random.Random) -> Layout:
    """Two or three groups of large shapes in the central square, and the caption that says so.

    Shapes are large (a fifth of S or more) so the 8x8 layout survives a 15%
    zoom; single shapes sit in distinct cells of a 3x3 grid, so they are rarely
    hidden and their place can be named in the caption.
    """
    names = list(COLOURS)
    if rng.random() < NEUTRAL_BACKGROUND_P:
        background = rng.choice(NEUTRAL)
    else:
        background = rng.choice([c for c in names if c not in NEUTRAL])
    cells = rng.sample(range(9), 9)
    kinds = rng.sample(["circle", "square", "triangle", "stripes", "circles"], rng.randint(2, 3))
    kinds.sort(key=lambda k: k != "stripes")  # stripes are drawn first, behind the rest
    shapes, phrases = [], []
    used = {background}
    for kind in kinds:
        # One colour per group, so the caption names each group unambiguously.
        colour = rng.choice([c for c in names if c not in used])
        used.add(colour)
        if kind == "stripes":
            count, vertical = rng.randint(1, 2), rng.random() < 0.5
            width = rng.uniform(0.2, 0.28)
            for slot in rng.sample(range(3), count):
                shapes.append(("vstripe" if vertical else "hstripe", colour, (slot - 1) / 3, width))
            noun = "vertical stripe" if vertical else "horizontal stripe"
            phrases.append(f"{_count(count, colour)} {colour} {noun}{'s' if count > 1 else ''}")
            continue
        count = 2 if kind == "circles" else 1
        for _ in range(count):
            cell = cells.pop()
            cx = (cell % 3 - 1) / 3 + rng.uniform(-0.04, 0.04)
            cy = (cell // 3 - 1) / 3 + rng.uniform(-0.04, 0.04)
            shapes.append((kind.rstrip("s"), colour, cx, cy, rng.uniform(0.2, 0.28)))
        phrases.append(
            f"{_count(1, colour)} {colour} {kind} {_PLACES[cell]}"
            if count == 1
            else f"two {colour} circles"
        )
    listed = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return Layout(background, shapes, f"{listed} on a {background} background")


def _count(n: int, word: str) -> str:
    """'a', 'an', 'two' or 'three' before ``word``."""
    return ("an" if word[0] in "aeiou" else "a") if n == 1 else _COUNT_WORDS[n]


def render(layout: Layout, size: tuple[int, int], scale: float = 1.0) -> Image.Image:
    """Draw ``layout`` on a scene of ``size`` (full-scale pixels), at ``scale``."""
    w, h = round(size[0] * scale), round(size[1] * scale)
    s = SCENE_SIDE * scale
    ox, oy = w / 2, h / 2
    image = Image.new("RGB", (w, h), COLOURS[layout.background])
    draw = ImageDraw.Draw(image)
    for kind, colour, *g in layout.shapes:
        fill = COLOURS[colour]
        if kind in ("vstripe", "hstripe"):
            c, half = g[0] * s, g[1] * s / 2
            if kind == "vstripe":
                draw.rectangle([ox + c - half, 0, ox + c + half, h], fill=fill)
            else:
                draw.rectangle([0, oy + c - half, w, oy + c + half], fill=fill)
            continue
        cx, cy, r = ox + g[0] * s, oy + g[1] * s, g[2] * s
        if kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif kind == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(
                [(cx, cy - 1.1 * r), (cx - 1.2 * r, cy + r), (cx + 1.2 * r, cy + r)], fill=fill
            )
    return image.filter(ImageFilter.GaussianBlur(BLUR * scale))


def camera_box(
    size: tuple[int, int],
    aspect: float,
    z: float,
    px: float,
    py: float,
    *,
    square: bool,
    scale: float = 1.0,
) -> tuple[float, float, float, float]:
    """The scene box a camera at zoom ``z`` and pan (px, py) sees: the whole frame, or its centre square."""
    side = SCENE_SIDE * scale
    s = side / z
    half_w = s / 2 if square else s * max(aspect, 1.0) / 2
    half_h = s / 2 if square else s * max(1 / aspect, 1.0) / 2
    cx = size[0] / 2 + px * side
    cy = size[1] / 2 + py * side
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def _view_params() -> list[tuple[float, float, float]]:
    """The seed's own view first, then the extremes of the allowed camera motion."""
    views = [(1.0, 0.0, 0.0), (Z_MIN, 0.0, 0.0), (Z_MAX, 0.0, 0.0)]
    for z in (Z_MIN, Z_MAX):
        for px in (-PAN_X, PAN_X):
            for py in (-PAN_Y, PAN_Y):
                views.append((z, px, py))
    return views


def embed_views(
    scene: Image.Image, embedder: PixelEmbedder, aspect: float, scale: float
) -> np.ndarray:
    """What the embedder sees of ``scene`` (drawn at ``scale``) from the seed's view and the camera's extremes."""
    n = embedder.image_size
    views = []
    for v in _view_params():
        box = camera_box(scene.size, aspect, *v, square=True, scale=scale)
        views.append(np.asarray(scene.resize((n, n), Image.Resampling.BILINEAR, box=box)))
    return embedder.embed_images(np.stack(views))


def pick_pictures(
    rng: random.Random,
    n: int,
    embedder: PixelEmbedder,
    size: tuple[int, int],
    aspect: float,
    avoid: list[Picture] | None = None,
) -> list[Picture]:
    """Draw ``n`` pictures, each stable under camera motion and far from every other and from ``avoid``."""
    avoid = avoid or []
    chosen: list[Picture] = []
    captions = {p.caption for p in avoid}
    for _ in range(MAX_TRIES):
        if len(chosen) == n:
            return chosen
        layout = sample_layout(rng)
        if layout.caption in captions:
            continue
        views = embed_views(render(layout, size, CHECK_SCALE), embedder, aspect, CHECK_SCALE)
        if float((views @ views[0]).min()) < VIEW_MIN_COS:
            continue
        if any(cross_cos(views, p.views) >= SEPARATION_MAX_COS for p in [*avoid, *chosen]):
            continue
        scene = render(layout, size)
        chosen.append(Picture(scene, layout.caption, embed_views(scene, embedder, aspect, 1.0)))
        captions.add(layout.caption)
    raise RuntimeError(
        f"could draw only {len(chosen)} of {n} distinct pictures in {MAX_TRIES} tries"
    )


def cross_cos(a: np.ndarray, b: np.ndarray) -> float:
    """Worst confusion of two pictures: any view of one against the other's seed view."""
    return float(max((a @ b[0]).max(), (b @ a[0]).max()))


def save_seed(picture: Picture, path: Path, landscape: bool) -> None:
    """The seed is the scene's centre: 256x256, or 4:3 (320x240) around the same square."""
    s = SCENE_SIDE
    w = s * 4 / 3 if landscape else s
    cx, cy = picture.scene.size[0] / 2, picture.scene.size[1] / 2
    out = (320, 240) if landscape else (s, s)
    box = (cx - w / 2, cy - s / 2, cx + w / 2, cy + s / 2)
    picture.scene.resize(out, Image.Resampling.BICUBIC, box=box).save(path, quality=92)
