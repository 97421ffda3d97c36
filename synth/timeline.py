"""Timelines of the planted set: which seed is shown in which video, when, and how the camera moves.

All choices come from one :class:`random.Random`, in a fixed order, so a seed
gives the same plans every time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from synth.scenes import PAN_X, PAN_Y, Z_MAX, Z_MIN

PLANT_SECONDS = (5.0, 10.0)  # how long a planted seed is shown
GAP_SECONDS = 2.0  # least distance of a plant from the video ends and from another plant
MAX_PLANTS_PER_VIDEO = 3
SILENT_FRACTION = 0.25  # share of videos written without an audio track


@dataclass
class Segment:
    """One stretch of a video's timeline, [start, end) in seconds."""

    kind: str  # "seed", "distractor" or "filler"
    start: float
    end: float
    ref: str = ""  # seed id or distractor id
    camera: tuple[float, ...] = ()  # (z0, px0, py0, z1, px1, py1)
    subject: bool = False  # a subject moves across the picture (else it is a still under a camera)


@dataclass
class VideoPlan:
    """One video to write: its file stem, its timeline, and the tone that names it (None: silent)."""

    name: str
    segments: list[Segment] = field(default_factory=list)
    tone_hz: float | None = None


def plan_videos(
    rng: random.Random,
    planted_ids: list[str],
    distractor_ids: list[str],
    *,
    n_videos: int,
    seconds: float,
) -> list[VideoPlan]:
    """Every video's timeline and tone; about a quarter of the videos stay silent."""
    assignment = assign_plants(rng, planted_ids, n_videos, plants_per_video(seconds))
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


def plants_per_video(seconds: float) -> int:
    """How many shortest plants, each with a gap before it and one at the end, fit a video."""
    fit = int((seconds - GAP_SECONDS) // (PLANT_SECONDS[0] + GAP_SECONDS))
    return min(MAX_PLANTS_PER_VIDEO, fit)


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
            # every other plant has a subject moving across it: real motion the filters
            # keep; the others are stills under a camera move, which they drop
            segments.append(Segment("seed", t / 2, (t + durations[i]) / 2, sid, cam,
                                    subject=i % 2 == 0))  # fmt: skip
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
