"""A small synthetic mining set with its ground truth, for ``make demo`` and acceptance tests.

``make_synthetic_set(root)`` writes captioned seed pictures, videos in which
some of them are *planted* (shown for a known interval, with camera motion and
noise), filler and distractor footage that must match nothing, and a few
broken inputs; ``root/manifest.json`` says which (seed, video, interval) a run
should find. ``python -m synth /tmp/synth`` writes one; mine
``/tmp/synth/seeds`` against ``/tmp/synth/videos.txt`` with the embedder
``miners.embedders:pixel_embedder`` and compare the clips with the manifest.

Each picture is a *scene*: a few large shapes on a coloured background, drawn
wider than the seed so a 16:9 camera window can pan and zoom over it without
black borders. The seed JPEG is the scene's centre; the centre square of the
frame (what the embedder sees after its shorter-side scale and centre crop) is
that same square, zoomed by at most ``Z_MAX`` and panned by at most ``PAN_X``, ``PAN_Y``.
Pictures, distractors and filler are drawn by rejection against
:class:`~miners.embedders.PixelEmbedder`, so the margins below hold for it by
construction (a CLIP model sees the same layouts, but nothing is promised).

This module is library code: it does not import prefect.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from miners.embedders import PixelEmbedder

log = logging.getLogger(__name__)

# Camera motion over a planted or distractor picture, relative to the seed's side S.
Z_MIN, Z_MAX = 0.95, 1.15  # zoom: the embedder's square is S / z
PAN_X, PAN_Y = 0.08, 0.05  # the window centre moves at most this * S from the picture centre

# Rejection bounds under PixelEmbedder (cosine of unit vectors).
VIEW_MIN_COS = 0.8  # a picture under any allowed camera view vs. its own seed
SEPARATION_MAX_COS = 0.35  # any view of one picture vs. another seed (seeds and distractors)
FILLER_MAX_COS = 0.3  # a filler frame vs. any seed

SCENE_SIDE = 256  # S, the seed's square in scene pixels
CHECK_SCALE = 0.25  # candidates are checked on a quarter-size drawing: 10x faster, same 8x8 layout
BLUR = 8.0  # soft edges (px at S = 256): an edge crossing an 8x8 cell moves the vector less
NOISE_SIGMA = 4.0  # mild per-pixel sensor noise, grey levels
PLANT_SECONDS = (5.0, 10.0)  # how long a planted seed is shown
GAP_SECONDS = 2.0  # least distance of a plant from the video ends and from another plant
MAX_PLANTS_PER_VIDEO = 3
SILENT_FRACTION = 0.25  # share of videos written without an audio track
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


@dataclass
class Segment:
    """One stretch of a video's timeline, [start, end) in seconds."""

    kind: str  # "seed", "distractor" or "filler"
    start: float
    end: float
    ref: str = ""  # seed id or distractor id
    camera: tuple[float, ...] = ()  # (z0, px0, py0, z1, px1, py1)


@dataclass
class VideoPlan:
    name: str
    segments: list[Segment] = field(default_factory=list)
    tone_hz: float | None = None


# ---------------------------------------------------------------- pictures


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
        if any(_cross(views, p.views) >= SEPARATION_MAX_COS for p in [*avoid, *chosen]):
            continue
        scene = render(layout, size)
        chosen.append(Picture(scene, layout.caption, embed_views(scene, embedder, aspect, 1.0)))
        captions.add(layout.caption)
    raise RuntimeError(
        f"could draw only {len(chosen)} of {n} distinct pictures in {MAX_TRIES} tries"
    )


def _cross(a: np.ndarray, b: np.ndarray) -> float:
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


# ---------------------------------------------------------------- filler


def filler_texture(np_rng: np.random.Generator, width: int, height: int, margin: int) -> np.ndarray:
    """Coloured blob noise around mid grey, ``margin`` pixels larger than the frame on each side.

    Blobs are about 12 px, small against an 8x8 layout cell, and their colours
    average to grey, so a filler frame has no large colour layout to match.
    """
    w, h = width + 2 * margin, height + 2 * margin
    low = np_rng.normal(128.0, 55.0, size=(h // 12 + 2, w // 12 + 2, 3))
    small = Image.fromarray(np.clip(low, 0, 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def pick_filler(
    np_rng: np.random.Generator,
    width: int,
    height: int,
    margin: int,
    embedder: PixelEmbedder,
    seeds: np.ndarray,
) -> tuple[np.ndarray, float]:
    """A filler texture whose frames along its drift match no seed, and their worst cosine to one."""
    for _ in range(100):
        tex = filler_texture(np_rng, width, height, margin)
        frames = [tex[o : o + height, o : o + width] for o in _drift_offsets(margin)]
        score = float((embed_frames(frames, embedder) @ seeds.T).max())
        if score < FILLER_MAX_COS:
            return tex, score
    raise RuntimeError("no filler texture far enough from the seeds")


def _drift_offsets(margin: int) -> list[int]:
    """Where a filler's drift is checked: its ends and three points between."""
    return [round(2 * margin * k / 4) for k in range(5)]


def embed_frames(frames: list[np.ndarray], embedder: PixelEmbedder) -> np.ndarray:
    """Frames through the pipeline's preprocessing (shorter side, centre crop) into the embedder."""
    n = embedder.image_size
    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        w, h = image.size
        k = min(w, h)
        box = ((w - k) / 2, (h - k) / 2, (w + k) / 2, (h + k) / 2)
        out.append(np.asarray(image.resize((n, n), Image.Resampling.BILINEAR, box=box)))
    return embedder.embed_images(np.stack(out))


# ---------------------------------------------------------------- timelines


def assign_plants(
    rng: random.Random, planted: list[str], n_videos: int, cap: int
) -> list[list[str]]:
    """Which planted seeds go into which video: every one at least once, about a quarter twice.

    A seed appears at most once in a video, each video gets 1..cap of them.
    """
    cap = min(cap, len(planted))
    if len(planted) > cap * n_videos:
        raise ValueError(
            f"{len(planted)} planted seeds do not fit {n_videos} videos of {cap} plants"
        )
    total = min(cap * n_videos, max(n_videos, len(planted) + math.ceil(len(planted) / 4)))
    for _ in range(100):
        order = rng.sample(planted, len(planted))
        extra = [order[i % len(order)] for i in range(total - len(planted))]
        counts = [1] * n_videos
        while sum(counts) < total:
            counts[rng.choice([v for v in range(n_videos) if counts[v] < cap])] += 1
        videos: list[list[str]] = [[] for _ in range(n_videos)]
        ok = True
        for sid in order + extra:  # most constrained first: seeds placed once fill any video
            free = [
                v for v in range(n_videos) if len(videos[v]) < counts[v] and sid not in videos[v]
            ]
            if not free:
                ok = False
                break
            best = max(counts[v] - len(videos[v]) for v in free)
            videos[rng.choice([v for v in free if counts[v] - len(videos[v]) == best])].append(sid)
        if ok:
            return videos
    raise RuntimeError("could not spread the planted seeds over the videos")


def plan_timeline(
    rng: random.Random, plants: list[str], distractors: list[str], seconds: float
) -> list[Segment]:
    """Planted intervals with gaps of filler (and now and then a distractor) around them.

    Times are in half seconds, so interval ends fall on frames at any common fps.
    """
    units = int(seconds * 2)
    gap = int(GAP_SECONDS * 2)
    lo, hi = (int(x * 2) for x in PLANT_SECONDS)
    durations = [rng.randint(lo, hi) for _ in plants]
    while sum(durations) + gap * (len(plants) + 1) > units:
        i = max(range(len(durations)), key=durations.__getitem__)
        if durations[i] <= lo:
            raise ValueError(f"{len(plants)} plants do not fit a {seconds} s video")
        durations[i] -= 1
    spare = units - sum(durations) - gap * (len(plants) + 1)
    cuts = sorted(rng.randint(0, spare) for _ in plants)
    extras = [b - a for a, b in zip([0, *cuts], [*cuts, spare], strict=True)]
    segments: list[Segment] = []
    t = 0
    for i, sid in enumerate([*plants, None]):
        g = gap + extras[i]
        if sid is None:
            g = units - t
        segments += _fill_gap(rng, t, t + g, distractors)
        t += g
        if sid is not None:
            cam = _camera_path(rng)
            segments.append(Segment("seed", t / 2, (t + durations[i]) / 2, sid, cam))
            t += durations[i]
    segments[-1].end = max(segments[-1].end, seconds)
    return segments


def _fill_gap(rng: random.Random, a: int, b: int, distractors: list[str]) -> list[Segment]:
    """Filler over [a, b) half seconds, with a 3-6 s distractor inside when the gap is long enough."""
    if b - a >= 10 and distractors and rng.random() < 0.8:
        length = rng.randint(6, min(12, b - a - 4))
        start = rng.randint(a + 2, b - 2 - length)
        return [
            Segment("filler", a / 2, start / 2),
            Segment(
                "distractor",
                start / 2,
                (start + length) / 2,
                rng.choice(distractors),
                _camera_path(rng),
            ),
            Segment("filler", (start + length) / 2, b / 2),
        ]
    return [Segment("filler", a / 2, b / 2)] if b > a else []


def _camera_path(rng: random.Random) -> tuple[float, ...]:
    """Start and end (zoom, pan x, pan y): a slow pan, a slow zoom, or both."""
    mode = rng.choice(["pan", "zoom", "both"])
    ends = []
    for _ in range(2):
        z = rng.uniform(Z_MIN, Z_MAX) if mode != "pan" else 1.0
        px = rng.uniform(-PAN_X, PAN_X) if mode != "zoom" else 0.0
        py = rng.uniform(-PAN_Y, PAN_Y) if mode != "zoom" else 0.0
        ends += [z, px, py]
    return tuple(ends)


# ---------------------------------------------------------------- rendering and encoding


def render_frames(
    plan: VideoPlan,
    pictures: dict[str, Picture],
    fillers: list[np.ndarray],
    noise: np.ndarray,
    *,
    seconds: float,
    fps: float,
    width: int,
    height: int,
    margin: int,
) -> Iterator[np.ndarray]:
    """The video's frames in order: camera windows over pictures, drifting filler, plus sensor noise."""
    aspect = width / height
    filler_i = 0
    n = int(round(seconds * fps))
    seg_i = 0
    for i in range(n):
        t = i / fps
        while seg_i + 1 < len(plan.segments) and t >= plan.segments[seg_i].end:
            seg_i += 1
            filler_i += plan.segments[seg_i - 1].kind == "filler"
        seg = plan.segments[seg_i]
        u = (t - seg.start) / max(seg.end - seg.start, 1e-6)
        if seg.kind == "filler":
            tex = fillers[filler_i % len(fillers)]
            o = int(round(2 * margin * u))  # drifts diagonally across the texture
            frame = tex[o : o + height, o : o + width].astype(np.int16)
            frame += int(12 * math.sin(2 * math.pi * t / 7))  # a slow brightness pulse
        else:
            e = u * u * (3 - 2 * u)  # ease in and out, as a camera operator would
            z0, px0, py0, z1, px1, py1 = seg.camera
            z, px, py = z0 + (z1 - z0) * e, px0 + (px1 - px0) * e, py0 + (py1 - py0) * e
            scene = pictures[seg.ref].scene
            box = camera_box(scene.size, aspect, z, px, py, square=False)
            frame = np.asarray(
                scene.resize((width, height), Image.Resampling.BILINEAR, box=box), dtype=np.int16
            )
        yield np.clip(frame + noise[i % len(noise)], 0, 255).astype(np.uint8)


def encode_video(
    path: Path,
    frames: Iterator[np.ndarray],
    *,
    fps: float,
    width: int,
    height: int,
    seconds: float,
    tone_hz: float | None,
    sample_rate: int = 44100,
) -> None:
    """Pipe raw RGB frames into ffmpeg: H.264 (ultrafast, yuv420p) and, given a tone, AAC audio."""
    cmd = [
        "ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
    ]  # fmt: skip
    if tone_hz is not None:
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate={sample_rate}:duration={seconds}",
        ]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-crf", "26"]
    if tone_hz is not None:
        cmd += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    cmd.append(str(path))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        for frame in frames:
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg died; its stderr below says why
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()}")


# ---------------------------------------------------------------- the set


def make_synthetic_set(
    root: Path,
    *,
    n_seeds: int = 16,
    n_unplanted: int = 4,
    n_videos: int = 8,
    seconds: float = 40.0,
    fps: float = 10.0,
    width: int = 320,
    height: int = 180,
    broken: bool = True,
    seed: int = 0,
) -> dict:
    """Write seeds, videos, ``videos.txt`` and ``manifest.json`` under ``root``; return the manifest.

    The last ``n_unplanted`` seeds are never shown in any video; every other
    seed is planted in at least one video at a known [start, end) interval.
    ``broken`` adds a truncated, an empty and a missing video and an
    undecodable seed, each of which a run should report as a row, not crash on.
    Deterministic for a given ``seed`` (and the same ffmpeg).

    The manifest holds ``seeds`` (id -> caption, broken ones too), ``planted``
    (seed_id, video as listed in ``videos.txt``, start, end), ``unplanted``,
    ``broken_videos``, ``broken_seeds`` and ``params``; beyond those, ``videos``
    gives every good video's whole timeline (filler, distractors, plants) and
    ``checks`` the PixelEmbedder cosines the drawing was held to.
    """
    params = dict(
        n_seeds=n_seeds, n_unplanted=n_unplanted, n_videos=n_videos, seconds=seconds,
        fps=fps, width=width, height=height, broken=broken, seed=seed,
    )  # fmt: skip
    _check_params(**params)
    t0 = time.perf_counter()
    root = Path(root).resolve()
    seeds_dir, videos_dir = _prepare_root(root)
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    embedder = PixelEmbedder()
    size, aspect = scene_size(width, height), width / height

    digits = max(2, len(str(n_seeds - 1)))
    seed_ids = [f"seed_{i:0{digits}d}" for i in range(n_seeds)]
    n_planted = n_seeds - n_unplanted
    planted_ids, unplanted_ids = seed_ids[:n_planted], seed_ids[n_planted:]
    seeds = dict(zip(seed_ids, pick_pictures(rng, n_seeds, embedder, size, aspect), strict=True))
    distractors = pick_pictures(rng, max(3, n_videos), embedder, size, aspect, list(seeds.values()))
    distractor_pics = {f"distractor_{i:02d}": p for i, p in enumerate(distractors)}
    captions = {}
    for sid, pic in seeds.items():
        save_seed(pic, seeds_dir / f"{sid}.jpg", landscape=rng.random() < 0.5)
        (seeds_dir / f"{sid}.txt").write_text(pic.caption + "\n")
        captions[sid] = pic.caption

    plans = plan_videos(rng, planted_ids, list(distractor_pics), n_videos=n_videos, seconds=seconds)
    seed_matrix = np.stack([p.views[0] for p in seeds.values()])
    geometry = dict(seconds=seconds, fps=fps, width=width, height=height)
    video_rows, filler_max = write_videos(
        videos_dir, plans, {**seeds, **distractor_pics}, np_rng, embedder, seed_matrix, **geometry
    )
    videos = [row["video"] for row in video_rows]
    broken_videos, broken_seeds = [], []
    if broken:
        broken_videos = _write_broken(
            root, rng, np_rng, embedder, seed_matrix, fps=fps, width=width, height=height
        )
        broken_seeds = ["zz_broken"]
        captions["zz_broken"] = (seeds_dir / "zz_broken.txt").read_text().strip()
        for i, p in enumerate(broken_videos):  # among the good ones: a run must carry on past each
            videos.insert(min(len(videos), 1 + i * (len(videos) // 2 + 1)), p)
    (root / "videos.txt").write_text("".join(p + "\n" for p in videos))

    cross = seed_matrix @ seed_matrix.T
    np.fill_diagonal(cross, -1.0)
    manifest = {
        "seeds": captions,
        "planted": [
            {"seed_id": s["ref"], "video": row["video"], "start": s["start"], "end": s["end"]}
            for row in video_rows for s in row["segments"] if s["kind"] == "seed"
        ],
        "unplanted": unplanted_ids,
        "broken_videos": broken_videos,
        "broken_seeds": broken_seeds,
        "params": params,
        "videos": video_rows,
        "checks": {  # PixelEmbedder cosines as drawn, before JPEG and H.264
            "seed_max_cross": round(float(cross.max()), 4),
            "view_min": round(min(float((p.views @ p.views[0]).min()) for p in seeds.values()), 4),
            "distractor_max": round(max(_cross(d.views, s.views) for d in distractors
                                        for s in seeds.values()), 4),
            "filler_max": round(filler_max, 4),
        },
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("synthetic set in %s: %.1f s", root, time.perf_counter() - t0)
    return manifest


def plan_videos(
    rng: random.Random,
    planted_ids: list[str],
    distractor_ids: list[str],
    *,
    n_videos: int,
    seconds: float,
) -> list[VideoPlan]:
    """Every video's timeline and tone; about a quarter of the videos stay silent."""
    assignment = assign_plants(rng, planted_ids, n_videos, _plants_per_video(seconds))
    silent = set(
        rng.sample(range(n_videos), round(n_videos * SILENT_FRACTION) if n_videos > 1 else 0)
    )
    return [
        VideoPlan(
            f"video_{v:02d}",
            plan_timeline(
                rng, rng.sample(assignment[v], len(assignment[v])), distractor_ids, seconds
            ),
            None if v in silent else float(330 + 110 * v),  # the tone names the video
        )
        for v in range(n_videos)
    ]


def write_videos(
    videos_dir: Path,
    plans: list[VideoPlan],
    pictures: dict[str, Picture],
    np_rng: np.random.Generator,
    embedder: PixelEmbedder,
    seed_matrix: np.ndarray,
    *,
    seconds: float,
    fps: float,
    width: int,
    height: int,
) -> tuple[list[dict], float]:
    """Encode every planned video; its manifest rows, and the filler's worst cosine to a seed."""
    margin = max(8, int(4 * seconds))  # filler drift room, px: about 4 px/s over a whole video
    noise = np_rng.normal(0.0, NOISE_SIGMA, size=(8, height, width, 3)).astype(np.int16)
    rows, filler_max = [], -1.0
    for plan in plans:
        fillers = []
        for _ in range(sum(s.kind == "filler" for s in plan.segments)):
            tex, score = pick_filler(np_rng, width, height, margin, embedder, seed_matrix)
            fillers.append(tex)
            filler_max = max(filler_max, score)
        path = videos_dir / f"{plan.name}.mp4"
        frames = render_frames(
            plan,
            pictures,
            fillers,
            noise,
            seconds=seconds,
            fps=fps,
            width=width,
            height=height,
            margin=margin,
        )
        encode_video(
            path, frames, fps=fps, width=width, height=height, seconds=seconds, tone_hz=plan.tone_hz
        )
        rows.append({
            "video": str(path), "seconds": seconds, "audio": plan.tone_hz is not None, "tone_hz": plan.tone_hz,
            "segments": [{"kind": s.kind, "ref": s.ref, "start": s.start, "end": s.end} for s in plan.segments],
        })  # fmt: skip
    return rows, filler_max


def _plants_per_video(seconds: float) -> int:
    """How many shortest plants, each with a gap before it and one at the end, fit a video."""
    fit = int((seconds - GAP_SECONDS) // (PLANT_SECONDS[0] + GAP_SECONDS))
    return min(MAX_PLANTS_PER_VIDEO, fit)


def _check_params(
    *, n_seeds, n_unplanted, n_videos, seconds, fps, width, height, broken, seed
) -> None:
    if n_seeds < 1 or not 0 <= n_unplanted < n_seeds:
        raise ValueError(f"need 0 <= n_unplanted ({n_unplanted}) < n_seeds ({n_seeds})")
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    least = PLANT_SECONDS[0] + 2 * GAP_SECONDS
    if seconds < least:
        raise ValueError(f"seconds must be >= {least} to hold one plant, got {seconds}")
    room = n_videos * _plants_per_video(seconds)
    if n_seeds - n_unplanted > room:
        raise ValueError(
            f"{n_seeds - n_unplanted} planted seeds need more than {n_videos} videos "
            f"of {seconds} s (room for {room})"
        )
    if fps <= 0 or width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"bad video geometry: fps={fps}, {width}x{height} (even sides >= 16)")


def _prepare_root(root: Path) -> tuple[Path, Path]:
    """Make ``root/seeds`` and ``root/videos``; clear them only if they hold an earlier synthetic set.

    Stale seeds would silently join the set's ground truth, so an unknown
    non-empty folder is an error rather than something to write into.
    """
    seeds_dir, videos_dir = root / "seeds", root / "videos"
    stale = [d for d in (seeds_dir, videos_dir) if d.is_dir() and any(d.iterdir())]
    if stale and not (root / "manifest.json").is_file():
        raise FileExistsError(f"{stale[0]} is not empty and {root} holds no synthetic set manifest")
    for d in stale:
        shutil.rmtree(d)
    seeds_dir.mkdir(parents=True, exist_ok=True)
    videos_dir.mkdir(parents=True, exist_ok=True)
    return seeds_dir, videos_dir


def _write_broken(
    root: Path, rng, np_rng, embedder, seed_matrix, *, fps, width, height
) -> list[str]:
    """A video cut to 30% of its bytes, an empty one, a missing one, and an undecodable seed."""
    videos_dir = root / "videos"
    truncated = videos_dir / "broken_truncated.mp4"
    tex, _ = pick_filler(np_rng, width, height, 8, embedder, seed_matrix)
    frames = (tex[8 : 8 + height, 8 : 8 + width] for _ in range(int(round(4 * fps))))
    encode_video(truncated, frames, fps=fps, width=width, height=height, seconds=4.0, tone_hz=250.0)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.3)])  # as an interrupted download leaves it
    empty = videos_dir / "broken_empty.mp4"
    empty.write_bytes(b"")
    missing = videos_dir / "missing.mp4"  # listed, never created
    (root / "seeds" / "zz_broken.jpg").write_bytes(b"not a JPEG\0" + rng.randbytes(2048))
    (root / "seeds" / "zz_broken.txt").write_text("a picture whose file is not an image\n")
    return [str(truncated), str(empty), str(missing)]


def main(argv: list[str] | None = None) -> dict:
    """``python -m synth ROOT [--n-seeds N ...]``: write a set and print a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m synth", description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", type=Path, help="output folder (created; an earlier set there is replaced)"
    )
    parser.add_argument("--n-seeds", type=int, default=16, help="seed pictures, planted and not")
    parser.add_argument("--n-unplanted", type=int, default=4, help="seeds never shown in any video")
    parser.add_argument(
        "--n-videos", type=int, default=8, help="good videos (broken ones come on top)"
    )
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each video, s")
    parser.add_argument(
        "--fps", type=float, default=10.0, help="frame rate of the videos, frames/s"
    )
    parser.add_argument("--width", type=int, default=320, help="frame width, px")
    parser.add_argument("--height", type=int, default=180, help="frame height, px")
    parser.add_argument(
        "--no-broken", dest="broken", action="store_false", help="leave out broken inputs"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same set"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    manifest = make_synthetic_set(
        args.root, n_seeds=args.n_seeds, n_unplanted=args.n_unplanted, n_videos=args.n_videos,
        seconds=args.seconds, fps=args.fps, width=args.width, height=args.height,
        broken=args.broken, seed=args.seed,
    )  # fmt: skip
    print(
        f"wrote {args.n_seeds} seeds ({args.n_unplanted} unplanted, {len(manifest['broken_seeds'])} broken), "
        f"{args.n_videos} videos (+{len(manifest['broken_videos'])} broken), "
        f"{len(manifest['planted'])} planted intervals to {Path(args.root).resolve()} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return manifest


if __name__ == "__main__":
    main()
