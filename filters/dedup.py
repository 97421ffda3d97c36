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

Earlier runs on the same OUT: ``context.earlier[frames]`` (:class:`~filters.base.EarlierClips`,
loaded by the run from their stored embeddings) holds their kept clips. They rank above
every clip given: a clip at cosine >= ``threshold`` to one of them is a ``duplicate`` of
it (``duplicate_of`` names the earlier key) and drops nothing itself; they count in
``dup_max_similarity`` too, and are never dropped (their shards are final). Each clip's
vector is kept in ``self.vectors`` (key -> unit vector) so the run can store the kept
ones for the runs after it.

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
        self.vectors: dict[str, np.ndarray] = {}  # every clip embedded, by key (to store the kept)
        self.n_earlier = self.n_earlier_not_compared = 0

    def stats(self) -> dict:
        return {**super().stats(), "duplicate_of": dict(self.duplicate_of),
                "earlier_clips": self.n_earlier,
                "earlier_not_compared": self.n_earlier_not_compared}  # fmt: skip

    def embed(self, record: ClipRecord, context: FilterContext) -> np.ndarray:
        v = context.frame_embeddings(record, self.frames).mean(axis=0)
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def score_batch(self, records: list[ClipRecord], context: FilterContext) -> list[ClipRecord]:
        """Score every clip against earlier runs' kept clips and all the others, greedily
        from the best.

        Earlier clips rank above every clip of this call: a clip like one of them goes
        first (and drops nothing); then each kept clip is given back followed by the
        look-alikes it drops, the order the verdicts are taken in.
        """
        import faiss

        clips, x = self._embed_all(records, context)
        if not clips:
            return []
        earlier_sims, earlier_keys = self._nearest_earlier(x, context)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        # range_search keeps sims > radius; step just below the bound to keep ">=".
        lims, sims, ids = index.range_search(x, float(np.nextafter(self.threshold, -2.0)))
        near_sims, near_ids = index.search(x, min(2, len(clips)))
        order: list[ClipRecord] = []
        duplicates: set[int] = set()
        for i, r in enumerate(clips):
            nearest = [float(s) for s, j in zip(near_sims[i], near_ids[i], strict=True) if j != i]
            r.scores["dup_max_similarity"] = max([float(earlier_sims[i]), *nearest[:1]])
            if earlier_keys[i] is not None and earlier_sims[i] >= self.threshold:
                self._mark(r, earlier_keys[i], float(earlier_sims[i]))
                duplicates.add(i)
                order.append(r)
        for i, r in enumerate(clips):
            if i in duplicates:
                continue  # a look-alike of a better clip, already placed
            order.append(r)
            row = slice(lims[i], lims[i + 1])
            for j, s in zip(ids[row], sims[row], strict=True):
                j = int(j)
                if j > i and j not in duplicates:
                    self._mark(clips[j], r.key, float(s))
                    duplicates.add(j)
                    order.append(clips[j])
        return order

    def _embed_all(
        self, records: list[ClipRecord], context: FilterContext
    ) -> tuple[list[ClipRecord], np.ndarray]:
        """The clips that could be embedded, best match first, and their (n, dim) vectors."""
        clips, vectors = [], []
        for r in sorted(records, key=lambda r: (-r.similarity, r.key)):
            try:
                vectors.append(self.embed(r, context))
            except Exception as e:  # a bad clip is data: it fails and takes no part
                self.score_failed(r, e)
                continue
            clips.append(r)
            r.scores.pop("dup_similarity", None)  # a verdict of an earlier call is not this one's
            self.vectors[r.key] = vectors[-1]
        self.n_scored += len(clips)
        if not clips:
            return [], np.zeros((0, 0), np.float32)
        return clips, np.ascontiguousarray(np.stack(vectors), dtype=np.float32)

    def _nearest_earlier(self, x: np.ndarray, context: FilterContext) -> tuple[np.ndarray, list]:
        """Each clip's cosine to its closest earlier clip, and that clip's key (-1.0 and None
        when there is none)."""
        import faiss

        earlier = context.earlier.get(self.frames)
        if earlier is None and context.earlier:
            raise ValueError(
                f"filter 'dedup': earlier clips were embedded with {sorted(context.earlier)} "
                f"frames per clip, not {self.frames}"
            )
        if earlier is not None:
            self.n_earlier = len(earlier.keys)
            self.n_earlier_not_compared = earlier.not_compared
        if earlier is None or not earlier.keys:
            return np.full(len(x), -1.0, np.float32), [None] * len(x)
        if earlier.vectors.shape[1] != x.shape[1]:
            raise ValueError(
                f"filter 'dedup': earlier clips have {earlier.vectors.shape[1]}-d vectors, "
                f"this run's embedder gives {x.shape[1]}"
            )
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(np.ascontiguousarray(earlier.vectors))
        sims, ids = index.search(x, 1)
        return sims[:, 0], [earlier.keys[int(j)] for j in ids[:, 0]]

    def _mark(self, record: ClipRecord, kept_key: str, similarity: float) -> None:
        """``record`` is a look-alike of ``kept_key`` (kept now or by an earlier run)."""
        record.scores["dup_similarity"] = similarity
        self.duplicate_of[record.key] = kept_key

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        # dup_similarity is set (at or above the threshold) on the look-alikes of a kept clip only
        if scores.get("dup_similarity", -2.0) >= self.threshold:
            return "duplicate"
        return None
