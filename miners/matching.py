"""From (frame, seed, similarity) hits to clip windows with transferred captions.

VideoCC3M's rule, kept simple and deterministic:

* consecutive matching frames of one (seed, video) form a segment; its peak is
  the best frame; each (seed, video) keeps only its best segment;
* each seed keeps at most ``max_clips_per_seed`` videos, best first;
* a clip is ``clip_seconds`` centred on the peak, shifted to stay inside the video;
* windows of one video that overlap by at least ``merge_overlap`` of their
  length become one clip carrying several captions, best first.
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

    def to_dict(self) -> dict:
        return asdict(self)


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


def clip_window(peak: float, clip_seconds: float, duration: float) -> tuple[float, float]:
    """``clip_seconds`` centred on ``peak``, shifted to lie inside [0, duration]."""
    if duration <= clip_seconds:
        return 0.0, float(duration)
    start = min(max(peak - clip_seconds / 2, 0.0), duration - clip_seconds)
    return float(start), float(start + clip_seconds)


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
    records: list[ClipRecord] = []
    for c in cands:
        start, end = clip_window(c.peak_time, clip_seconds, info["duration"])
        seed_id, caption = seeds[c.seed_row]
        cap = Caption(
            seed_id=seed_id, caption=caption, similarity=c.similarity, match_time=c.peak_time
        )
        home = next((r for r in records if _overlap(r, start, end) >= merge_overlap), None)
        if home is not None:
            home.captions.append(cap)
            continue
        records.append(
            ClipRecord(
                key=clip_key(video_id, start), video=info["video"], video_id=video_id,
                start=start, end=end, match_time=c.peak_time, similarity=c.similarity,
                captions=[cap], source=dict(info.get("source", {})),
            )
        )  # fmt: skip
    return sorted(records, key=lambda r: r.start)


def _overlap(record: ClipRecord, start: float, end: float) -> float:
    """Shared time as a fraction of the shorter window."""
    inter = min(record.end, end) - max(record.start, start)
    shorter = min(record.end - record.start, end - start)
    return inter / shorter if shorter > 0 else 0.0
