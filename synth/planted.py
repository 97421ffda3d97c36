"""The planted set: seed pictures shown in videos at known times, and the manifest that says so.

``make_synthetic_set(root)`` writes captioned seed pictures, videos in which
some of them are *planted* (shown for a known interval, with camera motion and
noise), filler and distractor footage that must match nothing, and a few
broken inputs; ``root/manifest.json`` says which (seed, video, interval) a run
should find. ``python -m synth /tmp/synth`` writes one; mine
``/tmp/synth/seeds`` against ``/tmp/synth/videos.txt`` with the embedder
``miners.embedders:pixel_embedder`` and compare the clips with the manifest
(:mod:`synth.check`).

The pictures come from :mod:`synth.scenes`, the timelines from
:mod:`synth.timeline`, the frames from :mod:`synth.footage`. Every random
choice comes from one :class:`random.Random` and one numpy generator seeded
with ``seed``, drawn in a fixed order: the same seed writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np

from miners.embedders import PixelEmbedder
from synth.footage import encode_video, pick_filler, write_videos
from synth.scenes import Picture, cross_cos, pick_pictures, save_seed, scene_size
from synth.testmedia import truncate
from synth.timeline import GAP_SECONDS, PLANT_SECONDS, plan_videos, plants_per_video

log = logging.getLogger(__name__)

BROKEN_SEED = "zz_broken"  # sorts last among the seed files
BROKEN_CAPTION = "a picture whose file is not an image"


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
    # The order of the draws below is the set: reordering them changes every file.
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    embedder = PixelEmbedder()
    seeds, distractors = _draw_pictures(
        rng, embedder, n_seeds=n_seeds, n_videos=n_videos, width=width, height=height
    )
    captions = _write_seeds(seeds_dir, seeds, rng)
    planted_ids = list(seeds)[: n_seeds - n_unplanted]
    plans = plan_videos(rng, planted_ids, list(distractors), n_videos=n_videos, seconds=seconds)
    seed_matrix = np.stack([p.views[0] for p in seeds.values()])
    geometry = dict(seconds=seconds, fps=fps, width=width, height=height)
    video_rows, filler_max = write_videos(
        videos_dir, plans, {**seeds, **distractors}, np_rng, embedder, seed_matrix, **geometry
    )
    broken_videos = []
    if broken:
        broken_videos = _write_broken(
            root, rng, np_rng, embedder, seed_matrix, fps=fps, width=width, height=height
        )
    _write_video_list(root, [row["video"] for row in video_rows], broken_videos)
    checks = _checks(seeds, distractors, filler_max)
    manifest = _manifest(params, captions, video_rows, broken_videos, checks)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("synthetic set in %s: %.1f s", root, time.perf_counter() - t0)
    return manifest


def _draw_pictures(
    rng: random.Random,
    embedder: PixelEmbedder,
    *,
    n_seeds: int,
    n_videos: int,
    width: int,
    height: int,
) -> tuple[dict[str, Picture], dict[str, Picture]]:
    """The seed pictures and the distractors (one a video, three at least) by id, all far apart."""
    size, aspect = scene_size(width, height), width / height
    digits = max(2, len(str(n_seeds - 1)))
    seed_ids = [f"seed_{i:0{digits}d}" for i in range(n_seeds)]
    seeds = dict(zip(seed_ids, pick_pictures(rng, n_seeds, embedder, size, aspect), strict=True))
    distractors = pick_pictures(rng, max(3, n_videos), embedder, size, aspect, list(seeds.values()))
    return seeds, {f"distractor_{i:02d}": p for i, p in enumerate(distractors)}


def _write_seeds(seeds_dir: Path, seeds: dict[str, Picture], rng: random.Random) -> dict[str, str]:
    """Each seed's JPEG (square or, by a coin flip, 4:3) and caption file; the captions by id."""
    captions = {}
    for sid, pic in seeds.items():
        save_seed(pic, seeds_dir / f"{sid}.jpg", landscape=rng.random() < 0.5)
        (seeds_dir / f"{sid}.txt").write_text(pic.caption + "\n")
        captions[sid] = pic.caption
    return captions


def _write_video_list(root: Path, videos: list[str], broken_videos: list[str]) -> None:
    """``videos.txt``: the good videos with the broken ones among them, so a run must carry on past each."""
    videos = list(videos)
    for i, p in enumerate(broken_videos):
        videos.insert(min(len(videos), 1 + i * (len(videos) // 2 + 1)), p)
    (root / "videos.txt").write_text("".join(p + "\n" for p in videos))


def _manifest(
    params: dict,
    captions: dict[str, str],
    video_rows: list[dict],
    broken_videos: list[str],
    checks: dict,
) -> dict:
    """What ``manifest.json`` holds, its keys in the order the file has always had them."""
    n_planted = params["n_seeds"] - params["n_unplanted"]
    return {
        "seeds": {**captions, BROKEN_SEED: BROKEN_CAPTION} if params["broken"] else captions,
        "planted": _planted(video_rows),
        "unplanted": list(captions)[n_planted:],
        "broken_videos": broken_videos,
        "broken_seeds": [BROKEN_SEED] if params["broken"] else [],
        "params": params,
        "videos": video_rows,
        "checks": checks,
    }


def _planted(video_rows: list[dict]) -> list[dict]:
    """The manifest's ground truth: every (seed, video, start, end) shown, in video order."""
    return [
        {"seed_id": s["ref"], "video": row["video"], "start": s["start"], "end": s["end"]}
        for row in video_rows
        for s in row["segments"]
        if s["kind"] == "seed"
    ]


def _checks(
    seeds: dict[str, Picture], distractors: dict[str, Picture], filler_max: float
) -> dict[str, float]:
    """PixelEmbedder cosines as drawn, before JPEG and H.264: the margins the set was held to."""
    seed_matrix = np.stack([p.views[0] for p in seeds.values()])
    cross = seed_matrix @ seed_matrix.T
    np.fill_diagonal(cross, -1.0)
    return {
        "seed_max_cross": round(float(cross.max()), 4),
        "view_min": round(min(float((p.views @ p.views[0]).min()) for p in seeds.values()), 4),
        "distractor_max": round(
            max(cross_cos(d.views, s.views) for d in distractors.values() for s in seeds.values()),
            4,
        ),
        "filler_max": round(filler_max, 4),
    }


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
    room = n_videos * plants_per_video(seconds)
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
    root: Path,
    rng: random.Random,
    np_rng: np.random.Generator,
    embedder: PixelEmbedder,
    seed_matrix: np.ndarray,
    *,
    fps: float,
    width: int,
    height: int,
) -> list[str]:
    """A video cut to 30% of its bytes, an empty one, a missing one, and an undecodable seed."""
    videos_dir = root / "videos"
    truncated = videos_dir / "broken_truncated.mp4"
    tex, _ = pick_filler(np_rng, width, height, 8, embedder, seed_matrix)
    frames = (tex[8 : 8 + height, 8 : 8 + width] for _ in range(int(round(4 * fps))))
    encode_video(truncated, frames, fps=fps, width=width, height=height, seconds=4.0, tone_hz=250.0)
    truncate(truncated, 0.3)
    empty = videos_dir / "broken_empty.mp4"
    empty.write_bytes(b"")
    missing = videos_dir / "missing.mp4"  # listed, never created
    (root / "seeds" / f"{BROKEN_SEED}.jpg").write_bytes(b"not a JPEG\0" + rng.randbytes(2048))
    (root / "seeds" / f"{BROKEN_SEED}.txt").write_text(BROKEN_CAPTION + "\n")
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
