"""Per-video caps: at most ``max_per_video`` clips from one source video.

A batch decision, made over all records given: the clips of a video are
ranked by match similarity (best first, then by key for a stable order) and
those past the cap are dropped as ``video_cap``. It reads no media and writes
no score, so it is simply re-run with a new cap.
"""

from __future__ import annotations

from collections import defaultdict

from filters.base import Filter
from shards.record import STATUS_OK, ClipRecord


class CapsFilter(Filter):
    name = "caps"
    run_level = True
    defaults = {
        "max_per_video": 20,  # clips kept per source video (video_id), best similarity first
    }

    def validate(self) -> None:
        if self.max_per_video < 1:
            self.fail("max_per_video", "must be at least 1")

    def process(self, records: list[ClipRecord]) -> None:
        by_video: dict[str, list[ClipRecord]] = defaultdict(list)
        for r in records:
            if r.status == STATUS_OK:
                by_video[r.video_id or r.video].append(r)
        for clips in by_video.values():
            clips.sort(key=lambda r: (-r.similarity, r.key))
            self.n_scored += len(clips)
            for r in clips[self.max_per_video :]:
                self.drop(r, "video_cap")
