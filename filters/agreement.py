"""Caption agreement: does the transferred caption describe the clip, by the embedder?

The caption came from a seed *image* that matched one frame; this asks the
text tower directly. ``caption_similarity`` is the cosine of the caption's
text embedding with a few frames' image embeddings (centre-cropped to the
embedder's ``image_size``), reduced by ``max`` (lenient: one good frame is
enough) or ``mean``. The bound depends on the embedder: CLIP ViT-B-32 gives
matching pairs about 0.25-0.35 and unrelated ones about 0.1-0.2, so the
default 0.1 only drops clear mismatches there; calibrate it for another model.
"""

from __future__ import annotations

import numpy as np

from filters.base import Filter, FilterContext
from shards.record import ClipRecord


class AgreementFilter(Filter):
    name = "agreement"
    score_names = ("caption_similarity",)
    needs_embedder = True

    min_similarity: float | None = 0.1  # cosine; below -> caption_mismatch (None: score only)
    frames: int = 4  # frames embedded per clip
    reduce: str = "max"  # "max" or "mean" over the frames

    def validate(self) -> None:
        if self.reduce not in ("max", "mean"):
            self.fail("reduce", f"must be 'max' or 'mean', not {self.reduce!r}")
        if self.frames < 1:
            self.fail("frames", "must be at least 1")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.caption:
            raise ValueError(f"{record.key}: no caption to compare")
        images = context.frame_embeddings(record, self.frames)
        text = np.asarray(context.embedder.embed_texts([record.caption]), np.float32)[0]
        sims = images @ text
        return {"caption_similarity": float(sims.max() if self.reduce == "max" else sims.mean())}

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if self.min_similarity is not None and scores["caption_similarity"] < self.min_similarity:
            return "caption_mismatch"
        return None
