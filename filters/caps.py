"""Per-video caps: at most ``max_per_video`` clips from one source video.

The score is ``video_rank``: a clip's place among the ok clips of its video
(``video_id``) in what the filter is given, 1 for the best, by match similarity
(best first, then by key for a stable order). A clip ranked past the cap is
dropped as ``video_cap``. A rank is relative to the clips given, so it is
computed anew on every call (it reads no media, so that costs nothing); a
stored rank still lets a later selection try another cap without the run.
"""

from __future__ import annotations

from collections import defaultdict

from filters.base import Filter, FilterContext
from shards.record import ClipRecord


class CapsFilter(Filter):
    name = "caps"
    run_level = True
    score_names = ("video_rank",)

    max_per_video: int = 20  # clips kept per source video (video_id), best similarity first

    def validate(self) -> None:
        if self.max_per_video < 1:
            self.fail("max_per_video", "must be at least 1")

    def score_batch(self, records: list[ClipRecord], context: FilterContext) -> list[ClipRecord]:
        """Rank the clips of each video; give them back video by video, best first."""
        by_video: dict[str, list[ClipRecord]] = defaultdict(list)
        for r in records:
            by_video[r.video_id or r.video].append(r)
        ranked: list[ClipRecord] = []
        for clips in by_video.values():
            clips.sort(key=lambda r: (-r.similarity, r.key))
            for rank, r in enumerate(clips, start=1):
                r.scores["video_rank"] = float(rank)
            ranked += clips
        self.n_scored += len(ranked)
        return ranked

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        return "video_cap" if scores["video_rank"] > self.max_per_video else None
