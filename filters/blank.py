"""Blank frames and heavy letterboxing.

``blank_fraction`` is the share of sampled frames that are one flat colour
(black, white, a title card's background): grey standard deviation under
``flat_std`` levels. ``letterbox`` is the share of the picture taken by dark
bars along its edges (top/bottom and left/right, so windowboxing counts too):
rows and columns whose brightest pixel, over all sampled frames, stays under
``dark_level``. A frame entirely dark scores letterbox 0: that is ``blank``'s case.
"""

from __future__ import annotations

import numpy as np

from filters.base import Filter, FilterContext
from media import MediaError
from media.video import read_frames
from shards.record import ClipRecord


def _edge_run(dark: np.ndarray) -> tuple[int, int]:
    """How many entries of a 1-D bool array are True from the start, and from the end."""
    n = len(dark)
    head = n if dark.all() else int(np.argmin(dark))
    tail = n if dark.all() else int(np.argmin(dark[::-1]))
    return head, tail


def blank_scores(frames: np.ndarray, flat_std: float, dark_level: int) -> dict[str, float]:
    """``blank_fraction`` and ``letterbox`` of (N, H, W) grey uint8 frames."""
    f = frames.astype(np.float32)
    flat = f.reshape(len(f), -1).std(axis=1) < flat_std
    brightest = f.max(axis=0)  # a bar is dark in every frame
    rows, cols = brightest.max(axis=1) < dark_level, brightest.max(axis=0) < dark_level
    if rows.all():
        letterbox = 0.0
    else:
        top, bottom = _edge_run(rows)
        left, right = _edge_run(cols)
        h, w = brightest.shape
        active = (h - top - bottom) * (w - left - right)
        letterbox = 1.0 - active / (h * w)
    return {"blank_fraction": float(flat.mean()), "letterbox": float(letterbox)}


class BlankFilter(Filter):
    name = "blank"
    score_names = ("blank_fraction", "letterbox")

    # share of sampled frames that are flat; above -> blank (None: no bound)
    max_blank: float | None = 0.5
    # share of the picture in dark edge bars; above -> letterbox (None: no bound)
    max_letterbox: float | None = 0.4
    flat_std: float = 3.0  # grey levels (0-255): a frame with less spread is flat
    dark_level: int = 24  # grey level (0-255): a bar's brightest pixel stays below it
    frames: int = 8  # frames sampled over the clip
    width: int = 128  # pixels: frames are squeezed to width x height grey for this
    height: int = 128  # pixels

    def validate(self) -> None:
        for p in ("max_blank", "max_letterbox"):
            v = getattr(self, p)
            if v is not None and not 0.0 <= v <= 1.0:
                self.fail(p, f"must be within [0, 1], not {v}")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.mp4:
            raise MediaError(f"{record.key}: no mp4")
        frames = read_frames(record.mp4, self.frames, size=(self.width, self.height), grey=True)
        return blank_scores(frames, self.flat_std, self.dark_level)

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if self.max_blank is not None and scores["blank_fraction"] > self.max_blank:
            return "blank"
        if self.max_letterbox is not None and scores["letterbox"] > self.max_letterbox:
            return "letterbox"
        return None
