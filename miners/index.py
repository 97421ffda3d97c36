"""The seed index: faiss inner product over unit seed embeddings, searched by threshold."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from shards.writer import atomic_write_bytes

log = logging.getLogger(__name__)


class SeedIndex:
    """Exact inner-product search (``IndexFlatIP``) of frames against seeds.

    Both sides are unit vectors, so inner product is cosine similarity and a
    range search returns exactly the (frame, seed) pairs at or above the
    threshold, with no approximation bias.
    """

    def __init__(self, embeddings: np.ndarray, threads: int | None = None):
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"seed embeddings must be 2-D, got shape {emb.shape}")
        self.embeddings = emb
        self.index = faiss.IndexFlatIP(emb.shape[1])
        if len(emb):
            self.index.add(emb)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return self.index.ntotal

    def search(
        self, queries: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query row, seed row, similarity) with similarity >= threshold, as three arrays."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if len(q) == 0 or len(self) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"frame embeddings have width {q.shape[1]}, seed index {self.dim}")
        # range_search keeps d > radius; step just below so ``threshold`` itself counts
        lims, sims, seeds = self.index.range_search(
            q, float(np.nextafter(np.float32(threshold), -1))
        )
        rows = np.repeat(np.arange(len(q)), np.diff(lims.astype(np.int64)))
        return rows.astype(np.int64), seeds.astype(np.int64), sims.astype(np.float32)

    def save(self, out_dir: Path) -> None:
        """``seeds.npy`` and ``seeds.index`` in ``out_dir``, each renamed into place."""
        import faiss

        buf = io.BytesIO()
        np.save(buf, self.embeddings)
        atomic_write_bytes(Path(out_dir) / "seeds.npy", buf.getvalue())
        atomic_write_bytes(
            Path(out_dir) / "seeds.index", faiss.serialize_index(self.index).tobytes()
        )

    @classmethod
    def load(cls, out_dir: Path, threads: int | None = None) -> SeedIndex:
        return cls(np.load(Path(out_dir) / "seeds.npy"), threads=threads)
