"""Caption rules: length in words, and patterns that mark a caption as unusable.

Scores are cheap and depend on the patterns, so they are always recomputed:
``caption_words`` and ``caption_pattern`` (1.0 when a reject pattern matched).
Patterns are Python regular expressions searched anywhere in the caption
(``(?i)`` for case-insensitive).
"""

from __future__ import annotations

import re

from filters.base import Filter, FilterContext
from shards.record import ClipRecord


class TextFilter(Filter):
    name = "text"
    score_names = ("caption_words", "caption_pattern")

    min_words: int = 2  # words; fewer -> short_caption
    max_words: int = 60  # words; more -> long_caption (CLIP reads 77 tokens at most)
    reject_patterns: tuple[str, ...] = ()  # regexes; any match -> caption_pattern

    def validate(self) -> None:
        if self.min_words < 0 or self.max_words < self.min_words:
            self.fail("max_words", f"must be >= min_words ({self.min_words}) >= 0")
        self._patterns = []
        for p in self.reject_patterns:
            try:
                self._patterns.append(re.compile(p))
            except re.error as e:
                self.fail("reject_patterns", f"has a bad regex {p!r}: {e}")

    def is_scored(self, record: ClipRecord) -> bool:
        return False  # a word count is cheaper than remembering which patterns scored it

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        caption = record.caption
        hit = any(p.search(caption) for p in self._patterns)
        return {"caption_words": float(len(caption.split())), "caption_pattern": float(hit)}

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if scores["caption_pattern"]:
            return "caption_pattern"
        if scores["caption_words"] < self.min_words:
            return "short_caption"
        if scores["caption_words"] > self.max_words:
            return "long_caption"
        return None
