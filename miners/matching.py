"""From (frame, seed, similarity) hits to clip windows with transferred captions.

VideoCC3M's rule, made to keep each clip inside the scene that matched:

* consecutive matching frames of one (seed, video) form a segment (its
  *matching run*); its peak is the best frame; each (seed, video) keeps only its
  best segment;
* each seed keeps at most ``max_clips_per_seed`` videos, best first;
* the scan finds the shot holding each peak (hard cuts around it, see
  :func:`miners.scan.scan_video`); a window holds the peak, covers as much of the
  matching run as ``clip_seconds`` allows, and never reaches past the shot's
  edges: a shot shorter than ``clip_seconds`` gives a shorter clip (the ``shots``
  filter drops one under ``min_clip_seconds``), never one padded with the next
  scene (:func:`place_window`);
* two matches of one video share a clip (several captions, best first) only when
  they lie in the same shot or their matching runs overlap, and their windows
  overlap by at least ``merge_overlap``; otherwise each gets its own clip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from shards.keys import clip_key
from shards.record import Caption, ClipRecord


@dataclass(frozen=True)
class Candidate:
    """The best matching segment of one seed in one video."""

    seed_row: int  # row of the seed in the seed index
    video_id: str
    peak_time: float  # seconds
    similarity: float  # at the peak
    seg_start: float  # first matching frame, seconds
    seg_end: float  # last matching frame, seconds
    n_frames: int  # matching frames in the segment
    # the shot holding the peak, seconds; None: not known (then the whole video)
    shot_start: float | None = None
    shot_end: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def shot(self) -> tuple[float, float] | None:
        if self.shot_start is None or self.shot_end is None:
            return None
        return self.shot_start, self.shot_end

    def same_scene(self, other: Candidate, tol: float = 1e-3) -> bool:
        """True when both peaks lie in one known shot, or the two matching runs overlap."""
        a, b = self.shot, other.shot
        if a is not None and b is not None and abs(a[0] - b[0]) <= tol and abs(a[1] - b[1]) <= tol:
            return True
        return max(self.seg_start, other.seg_start) <= min(self.seg_end, other.seg_end)


class HitAccumulator:
    """Collects one video's hits batch by batch; frames are numbered across batches."""

    def __init__(self) -> None:
        self._hits: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
        self.n_hits = 0

    def add(
        self, frame_index: np.ndarray, times: np.ndarray, seed_rows: np.ndarray, sims: np.ndarray
    ) -> None:
        """``frame_index[i]`` (global frame number) matched ``seed_rows[i]`` at ``sims[i]``;
        ``times`` maps a global frame number to its time."""
        for f, s, v in zip(frame_index.tolist(), seed_rows.tolist(), sims.tolist(), strict=True):
            self._hits[s].append((f, float(times[f]), v))
        self.n_hits += len(sims)

    def candidates(self, video_id: str) -> list[Candidate]:
        """The best segment of every seed that matched, best first."""
        out = []
        for seed_row, hits in self._hits.items():
            best = max(_segments(sorted(hits)), key=lambda seg: max(h[2] for h in seg))
            peak = max(best, key=lambda h: h[2])
            out.append(
                Candidate(
                    seed_row=int(seed_row), video_id=video_id, peak_time=peak[1],
                    similarity=float(peak[2]), seg_start=best[0][1], seg_end=best[-1][1],
                    n_frames=len(best),
                )
            )  # fmt: skip
        return sorted(out, key=lambda c: (-c.similarity, c.seed_row))


def _segments(hits: list[tuple[int, float, float]]) -> Iterable[list[tuple[int, float, float]]]:
    """Split frame-sorted hits where a frame number is skipped."""
    seg = [hits[0]]
    for h in hits[1:]:
        if h[0] == seg[-1][0] + 1:
            seg.append(h)
        else:
            yield seg
            seg = [h]
    yield seg


def place_window(candidate: Candidate, clip_seconds: float, duration: float) -> tuple[float, float]:
    """The clip window of ``candidate``: inside its shot, holding its peak, covering as much
    of its matching run as ``clip_seconds`` allows.

    The window is ``clip_seconds`` long, or the whole shot when the shot is
    shorter. A matching run that fits is centred in the window (context on both
    sides); a longer run holds the window, centred on the peak as far as the run
    allows. Without a known shot the shot is the whole video.
    """
    lo_edge, hi_edge = 0.0, float(duration)
    if candidate.shot is not None:
        lo_edge = max(lo_edge, candidate.shot[0])
        hi_edge = min(hi_edge, candidate.shot[1])
    peak = min(max(candidate.peak_time, lo_edge), hi_edge)
    length = min(clip_seconds, hi_edge - lo_edge)
    run_a = max(candidate.seg_start, lo_edge)
    run_b = min(max(candidate.seg_end, run_a), hi_edge)
    if run_b - run_a <= length:
        target = (run_a + run_b) / 2 - length / 2
    else:
        target = min(max(peak - length / 2, run_a), run_b - length)
    # hold the peak and stay in the shot; these bounds always leave room (peak is in the shot)
    start = min(max(target, lo_edge, peak - length), min(hi_edge - length, peak))
    return float(start), float(start + length)


def limit_per_seed(
    candidates: Iterable[Candidate], max_clips_per_seed: int, used: dict[int, int] | None = None
) -> list[Candidate]:
    """Each seed's best candidates over all videos: ``max_clips_per_seed`` less the
    ``used[seed_row]`` clips earlier runs already gave it."""
    by_seed: dict[int, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_seed[c.seed_row].append(c)
    kept = []
    for seed_row, cands in by_seed.items():
        cands.sort(key=lambda c: (-c.similarity, c.video_id, c.peak_time))
        kept.extend(cands[: max(0, max_clips_per_seed - (used or {}).get(seed_row, 0))])
    return kept


def select_clips(
    candidates: Iterable[Candidate],
    *,
    videos: dict[str, dict],
    seeds: Sequence[tuple[str, str]],
    clip_seconds: float = 10.0,
    max_clips_per_seed: int = 10,
    merge_overlap: float = 0.5,
    used: dict[int, int] | None = None,
) -> list[ClipRecord]:
    """Turn candidates into clip records.

    ``videos`` maps video_id to ``{"video": url, "duration": s, "source": {...}}``;
    ``seeds[row]`` is ``(seed_id, caption)``; ``used`` counts clips earlier runs
    gave each seed row. Clips come out in video order (the order of ``videos``),
    then by start time.
    """
    per_video: dict[str, list[Candidate]] = defaultdict(list)
    for c in limit_per_seed(candidates, max_clips_per_seed, used):
        per_video[c.video_id].append(c)
    clips = []
    for video_id, info in videos.items():
        cands = sorted(per_video.get(video_id, []), key=lambda c: (-c.similarity, c.seed_row))
        clips.extend(_merge_video(cands, video_id, info, seeds, clip_seconds, merge_overlap))
    return clips


def _merge_video(cands, video_id, info, seeds, clip_seconds, merge_overlap) -> list[ClipRecord]:
    """One video's candidates, best first, as clips: each joins an earlier clip of the same
    scene whose window it overlaps enough, or starts its own."""
    homes: list[tuple[Candidate, ClipRecord]] = []
    for c in cands:
        start, end = place_window(c, clip_seconds, info["duration"])
        seed_id, caption = seeds[c.seed_row]
        cap = Caption(
            seed_id=seed_id, caption=caption, similarity=c.similarity, match_time=c.peak_time
        )
        home = next(
            (r for first, r in homes
             if first.same_scene(c) and _overlap(r, start, end) >= merge_overlap),
            None,
        )  # fmt: skip
        if home is not None:
            home.captions.append(cap)
            continue
        record = ClipRecord(
            key=clip_key(video_id, start), video=info["video"], video_id=video_id,
            start=start, end=end, match_time=c.peak_time, similarity=c.similarity,
            captions=[cap], source=dict(info.get("source", {})),
        )  # fmt: skip
        homes.append((c, record))
    return sorted((r for _, r in homes), key=lambda r: r.start)


def _overlap(record: ClipRecord, start: float, end: float) -> float:
    """Shared time as a fraction of the shorter window."""
    inter = min(record.end, end) - max(record.start, start)
    shorter = min(record.end - record.start, end - start)
    return inter / shorter if shorter > 0 else 0.0
