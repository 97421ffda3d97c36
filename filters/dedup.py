"""Near-duplicate clips: keep the best of each group of look-alikes.

A batch decision over every record given (hand it the whole run to dedup
across shards). A clip's embedding is the mean of a few frames' image
embeddings, normalised; pairs at cosine >= ``threshold`` are found with a faiss
``IndexFlatIP`` (exact, on unit vectors). Records are visited best first
(match similarity, then key): each one still kept drops every later
look-alike as ``duplicate``. Greedy from the best, not connected components,
so a chain of gradually changing clips is not collapsed into one.

What was kept instead is recorded twice: ``scores["dup_similarity"]`` (cosine
to the kept clip, a float like every score, so it reaches the parquet) and
``self.duplicate_of`` (dropped key -> kept key), reported by ``stats()``.
Every ok record also gets ``dup_max_similarity``: its closest look-alike's
cosine, to choose a threshold from later. Both are computed with the greedy
pass, over the clips given, on every call; the verdict then reads the scores
alone: a clip carrying ``dup_similarity`` is a look-alike of a kept clip.

Cost: a flat index compares every pair, fine up to some tens of thousands of
clips; a bigger run wants an IVF index and batched range queries.
"""

from __future__ import annotations

import numpy as np

from filters.base import Filter, FilterContext
from shards.record import ClipRecord


class DedupFilter(Filter):
    name = "dedup"
    run_level = True
    score_names = ("dup_max_similarity",)
    needs_embedder = True

    threshold: float = 0.95  # cosine of clip embeddings; at or above -> duplicate
    frames: int = 4  # frames embedded per clip

    def validate(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            self.fail("threshold", f"must be within [-1, 1], not {self.threshold}")
        if self.frames < 1:
            self.fail("frames", "must be at least 1")

    def reset_stats(self) -> None:
        super().reset_stats()
        self.duplicate_of: dict[str, str] = {}

    def stats(self) -> dict:
        return {**super().stats(), "duplicate_of": dict(self.duplicate_of)}

    def embed(self, record: ClipRecord, context: FilterContext) -> np.ndarray:
        v = context.frame_embeddings(record, self.frames).mean(axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def score_batch(self, records: list[ClipRecord], context: FilterContext) -> list[ClipRecord]:
        """Score every clip against all the others, greedily from the best.

        Gives back each kept clip followed by the look-alikes it drops, the order
        the verdicts are taken in.
        """
        import faiss

        clips, vectors = [], []
        for r in sorted(records, key=lambda r: (-r.similarity, r.key)):
            try:
                vectors.append(self.embed(r, context))
            except Exception as e:  # a bad clip is data: it fails and takes no part
                self.score_failed(r, e)
                continue
            clips.append(r)
        self.n_scored += len(clips)
        if not clips:
            return []
        for r in clips:  # a verdict of an earlier call is not this call's
            r.scores.pop("dup_similarity", None)
        x = np.ascontiguousarray(np.stack(vectors), dtype=np.float32)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        # range_search keeps sims > radius; step just below the bound to keep ">=".
        lims, sims, ids = index.range_search(x, float(np.nextafter(self.threshold, -2.0)))
        near_sims, near_ids = index.search(x, min(2, len(clips)))
        order: list[ClipRecord] = []
        duplicates: set[int] = set()
        for i, r in enumerate(clips):
            nearest = [float(s) for s, j in zip(near_sims[i], near_ids[i], strict=True) if j != i]
            r.scores["dup_max_similarity"] = nearest[0] if nearest else -1.0
            if i in duplicates:
                continue  # a look-alike of a better clip, already placed after it
            order.append(r)
            row = slice(lims[i], lims[i + 1])
            for j, s in zip(ids[row], sims[row], strict=True):
                j = int(j)
                if j > i and j not in duplicates:
                    other = clips[j]
                    other.scores["dup_similarity"] = float(s)
                    self.duplicate_of[other.key] = r.key
                    duplicates.add(j)
                    order.append(other)
        return order

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        # dup_similarity is set (at or above the threshold) on the look-alikes of a kept clip only
        if scores.get("dup_similarity", -2.0) >= self.threshold:
            return "duplicate"
        return None
