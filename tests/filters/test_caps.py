"""At most N clips per source video, best match first."""

from __future__ import annotations

from filters.base import reset_drops
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


def test_caps_store_each_clips_rank_within_its_video():
    recs = [
        rec("a1", "a", 0.5), rec("a2", "a", 0.9), rec("a3", "a", 0.9), rec("a4", "a", 0.95,
        status="dropped"), rec("b1", "b", 0.4),
    ]  # fmt: skip
    f = CapsFilter(max_per_video=2)
    f(recs)
    ranks = {r.key: r.scores.get("video_rank") for r in recs}
    # best similarity first, then the key; a clip dropped before takes no rank
    assert ranks == {"a1": 3.0, "a2": 1.0, "a3": 2.0, "a4": None, "b1": 1.0}
    assert all(isinstance(v, float) for v in ranks.values() if v is not None)
    assert f.stats()["scored"] == 4


def test_a_new_cap_reads_the_stored_ranks():
    recs = [rec(f"a{i}", "a", 0.9 - 0.1 * i) for i in range(4)] + [rec("b0", "b", 0.3)]
    CapsFilter(max_per_video=3)(recs)
    assert [r.reason for r in recs] == [None, None, None, "video_cap", None]
    stored = {r.key: dict(r.scores) for r in recs}
    # a tighter cap decides from the stored ranks alone, as a selection over the parquet would
    tighter = CapsFilter(max_per_video=1)
    assert {k: tighter.drop_reason(s) for k, s in stored.items()} == {
        "a0": None, "a1": "video_cap", "a2": "video_cap", "a3": "video_cap", "b0": None
    }  # fmt: skip
    # and re-running it over the reopened clips gives the same verdicts and the same ranks
    tighter(reset_drops(recs))
    assert {r.key: r.reason for r in recs} == {k: tighter.drop_reason(s) for k, s in stored.items()}
    assert {r.key: r.scores for r in recs} == stored
    assert tighter.stats()["dropped"] == {"video_cap": 3}
    assert tighter.examples == {"video_cap": ["a1", "a2", "a3"]}  # in rank order
