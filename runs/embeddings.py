"""Clip embeddings kept beside the shards, so a later run's ``dedup`` compares with earlier runs.

``OUT/embeddings/NNNNN.npz`` holds the vectors the dedup filter made for shard
NNNNN's kept clips: ``keys``, ``vectors`` ((n, dim) float32, unit rows) and
``meta`` (the embedder spec, its fingerprint, frames per clip). They are
written by :func:`runs.stages.filter_run` when the run-level filters finish,
before any shard of the run is written: the vectors exist then (in the dedup
filter) and nowhere later, so nothing travels through the staging folders and
the shard writer stays as it is. The file is written atomically, as a zip with
fixed timestamps: the same vectors give the same bytes, so a resumed run ends
with the files a clean one writes.

A new run reads them for the shards of finished runs
(:meth:`runs.folder.RunFolder.earlier_shards`). A shard whose file is missing
(a run from before these files, or one without dedup), made with another
embedder or frame count, or lacking some kept clip has those clips embedded
again from its tar's mp4 (extracted to a temporary folder, one at a time), and
its file rewritten with them: the cost is paid once. A kept clip whose media
cannot be read is counted as not compared, and said so.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filters.base import EarlierClips
from runs.folder import RunFolder
from shards.record import STATUS_OK, ClipRecord

log = logging.getLogger(__name__)

Embed = Callable[[ClipRecord], np.ndarray]  # a clip's unit vector, from its mp4
_EPOCH = (1980, 1, 1, 0, 0, 0)  # every member's zip timestamp: equal vectors, equal bytes


@dataclass(frozen=True)
class MadeWith:
    """What a clip vector depends on: the embedder (spec and fingerprint) and frames per clip."""

    embedder: str
    fingerprint: str
    frames: int


@dataclass
class StoredVectors:
    """One ``embeddings/NNNNN.npz``."""

    keys: list[str]
    vectors: np.ndarray  # (len(keys), dim) float32, unit rows
    made: MadeWith

    def to_bytes(self) -> bytes:
        """The ``.npz`` file (numpy's format), with fixed member timestamps."""
        meta = {"embedder": self.made.embedder, "fingerprint": self.made.fingerprint,
                "frames": self.made.frames, "format": 1}  # fmt: skip
        arrays = {"keys": np.array(self.keys, dtype=str),
                  "vectors": np.ascontiguousarray(self.vectors, dtype=np.float32),
                  "meta": np.array(json.dumps(meta, sort_keys=True))}  # fmt: skip
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, array in arrays.items():
                with z.open(zipfile.ZipInfo(f"{name}.npy", _EPOCH), "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def read(cls, path: Path) -> StoredVectors | None:
        """The file at ``path``; None when it is missing or unreadable (logged: its clips
        are embedded again)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                keys = [str(k) for k in z["keys"]]
                vectors = np.asarray(z["vectors"], dtype=np.float32)
            made = MadeWith(str(meta["embedder"]), str(meta["fingerprint"]), int(meta["frames"]))
            if vectors.ndim != 2 or len(vectors) != len(keys):
                raise ValueError(f"{len(keys)} keys but vectors of shape {vectors.shape}")
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            log.warning("%s cannot be read (%s); its clips are embedded again", path, e)
            return None
        return cls(keys, vectors, made)


def save_vectors(
    folder: RunFolder, index: int, keys: list[str], vectors: dict[str, np.ndarray], made: MadeWith
) -> None:
    """Store the vectors of ``keys`` (each in ``vectors``) as shard ``index``'s file."""
    dim = next(iter(vectors.values())).shape[0] if vectors else 0
    array = np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)
    folder.save_embeddings(index, StoredVectors(keys, array, made).to_bytes())


def store_kept(
    folder: RunFolder,
    shards: list[tuple[int, list[ClipRecord]]],
    vectors: dict[str, np.ndarray],
    made: MadeWith,
) -> None:
    """After the run-level filters: each shard's file with the vectors of its kept clips."""
    for index, records in shards:
        keys = [r.key for r in records if r.status == STATUS_OK and r.key in vectors]
        save_vectors(folder, index, keys, vectors, made)


def load_earlier(
    folder: RunFolder, shards: list[int], embed: Embed, made: MadeWith, *, dim: int,
    store: bool = True,
) -> EarlierClips:  # fmt: skip
    """The kept clips of the written ``shards`` as :class:`EarlierClips`: stored vectors
    made the same way, the others embedded from the shards' mp4 (and, with ``store``,
    written back to their shard's file)."""
    keys: list[str] = []
    vectors: list[np.ndarray] = []
    counts = {"stored": 0, "embedded": 0, "not_compared": 0}
    for index in shards:
        have, kept, n_stored = _shard_vectors(folder, index, embed, made, dim, store)
        shard_keys = [k for k in kept if k in have]
        keys += shard_keys
        vectors += [have[k] for k in shard_keys]
        counts["stored"] += n_stored
        counts["embedded"] += len(shard_keys) - n_stored
        counts["not_compared"] += len(kept) - len(shard_keys)
    level = logging.WARNING if counts["not_compared"] else logging.INFO
    if shards:
        log.log(level, "dedup: %d kept clips of earlier runs to compare with (%d stored vectors, "
                "%d embedded again from their shards); %d could not be compared", len(keys),
                counts["stored"], counts["embedded"], counts["not_compared"])  # fmt: skip
    array = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
    return EarlierClips(keys, array, made.frames, not_compared=counts["not_compared"])


def _shard_vectors(
    folder: RunFolder, index: int, embed: Embed, made: MadeWith, dim: int, store: bool
) -> tuple[dict[str, np.ndarray], list[str], int]:
    """(vectors by key, the shard's kept keys, how many vectors were stored already)."""
    import pandas as pd  # lazily, as runs.folder does: a command's start-up does not need it

    rows = pd.read_parquet(folder.shard_file(index, ".parquet")).to_dict("records")
    kept = {str(r["key"]): r for r in rows if r["status"] == STATUS_OK}
    stored = StoredVectors.read(folder.embedding_file(index))
    have: dict[str, np.ndarray] = {}
    if stored is not None and stored.made == made and stored.vectors.shape[1] == dim:
        have = {k: v for k, v in zip(stored.keys, stored.vectors, strict=True) if k in kept}
    n_stored = len(have)
    missing = [k for k in kept if k not in have]
    if missing:
        fresh = _embed_from_tar(folder.shard_file(index, ".tar"), missing, kept, embed)
        have.update(fresh)
        if store and fresh:  # paid once: the next run finds them stored
            save_vectors(folder, index, [k for k in kept if k in have], have, made)
    return have, list(kept), n_stored


def _embed_from_tar(tar: Path, keys: list[str], rows: dict[str, dict], embed: Embed) -> dict:
    """Vectors of ``keys``, embedded from their mp4 in ``tar``; a clip that cannot be read
    is logged and left out."""
    from shards.reader import iter_samples  # lazily: it loads pandas

    wanted: set[str] = set(keys)
    out: dict[str, np.ndarray] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="capmine-earlier-") as tmp:
            for sample in iter_samples(tar):
                key = sample["__key__"]
                if key not in wanted or "mp4" not in sample:
                    continue
                record = ClipRecord.from_row(rows[key])
                record.mp4 = str(Path(tmp) / f"{key}.mp4")
                Path(record.mp4).write_bytes(sample["mp4"])
                try:
                    out[key] = embed(record)
                except Exception as e:  # one unreadable clip is not compared, the run goes on
                    log.warning("dedup: cannot embed %s of %s: %s", key, tar, e)
                Path(record.mp4).unlink()
                wanted.discard(key)
                if not wanted:
                    break
    except Exception as e:  # an unreadable earlier shard: its clips are not compared
        log.warning("dedup: cannot read %s: %s", tar, e)
    return out
