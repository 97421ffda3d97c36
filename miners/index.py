"""The seed index: faiss inner product over unit seed embeddings, searched by threshold.

Up to about a million seeds the index is exact (``IndexFlatIP``). Beyond, an
``IndexIVFFlat`` scans only the ``nprobe`` inverted lists whose centroids lie
nearest each query: its scores stay exact (no PQ, which biases range thresholds
low), but a pair whose seed sits in an unprobed list is missed. That recall is
what ``bench/index_recall.py`` measures.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from shards.writer import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "auto")
AUTO_IVF_FROM = 1_000_000  # seeds; DESIGN: IndexFlatIP up to about a million
MAX_NLIST = 65_536
MIN_POINTS_PER_LIST = 39  # faiss warns (and k-means degrades) below 39 training points a list
TRAIN_POINTS_PER_LIST = 40  # k-means sample: just above faiss's floor; training is most of a build
SIDECAR = "seeds.index.json"


def default_nlist(n: int) -> int:
    """About 4·sqrt(N) lists, lowered so each list gets at least 39 training points."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST, MAX_NLIST)))


def default_nprobe(nlist: int) -> int:
    """A 64th of the lists, at least 8: recall about 0.999 at a few times flat's speed.

    bench/index_recall.py on clustered 512-d seeds: 200k seeds, 1789 lists,
    nprobe 27: recall 0.9993 of the flat pairs at 2.6x flat's queries/s; 1M
    seeds, 4000 lists, nprobe 62: recall 1.0 at 1.45x. A 16th of the lists
    would be slower than flat (0.4-0.9x) for no measurable recall.
    """
    return int(min(nlist, max(8, nlist // 64)))


class SeedIndex:
    """Inner-product search of frames against seeds, flat (exact) or IVF-Flat.

    Both sides are unit vectors, so inner product is cosine similarity and a
    range search returns the (frame, seed) pairs at or above the threshold:
    all of them for ``kind="flat"``, those in the probed lists for ``"ivf"``.
    ``"auto"`` is flat below ``AUTO_IVF_FROM`` seeds, IVF from there.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        threads: int | None = None,
        kind: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
    ):
        import faiss

        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        if threads:
            faiss.omp_set_num_threads(threads)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"seed embeddings must be 2-D, got shape {emb.shape}")
        self.embeddings = emb
        if kind == "auto":
            kind = "ivf" if len(emb) >= AUTO_IVF_FROM else "flat"
        if kind == "ivf" and len(emb) == 0:
            kind = "flat"  # nothing to train on; an empty flat index answers the same
        self.kind = kind
        if kind == "flat":
            self.index = faiss.IndexFlatIP(emb.shape[1])
            if len(emb):
                self.index.add(emb)
        else:
            self.index = self._build_ivf(emb, nlist, nprobe)

    @staticmethod
    def _build_ivf(emb: np.ndarray, nlist: int | None, nprobe: int | None):
        """Train an ``IndexIVFFlat`` (inner product) on a sample, then add every seed."""
        import faiss

        n, d = emb.shape
        cap = max(1, min(n // MIN_POINTS_PER_LIST, MAX_NLIST))
        if nlist is None:
            nlist = default_nlist(n)
        elif nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {nlist}")
        elif nlist > cap:
            log.info(
                "nlist %d lowered to %d: %d seeds train at most that many lists", nlist, cap, n
            )
            nlist = cap
        if nprobe is None:
            nprobe = default_nprobe(nlist)
        elif nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        # index_factory's default metric is L2: inner product must be asked for
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        n_train = min(n, TRAIN_POINTS_PER_LIST * nlist)
        sample = emb
        if n_train < n:
            rows = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
            sample = emb[rows]
        index.train(sample)
        index.add(emb)
        faiss.extract_index_ivf(index).nprobe = nprobe
        log.info("IVF seed index: %d seeds, nlist %d, nprobe %d", n, nlist, nprobe)
        return index

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return self.index.ntotal

    def _ivf(self):
        import faiss

        return faiss.extract_index_ivf(self.index)

    @property
    def nlist(self) -> int | None:
        """Inverted lists of an IVF index; ``None`` for flat."""
        return int(self._ivf().nlist) if self.kind == "ivf" else None

    @property
    def nprobe(self) -> int | None:
        """Lists scanned per query by an IVF index (more: higher recall, slower); ``None`` for flat."""
        return int(self._ivf().nprobe) if self.kind == "ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise ValueError("nprobe applies to an IVF index only")
        if value < 1:
            raise ValueError(f"nprobe must be >= 1, got {value}")
        self._ivf().nprobe = int(value)

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if len(q) and q.shape[1] != self.dim:
            raise ValueError(f"frame embeddings have width {q.shape[1]}, seed index {self.dim}")
        return q

    def search(
        self, queries: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query row, seed row, similarity) with similarity >= threshold, as three arrays."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if len(q) == 0 or len(self) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float32)
        q = self._queries(q)
        # range_search keeps d > radius; step just below so ``threshold`` itself counts
        lims, sims, seeds = self.index.range_search(
            q, float(np.nextafter(np.float32(threshold), -1))
        )
        rows = np.repeat(np.arange(len(q)), np.diff(lims.astype(np.int64)))
        return rows.astype(np.int64), seeds.astype(np.int64), sims.astype(np.float32)

    def search_knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar seeds of each query: ``(sims, seed_rows)``, each (queries, k).

        Best first; where fewer than ``k`` seeds are reachable (few seeds, or an
        IVF index whose probed lists hold fewer), the tail is ``-inf`` and ``-1``.
        """
        q = self._queries(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(q) == 0 or len(self) == 0:
            return (
                np.full((len(q), k), -np.inf, dtype=np.float32),
                np.full((len(q), k), -1, dtype=np.int64),
            )
        sims, seeds = self.index.search(q, k)
        sims = np.where(seeds < 0, -np.inf, sims).astype(np.float32)
        return sims, seeds.astype(np.int64)

    def params(self) -> dict:
        """What ``load`` needs besides the faiss file: kind, sizes, IVF parameters."""
        return {"kind": self.kind, "ntotal": len(self), "dim": self.dim,
                "nlist": self.nlist, "nprobe": self.nprobe}  # fmt: skip

    def save(self, out_dir: Path) -> None:
        """``seeds.npy``, ``seeds.index`` and ``seeds.index.json`` in ``out_dir``, each renamed
        into place; the JSON last, so its presence means the other two are whole."""
        import faiss

        out_dir = Path(out_dir)
        buf = io.BytesIO()
        np.save(buf, self.embeddings)
        atomic_write_bytes(out_dir / "seeds.npy", buf.getvalue())
        atomic_write_bytes(out_dir / "seeds.index", faiss.serialize_index(self.index).tobytes())
        atomic_write_json(out_dir / SIDECAR, self.params())

    @classmethod
    def load(cls, out_dir: Path, threads: int | None = None) -> SeedIndex:
        """The index ``save`` wrote, read back as faiss wrote it (an IVF index is not retrained).

        Without ``seeds.index.json`` (an output from before IVF) the flat index
        is rebuilt from ``seeds.npy``, as it always was.
        """
        import faiss

        out_dir = Path(out_dir)
        # mapped, not read: the faiss index holds its own copy of every seed
        emb = np.load(out_dir / "seeds.npy", mmap_mode="r")
        sidecar = out_dir / SIDECAR
        if not sidecar.exists():
            return cls(emb, threads=threads, kind="flat")
        params = json.loads(sidecar.read_text())
        if threads:
            faiss.omp_set_num_threads(threads)
        index = faiss.read_index(str(out_dir / "seeds.index"))
        if index.ntotal != len(emb) or index.d != emb.shape[1] or params["ntotal"] != len(emb):
            raise ValueError(
                f"{out_dir}: seeds.index holds {index.ntotal}x{index.d}, seeds.npy "
                f"{emb.shape}, {SIDECAR} {params['ntotal']} seeds: written by different runs"
            )
        self = cls.__new__(cls)
        self.embeddings = np.ascontiguousarray(emb, dtype=np.float32)
        self.kind = params["kind"]
        self.index = index
        if self.kind == "ivf":
            self.nprobe = int(params["nprobe"])
        return self


class TorchSearch:
    """Threshold search by a matrix product on a torch device: the exact (flat) pairs.

    On a GPU this keeps a batch's embeddings where they were made: only the
    hits come back to the host. The answer is flat search's, whatever the
    :class:`SeedIndex` kind (an IVF index would miss pairs in unprobed lists);
    similarities agree with faiss's to float32 rounding (as long as float32
    matrix products are not allowed TF32, torch's default).
    """

    CHUNK = 1 << 27  # similarities computed at once (512 MB of float32)

    def __init__(self, embeddings: np.ndarray, device: str = "cpu"):
        import torch

        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.seeds = torch.from_numpy(emb).to(device)

    @staticmethod
    def fits(embeddings: np.ndarray, device: str, share: float = 0.25) -> bool:
        """Whether the seed matrix takes under ``share`` of the device's free memory."""
        import torch

        if not device.startswith("cuda"):
            return True
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return embeddings.size * 4 < share * free

    def search(self, queries, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`SeedIndex.search`: (query row, seed row, similarity) at or above
        ``threshold``, ordered by query row then seed row. ``queries`` is a tensor or array."""
        import torch

        q = torch.as_tensor(queries).to(self.seeds.device, torch.float32)
        n_seeds = len(self.seeds)
        if len(q) == 0 or n_seeds == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float32)
        if q.shape[1] != self.seeds.shape[1]:
            raise ValueError(
                f"frame embeddings have width {q.shape[1]}, seeds {self.seeds.shape[1]}"
            )
        limit = float(np.float32(threshold))  # compared in float32, as faiss does
        step = max(1, self.CHUNK // len(q))
        parts = []
        for s0 in range(0, n_seeds, step):
            sims = q @ self.seeds[s0 : s0 + step].T
            rows, cols = torch.nonzero(sims >= limit, as_tuple=True)
            parts.append((rows, cols + s0, sims[rows, cols]))
        rows, seeds, sims = (torch.cat(p).cpu().numpy() for p in zip(*parts, strict=True))
        order = np.lexsort((seeds, rows))
        return rows[order].astype(np.int64), seeds[order].astype(np.int64), sims[order]
