"""Near-duplicates across all records: the best of each group stays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from filters.base import EarlierClips, FilterChain, FilterContext, reset_drops
from filters.dedup import DedupFilter
from miners.embedders import PixelEmbedder
from shards.record import ClipRecord
from tests.filters import make_clip


def test_exact_and_near_duplicates_dropped_distinct_kept(tmp_path):
    best = make_clip(tmp_path, "best", "testsrc2", similarity=0.9, video_id="a")
    exact = make_clip(tmp_path, "exact", "testsrc2", similarity=0.8, video_id="b")
    shutil.copy(best.mp4, exact.mp4)
    near = make_clip(tmp_path, "near", "testsrc2", similarity=0.95, video_id="c",
                     vf="eq=brightness=0.03,noise=alls=6")  # fmt: skip
    near.similarity = 0.7  # the worst match of the group
    other = make_clip(tmp_path, "other", "mandelbrot", similarity=0.5, video_id="d")
    smpte = make_clip(tmp_path, "smpte", "smptebars", similarity=0.6, video_id="e")
    recs = [near, exact, other, best, smpte]
    chain = FilterChain([DedupFilter()], FilterContext(embedder=PixelEmbedder()))
    chain(recs)
    verdicts = {r.key: r.reason for r in recs}
    assert verdicts == {"best": None, "exact": "duplicate", "near": "duplicate",
                        "other": None, "smpte": None}  # fmt: skip
    dedup = chain.filters[0]
    assert dedup.duplicate_of == {"exact": "best", "near": "best"}
    assert chain.stats()["filters"]["dedup"]["duplicate_of"] == dedup.duplicate_of
    assert exact.scores["dup_similarity"] > 0.99
    assert 0.95 <= near.scores["dup_similarity"] < 1.0
    assert other.scores["dup_max_similarity"] < 0.95


def test_threshold_one_keeps_near_copies(tmp_path):
    a = make_clip(tmp_path, "a", "testsrc2", similarity=0.9)
    b = make_clip(tmp_path, "b", "testsrc2", similarity=0.8, vf="eq=brightness=0.05")
    FilterChain([DedupFilter(threshold=0.9999)], FilterContext(embedder=PixelEmbedder()))([a, b])
    assert (a.status, b.status) == ("ok", "ok")


class PlantedContext(FilterContext):
    """Clip embeddings given by key (no media): ``vectors[key]`` is one frame's embedding."""

    def __init__(self, vectors):
        super().__init__(embedder=object())
        self.vectors = vectors

    def frame_embeddings(self, record, n=4):
        if record.key not in self.vectors:
            raise ValueError(f"{record.key}: no frames")
        return np.asarray([self.vectors[record.key]], dtype=np.float32)


def _unit(deg: float) -> list[float]:
    return [float(np.cos(np.radians(deg))), float(np.sin(np.radians(deg)))]


def _rec(key: str, similarity: float) -> ClipRecord:
    return ClipRecord(key=key, video=f"{key}.mp4", video_id=key, start=0, end=10, match_time=5,
                      similarity=similarity)  # fmt: skip


def test_greedy_from_the_best_and_verdicts_from_the_scores():
    # a ~ b ~ c at 10 degrees apart (cosine 0.985), a and c 20 apart (0.94); d alone; e fails
    ctx = PlantedContext({"a": _unit(0), "b": _unit(10), "c": _unit(20), "d": _unit(90)})
    recs = [_rec("c", 0.7), _rec("b", 0.8), _rec("a", 0.9), _rec("d", 0.5), _rec("e", 0.95)]
    f = DedupFilter(threshold=0.95)
    f(recs, ctx)
    verdicts = {r.key: r.reason for r in recs}
    # b goes as a's look-alike; c, like b but not like a, stays: greedy, not components
    assert verdicts == {"a": None, "b": "duplicate", "c": None, "d": None, "e": None}
    assert f.duplicate_of == {"b": "a"}
    assert {r.key for r in recs if "dup_similarity" in r.scores} == {"b"}
    assert all("dup_max_similarity" in r.scores for r in recs if r.key != "e")
    assert f.stats()["scored"] == 4 and f.stats()["errors"] == 1
    e = next(r for r in recs if r.key == "e")
    assert e.status == "failed" and e.error.startswith("filter dedup: ")
    assert all(f.drop_reason(r.scores) == r.reason for r in recs if r.key != "e")
    # a stricter threshold over the reopened clips: no stale verdict survives
    again = DedupFilter(threshold=0.99)
    again(reset_drops(recs), ctx)
    assert {r.key: r.reason for r in recs} == {k: None for k in verdicts}
    assert e.status == "failed"  # a failed clip stays failed: it is never judged again
    assert not any("dup_similarity" in r.scores for r in recs)


def _earlier(keys_degrees: dict[str, float], frames: int = 4, not_compared: int = 0):
    vectors = np.array([_unit(d) for d in keys_degrees.values()], np.float32).reshape(-1, 2)
    return {frames: EarlierClips(list(keys_degrees), vectors, frames, not_compared)}


def test_earlier_runs_clips_drop_their_repeats_and_drop_nothing_else():
    # old (an earlier run's kept clip) at 0 degrees; a repeats it (2 deg: cosine 0.9994);
    # c is 18 deg from a (0.951) but 20 from old (0.940); d stands alone
    ctx = PlantedContext({"a": _unit(2), "c": _unit(20), "d": _unit(90)})
    ctx.earlier = _earlier({"old": 0.0, "far": 200.0}, not_compared=3)
    recs = [_rec("c", 0.8), _rec("a", 0.9), _rec("d", 0.5)]
    f = DedupFilter(threshold=0.95)
    f(recs, ctx)
    a, c, d = sorted(recs, key=lambda r: r.key)
    # a goes as old's repeat; being dropped, it drops nothing: c, like a only, stays
    assert (a.reason, c.reason, d.reason) == ("duplicate", None, None)
    assert f.duplicate_of == {"a": "old"}
    assert a.scores["dup_similarity"] == pytest.approx(np.cos(np.radians(2)), abs=1e-6)
    # the closest look-alike counts earlier clips too
    assert a.scores["dup_max_similarity"] == pytest.approx(np.cos(np.radians(2)), abs=1e-6)
    assert c.scores["dup_max_similarity"] == pytest.approx(np.cos(np.radians(18)), abs=1e-6)
    assert d.scores["dup_max_similarity"] == pytest.approx(np.cos(np.radians(70)), abs=1e-6)
    stats = f.stats()
    assert (stats["earlier_clips"], stats["earlier_not_compared"]) == (2, 3)
    assert stats["dropped"] == {"duplicate": 1}
    assert set(f.vectors) == {"a", "c", "d"}  # this call's vectors, for the run to store
    assert np.allclose(f.vectors["c"], _unit(20))


def test_a_clip_like_an_earlier_one_and_a_better_one_names_the_earlier():
    ctx = PlantedContext({"best": _unit(0), "worse": _unit(1)})
    ctx.earlier = _earlier({"old": 2.0})
    recs = [_rec("best", 0.9), _rec("worse", 0.8)]
    f = DedupFilter(threshold=0.95)
    f(recs, ctx)
    assert f.duplicate_of == {"best": "old", "worse": "old"}  # earlier clips rank first


def test_without_earlier_clips_nothing_changes_and_a_wrong_frame_count_is_an_error():
    ctx = PlantedContext({"a": _unit(0), "b": _unit(1)})
    ctx.earlier = _earlier({}, frames=4)
    recs = [_rec("a", 0.9), _rec("b", 0.8)]
    DedupFilter()(recs, ctx)
    assert [r.reason for r in recs] == [None, "duplicate"]
    ctx.earlier = _earlier({"old": 0.0}, frames=8)
    with pytest.raises(ValueError, match="8"):
        DedupFilter(frames=4)(reset_drops(recs), ctx)
    with pytest.raises(ValueError, match="keys need"):
        EarlierClips(["x"], np.zeros((2, 3)), 4)


def test_a_real_clip_repeating_an_earlier_runs_clip_is_dropped(tmp_path):
    old = make_clip(tmp_path / "old", "old", "testsrc2", similarity=0.9, video_id="a")
    new = make_clip(tmp_path, "new", "mandelbrot", similarity=0.8, video_id="c")
    again = make_clip(tmp_path, "again", "testsrc2", similarity=0.95, video_id="b")
    shutil.copy(old.mp4, again.mp4)
    ctx = FilterContext(embedder=PixelEmbedder())
    f = DedupFilter()
    vector = f.embed(old, ctx)
    ctx.earlier = {f.frames: EarlierClips(["old"], vector[None], f.frames)}
    f([again, new], ctx)
    assert (again.reason, new.reason) == ("duplicate", None)
    assert f.duplicate_of == {"again": "old"} and again.scores["dup_similarity"] > 0.999


def test_the_lowest_threshold_without_earlier_clips_names_no_earlier_key():
    ctx = PlantedContext({"a": _unit(0), "b": _unit(120)})
    recs = [_rec("a", 0.9), _rec("b", 0.8)]
    f = DedupFilter(threshold=-1.0)  # everything is a look-alike of the best clip
    f(recs, ctx)
    assert f.duplicate_of == {"b": "a"} and recs[0].status == "ok"
