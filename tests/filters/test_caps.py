"""At most N clips per source video, best match first."""

from __future__ import annotations

from filters.caps import CapsFilter
from shards.record import ClipRecord


def rec(key: str, video_id: str, similarity: float, status: str = "ok") -> ClipRecord:
    return ClipRecord(key=key, video=f"{video_id}.mp4", video_id=video_id, start=0, end=10,
                      match_time=5, similarity=similarity, status=status)  # fmt: skip


def test_caps_keep_the_best_per_video():
    recs = [
        rec("a1", "a", 0.5), rec("a2", "a", 0.9), rec("a3", "a", 0.7), rec("a4", "a", 0.95,
        status="dropped"), rec("b1", "b", 0.4),
    ]  # fmt: skip
    f = CapsFilter(max_per_video=2)
    f(recs)
    assert {r.key: r.reason for r in recs} == {
        "a1": "video_cap", "a2": None, "a3": None, "a4": None, "b1": None
    }  # fmt: skip  # a4 was dropped before: it takes no place
    assert f.stats()["dropped"] == {"video_cap": 1}
