"""Near-duplicates across all records: the best of each group stays."""

from __future__ import annotations

import shutil

from filters.base import FilterChain, FilterContext
from filters.dedup import DedupFilter
from miners.embedders import PixelEmbedder
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
