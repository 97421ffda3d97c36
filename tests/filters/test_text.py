"""Caption rules: word counts and reject patterns."""

from __future__ import annotations

from filters.text import TextFilter
from shards.record import Caption, ClipRecord


def rec(key: str, caption: str) -> ClipRecord:
    return ClipRecord(key=key, video="v", video_id="v", start=0, end=10, match_time=5,
                      similarity=0.9, captions=[Caption("s", caption, 0.9, 5.0)])  # fmt: skip


def test_caption_rules():
    recs = [
        rec("good", "a dog runs along the beach"),
        rec("short", "dog"),
        rec("long", " ".join(["word"] * 61)),
        rec("stock", "Stock Photo of a dog on a beach"),
        rec("empty", ""),
    ]
    f = TextFilter(reject_patterns=[r"(?i)\bstock photo\b"])
    f(recs)
    assert [r.reason for r in recs] == [
        None, "short_caption", "long_caption", "caption_pattern", "short_caption"
    ]  # fmt: skip
    assert recs[0].scores == {"caption_words": 6.0, "caption_pattern": 0.0}


def test_new_patterns_rescore():
    r = rec("x", "click here for a dog")
    TextFilter()([r])
    assert r.status == "ok"
    TextFilter(reject_patterns=["click here"])([r])
    assert r.reason == "caption_pattern"
