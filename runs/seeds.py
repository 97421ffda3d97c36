"""The seed stage: read the seed table, embed the pictures chunk by chunk, merge into the index.

:func:`plan_seeds` decides (reuse the saved embeddings, or embed these
chunks); :func:`embed_seed_chunk` embeds one chunk into its own file, so
chunks run anywhere (threads, Dask workers) and a killed run keeps the
chunks it finished; :func:`merge_seed_chunks` joins them in order into
``seeds.parquet``, ``seeds.npy``, the index and, last, ``seeds.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from media.images import DEFAULT_MAX_PIXELS
from miners.embedders import Embedder, fingerprint, get_embedder
from miners.index import SeedIndex
from miners.remote import DEFAULT_PROTOCOLS
from miners.seeds import Seed, load_seed_images, read_seeds
from runs.folder import RunFolder
from runs.progress import stage_bar
from runs.records import SeedPlan, SeedsMeta
from shards.writer import atomic_write_bytes, write_table

log = logging.getLogger(__name__)

SEED_BATCH = 256  # seed pictures embedded at once


def _seed_table_hash(seeds: list[Seed]) -> str:
    h = hashlib.sha1()
    for s in seeds:
        h.update(f"{s.id}\t{s.caption}\t{s.image}\t{s.error}\n".encode())
    return h.hexdigest()


def plan_seeds(
    folder: RunFolder,
    seeds_path: str,
    *,
    embedder: str,
    device: str = "auto",
    index: str = "auto",
    chunk: int = 10000,
) -> SeedPlan:
    """Read the seed table and decide: reuse the saved embeddings, or embed these chunks.

    The saved ones are reused when ``seeds.json`` was made from the same seed
    table, embedder and index kind (its fingerprint).
    """
    seeds = read_seeds(seeds_path)
    model = get_embedder(embedder, device)
    fp = hashlib.sha1(
        f"{_seed_table_hash(seeds)}|{fingerprint(embedder, model)}|{index}".encode()
    ).hexdigest()
    plan = SeedPlan(fingerprint=fp, n_seeds=len(seeds), dim=model.dim, image_size=model.image_size)
    saved = folder.seeds_meta()
    if saved is not None and saved.fingerprint == fp:
        log.info("seeds: reusing %d embeddings in %s", saved.n_ok, folder.root)
        plan.reuse = saved
        return plan
    plan.chunks = [[i, min(i + chunk, len(seeds))] for i in range(0, len(seeds), chunk)]
    return plan


def embed_seed_chunk(
    folder: RunFolder,
    seeds_path: str,
    fp: str,
    start: int,
    stop: int,
    *,
    embedder: str,
    device: str = "auto",
    workers: int = 16,
    timeout: float = 10.0,
    progress: bool = False,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    allowed_protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    block_private_addresses: bool = False,
) -> str:
    """Load and embed seeds ``[start, stop)``; write their rows and vectors to one ``.npz``.

    A chunk already written (same fingerprint) is not redone. A seed that
    cannot be loaded is a row with its error and no vector (``row`` -1).
    """
    path = folder.seed_chunk(fp, start)
    if path.exists():
        return str(path)
    every = read_seeds(seeds_path)
    seeds = every[start:stop]
    model = get_embedder(embedder, device)
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    batch: list[tuple[int, np.ndarray]] = []
    # one bar when one chunk holds every seed; else a bar a chunk, named by its rows
    desc = "seeds" if len(seeds) == len(every) else f"seeds {start}-{start + len(seeds)}"
    bar = stage_bar(desc, len(seeds), "images", progress)
    guards = {"max_image_pixels": max_image_pixels, "allowed_protocols": allowed_protocols,
              "block_private_addresses": block_private_addresses}  # fmt: skip
    for i, image, error in load_seed_images(
        seeds, model.image_size, workers=workers, timeout=timeout, **guards
    ):
        s = seeds[i]
        rows.append({"id": s.id, "caption": s.caption, "image": s.image,
                     "status": "failed" if error else "ok", "error": error, "row": -1})  # fmt: skip
        if image is not None:
            batch.append((i, image))
        if len(batch) >= SEED_BATCH:
            _embed_batch(model, batch, rows, vectors)
        bar.update(1)
    _embed_batch(model, batch, rows, vectors)
    bar.close()
    emb = np.concatenate(vectors) if vectors else np.zeros((0, model.dim), np.float32)
    buf = io.BytesIO()
    np.savez(buf, emb=emb, rows=np.array(json.dumps(rows)))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _embed_batch(model: Embedder, batch: list, rows: list[dict], vectors: list) -> None:
    """Embed a batch of loaded seed images; each seed row learns its row in its chunk."""
    if not batch:
        return
    first = sum(len(v) for v in vectors)
    vectors.append(model.embed_images(np.stack([a for _, a in batch])))
    for k, (i, _) in enumerate(batch):
        rows[i]["row"] = first + k
    batch.clear()


def merge_seed_chunks(
    folder: RunFolder,
    plan: SeedPlan,
    chunk_files: list[str],
    *,
    embedder: str,
    index: str = "auto",
) -> SeedsMeta:
    """Join the chunks in order into ``seeds.parquet``, ``seeds.npy``, the index and,
    last, ``seeds.json``; then remove the chunks. Needs no model: ``plan`` knows the widths."""
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    for f in chunk_files:
        with np.load(f) as z:
            part, emb = json.loads(str(z["rows"])), z["emb"]
        first = sum(len(v) for v in vectors)
        for r in part:
            r["row"] = first + r["row"] if r["row"] >= 0 else -1
        rows.extend(part)
        vectors.append(emb)
    emb = np.concatenate(vectors) if vectors else np.zeros((0, plan.dim), np.float32)
    folder.root.mkdir(parents=True, exist_ok=True)
    SeedIndex(emb, kind=index).save(folder.root)
    write_table(folder.path("seeds.parquet"), rows)
    n_failed = sum(r["status"] != "ok" for r in rows)
    meta = SeedsMeta(fingerprint=plan.fingerprint, embedder=embedder, dim=plan.dim,
                     image_size=plan.image_size, n_seeds=len(rows), n_ok=len(rows) - n_failed,
                     n_failed=n_failed)  # fmt: skip
    folder.save_seeds_meta(meta)
    folder.clear_seed_chunks()
    if n_failed:
        log.warning("seeds: %d of %d could not be read (see seeds.parquet)", n_failed, len(rows))
    return meta
