"""Shot boundaries: a clip should be one shot.

PySceneDetect's ContentDetector finds hard cuts in the clip's mp4. A window
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
from shards.record import STATUS_FAILED, ClipRecord

log = logging.getLogger(__name__)

SNAP = 0.05  # seconds: a window this close to the shot is already the shot


def shot_bounds(mp4: str, threshold: float, min_scene_seconds: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each shot of ``mp4``, covering the whole clip."""
    from scenedetect import ContentDetector, detect

    # It says "Detecting scenes..." at INFO for every clip: noise in a mining log.
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)
    detector = ContentDetector(threshold=threshold, min_scene_len=f"{min_scene_seconds}s")
    scenes = detect(mp4, detector, start_in_scene=True)
    return [(a.seconds, b.seconds) for a, b in scenes]


class ShotsFilter(Filter):
    name = "shots"
    score_names = ("n_cuts", "shot_start", "shot_end")

    # seconds: the shot holding the match must last this long; else crosses_cut
    min_clip_seconds: float = 3.0
    threshold: float = 27.0  # ContentDetector's own default (HSV change score, 0-255)
    min_scene_seconds: float = 0.5  # seconds: a flash shorter than this is not a shot

    def validate(self) -> None:
        if self.min_clip_seconds < 0:
            self.fail("min_clip_seconds", "must be >= 0")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.mp4:
            raise MediaError(f"{record.key}: no mp4")
        shots = shot_bounds(record.mp4, self.threshold, self.min_scene_seconds)
        if not shots:
            raise MediaError(f"{record.key}: scenedetect read no frame")
        at = record.match_time - record.start
        holding = next((s for s in shots if s[0] <= at < s[1]), shots[-1] if at >= 0 else shots[0])
        return {
            "n_cuts": float(len(shots) - 1),
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
        self.n_recut += 1

    def reset_stats(self) -> None:
        super().reset_stats()
        self.n_recut = 0

    def stats(self) -> dict:
        return {**super().stats(), "recut": self.n_recut}
