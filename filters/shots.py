"""Shot boundaries: a clip should be one shot.

:func:`media.cuts.detect_cuts` finds hard cuts in the clip's mp4 (whatever lies
on either side of them: noise, fast texture, a busy or a calm shot). A window
that crosses a cut is shrunk to the shot holding the match (the frame the
caption was transferred to), and the clip's media are re-cut to it through
the context's ``recut`` hook; when that shot is shorter than
``min_clip_seconds`` the clip is dropped as ``crosses_cut``.

Scores: ``n_cuts`` (cuts inside the window as the miner cut it), and
``shot_start``/``shot_end`` (source seconds) of the shot holding the match.
Run this filter first: scores of the other filters describe the media as they
were when scored, and a re-cut changes them.
"""

from __future__ import annotations

import logging

from filters.base import Filter, FilterContext
from media import MediaError
from media.cuts import detect_cuts, shot_at
from media.probe import duration
from shards.record import STATUS_FAILED, ClipRecord

log = logging.getLogger(__name__)

SNAP = 0.05  # seconds: a window this close to the shot is already the shot


class ShotsFilter(Filter):
    name = "shots"
    score_names = ("n_cuts", "shot_start", "shot_end")

    # seconds: the shot holding the match must last this long; else crosses_cut
    min_clip_seconds: float = 3.0
    # The cut detector's tuning (media.cuts.DEFAULTS; its module doc says what each weighs).
    fps: float = 25.0  # frames a second decoded (the clip's own rate when lower)
    window: int = 4  # frames on each side whose median change is the typical change
    ratio: float = 3.0  # a cut changes at least this many times the typical change
    thumb_floor: float = 10.0  # grey levels (0-255): least change of the 16x9 colour thumbnail
    hist_floor: float = 0.3  # total variation (0-1): least change of the colour histograms
    min_gap: float = 0.2  # seconds: of two cuts closer than this, the stronger one is kept

    def validate(self) -> None:
        for name in ("min_clip_seconds", "thumb_floor", "hist_floor", "min_gap"):
            if getattr(self, name) < 0:
                self.fail(name, "must be >= 0")
        for name in ("fps", "window", "ratio"):
            if getattr(self, name) <= 0:
                self.fail(name, "must be > 0")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.mp4:
            raise MediaError(f"{record.key}: no mp4")
        seconds = duration(record.mp4)
        cuts = detect_cuts(
            record.mp4, 0.0, seconds, fps=self.fps, window=self.window, ratio=self.ratio,
            thumb_floor=self.thumb_floor, hist_floor=self.hist_floor, min_gap=self.min_gap,
        )  # fmt: skip
        holding = shot_at(record.match_time - record.start, cuts, 0.0, seconds)
        return {
            "n_cuts": float(len(cuts)),
            "shot_start": record.start + holding[0],
            "shot_end": record.start + holding[1],
        }

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if scores["shot_end"] - scores["shot_start"] < self.min_clip_seconds:
            return "crosses_cut"
        return None

    def accept(self, record: ClipRecord, scores: dict[str, float], context: FilterContext) -> None:
        """Shrink a window that crosses a cut to its shot (once: a re-run finds it done)."""
        start, end = scores["shot_start"], scores["shot_end"]
        if start <= record.start + SNAP and end >= record.end - SNAP:
            return
        start, end = max(start, record.start), min(end, record.end)
        try:
            context.recutter()(record, start, end)
        except Exception as e:  # a clip that cannot be re-cut is a failed clip, not a failed run
            record.status, record.error = (
                STATUS_FAILED,
                f"recut to shot [{start:.3f}, {end:.3f}): {e}",
            )
            self.n_errors += 1
            log.warning("filter shots: cannot recut %s: %s", record.key, e)
            return
        if record.cut is not None:
            record.cut = "exact"  # a copied clip trimmed to its shot is re-encoded
        self.n_recut += 1

    def reset_stats(self) -> None:
        super().reset_stats()
        self.n_recut = 0

    def stats(self) -> dict:
        return {**super().stats(), "recut": self.n_recut}
