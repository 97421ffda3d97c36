"""Estimating the match threshold from similarities that cannot be true matches.

The right cosine threshold differs per embedder (a random-weight tower, a
weight-free test embedder and CLIP ViT-L/14 live at different scales), so it is
measured, not guessed. A frame is searched against *every* seed, so what a
user cares about is the share of non-matching frames that would match *some*
seed: each null sample is therefore the best similarity of one query over a
set of seeds it cannot match.

* seed against the other seeds: distinct captioned pictures are different scenes;
* frame against *scrambled* seeds (each cut into 8 x 8 tiles, shuffled): the
  colours and textures of the seeds remain, the pictures do not, so no frame
  can truly match one. A frame that already resembles a seed itself (above the
  seed-pair estimate) is left out of that seed's scrambled pair: a scramble
  keeps the seed's colours, so the pair would measure the seed, not the null.

The threshold is the ``1 - false_match_rate`` quantile of the higher of the
two: at most that share of non-matching frames (or seeds) would pass. The best
of more seeds is higher, so the estimate holds for a seed set of the size it
was measured on (``MAX_NULL_SEEDS`` at most).
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.5, 0.9, 0.99, 0.999)
MAX_NULL_SEEDS = 2000  # a 2000 x 2000 similarity matrix is still small
NEAR_DUPLICATE = 0.98  # seed pairs this close are the same picture twice, not a null pair


def best_other_seed(emb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """For each seed, its highest similarity to a different seed (near duplicates left out)."""
    rng = rng or np.random.default_rng(0)
    if len(emb) > MAX_NULL_SEEDS:
        emb = emb[rng.choice(len(emb), MAX_NULL_SEEDS, replace=False)]
    if len(emb) < 2:
        return np.zeros(0, np.float32)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    sims[sims >= NEAR_DUPLICATE] = -np.inf
    return sims.max(axis=1)


def best_scrambled_seed(
    frames: np.ndarray, seeds: np.ndarray, scrambled: np.ndarray, resemble: float
) -> np.ndarray:
    """For each frame, its highest similarity to a scrambled seed whose original it does not resemble."""
    if len(frames) == 0:
        return np.zeros(0, np.float32)
    null = frames @ scrambled.T
    null[frames @ seeds.T >= resemble] = -np.inf
    best = null.max(axis=1)
    return best[np.isfinite(best)]


def scramble(
    images: np.ndarray, tiles: int = 8, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Each image cut into ``tiles`` x ``tiles`` blocks, the blocks shuffled."""
    rng = rng or np.random.default_rng(0)
    n, h, w, c = images.shape
    th, tw = h // tiles, w // tiles
    out = images.copy()
    for i in range(n):
        blocks = [images[i, y * th : (y + 1) * th, x * tw : (x + 1) * tw]
                  for y in range(tiles) for x in range(tiles)]  # fmt: skip
        order = rng.permutation(len(blocks))
        if np.array_equal(order, np.arange(len(blocks))):
            order = np.roll(order, 1)
        for k, j in enumerate(order):
            y, x = divmod(k, tiles)
            out[i, y * th : (y + 1) * th, x * tw : (x + 1) * tw] = blocks[j]
    return out


def quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"q{q:g}": float(np.quantile(values, q)) for q in QUANTILES} | {
        "max": float(values.max()), "n": int(len(values))}  # fmt: skip


def estimate_threshold(nulls: dict[str, np.ndarray], false_match_rate: float) -> dict:
    """The threshold and the numbers it rests on, for each null sample and overall."""
    if not 0 < false_match_rate < 1:
        raise ValueError(f"false_match_rate must be in (0, 1), got {false_match_rate}")
    per = {}
    for name, vals in nulls.items():
        if len(vals):
            per[name] = quantiles(vals) | {
                "at_rate": float(np.quantile(vals, 1 - false_match_rate))
            }
    if not per:
        raise ValueError("no null similarities: need at least two readable seeds or some frames")
    threshold = max(v["at_rate"] for v in per.values())
    return {"threshold": round(threshold, 4), "false_match_rate": false_match_rate, "nulls": per}


def calibrate(
    seeds_path: str,
    videos_path: str,
    *,
    embedder: str,
    device: str = "auto",
    false_match_rate: float = 0.001,
    fps: float = 1.0,
    max_seeds: int = 2000,
    max_videos: int = 50,
    max_frames_per_video: int = 120,
    seed_workers: int = 16,
    seed_guards: dict | None = None,
    hwaccel: str = "auto",
) -> dict:
    """Embed up to ``max_seeds`` seeds (as they are and scrambled) and frames of up to
    ``max_videos`` videos, and estimate the threshold from the null similarities.

    ``seed_guards`` are the seed reader's limits (``max_image_pixels``,
    ``allowed_protocols``, ``block_private_addresses``), as the run reads seeds.
    ``hwaccel`` chooses the decoder (:func:`miners.frames.iter_frames`); frames
    are sampled exactly whatever the run's sampler, so the threshold does not
    depend on which frames a faster scan skips."""
    import logging

    from media import MediaError
    from miners.embedders import get_embedder
    from miners.fetch import FetchError, fetch_video, remove_download
    from miners.frames import iter_frames
    from miners.seeds import load_seed_images, read_seeds
    from miners.videos import read_videos

    log = logging.getLogger(__name__)
    model = get_embedder(embedder, device)
    seeds = read_seeds(seeds_path)[:max_seeds]
    images = [img for _, img, _ in load_seed_images(seeds, model.image_size, workers=seed_workers,
                                                       **(seed_guards or {}))
              if img is not None]  # fmt: skip
    if len(images) < 2:
        raise ValueError(f"{seeds_path}: fewer than two readable seed images")
    stack = np.stack(images)
    seed_emb = model.embed_images(stack)
    scrambled = model.embed_images(scramble(stack))
    frame_embs, n_videos = [], 0
    for video in _spread(read_videos(videos_path), max_videos):
        try:
            fetched = fetch_video(video.url, _tmp_cache())
            try:
                n = 0
                for _, frames in iter_frames(fetched.path, fps=fps, size=model.image_size,
                                             hwaccel=hwaccel):  # fmt: skip
                    frame_embs.append(model.embed_images(frames[: max_frames_per_video - n]))
                    n += len(frame_embs[-1])
                    if n >= max_frames_per_video:
                        break
                n_videos += 1
            finally:
                remove_download(fetched)
        except (FetchError, MediaError) as e:
            log.warning("calibrate: skipping %s: %s", video.url, e)
    frames = np.concatenate(frame_embs) if frame_embs else np.zeros((0, model.dim), np.float32)
    seed_null = best_other_seed(seed_emb)
    resemble = float(np.quantile(seed_null, 1 - false_match_rate)) if len(seed_null) else 1.0
    nulls = {
        "seed_vs_other_seeds": seed_null,
        "frame_vs_scrambled_seeds": best_scrambled_seed(frames, seed_emb, scrambled, resemble),
    }
    result = estimate_threshold(nulls, false_match_rate)
    observed = (frames @ seed_emb.T).max(axis=1) if len(frames) else np.zeros(0)
    result.update(
        embedder=embedder, n_seeds=len(images), n_videos=n_videos, n_frames=int(len(frames)),
        frames_above=float((observed >= result["threshold"]).mean()) if len(observed) else 0.0,
        best_frame_similarity=quantiles(observed),
    )  # fmt: skip
    return result


def _spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced over the list (not just its head)."""
    if len(items) <= n:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n)]


def _tmp_cache():
    import tempfile
    from pathlib import Path

    return Path(tempfile.gettempdir()) / "capmine-calibrate"
