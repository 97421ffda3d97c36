"""The mining stages as plain functions over paths: seeds, one video, the clip plan, one shard.

Each stage reads what the previous one left in ``OUT`` and writes its own
result there atomically, so a rerun finds finished work and skips it, and any
orchestrator (the Prefect flow, a Dask cluster, a plain loop) can drive them
passing only paths and small summaries.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miners.embedders import fingerprint, get_embedder
from miners.index import SeedIndex
from miners.matching import Candidate, HitAccumulator, select_clips
from shards.record import STATUS_FAILED, ClipRecord
from shards.writer import (
    atomic_write_bytes,
    atomic_write_json,
    shard_name,
    write_shard,
    write_table,
)

log = logging.getLogger(__name__)

SEED_BATCH = 256


# --------------------------------------------------------------------------- seeds


def _seed_table_hash(seeds: list) -> str:
    h = hashlib.sha1()
    for s in seeds:
        h.update(f"{s.id}\t{s.caption}\t{s.image}\t{s.error}\n".encode())
    return h.hexdigest()


def plan_seeds(
    seeds_path: str,
    out: Path,
    *,
    embedder: str,
    device: str = "auto",
    index: str = "auto",
    chunk: int = 10000,
) -> dict[str, Any]:
    """Read the seed table and decide: reuse the saved embeddings, or embed these chunks.

    Returns ``{"reuse": meta}`` when ``seeds.json`` was made from the same seed
    table, embedder and index kind, else ``{"fingerprint": ..., "chunks": [[start, stop], ...]}``.
    Chunks are embedded independently (on threads, or spread over a Dask cluster).
    """
    from miners.seeds import read_seeds

    out = Path(out)
    seeds = read_seeds(seeds_path)
    model = get_embedder(embedder, device)
    fp = hashlib.sha1(
        f"{_seed_table_hash(seeds)}|{fingerprint(embedder, model)}|{index}".encode()
    ).hexdigest()
    meta_path = out / "seeds.json"
    if meta_path.exists() and (out / "seeds.npy").exists() and (out / "seeds.parquet").exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fp:
            log.info("seeds: reusing %d embeddings in %s", meta["n_ok"], out)
            return {"reuse": meta}
    chunks = [[i, min(i + chunk, len(seeds))] for i in range(0, len(seeds), chunk)]
    return {"fingerprint": fp, "n_seeds": len(seeds), "chunks": chunks,
            "dim": model.dim, "image_size": model.image_size}  # fmt: skip


def chunk_path(out: Path, fp: str, start: int) -> Path:
    return Path(out) / "seed_chunks" / f"{fp[:12]}-{start:010d}.npz"


def embed_seed_chunk(
    seeds_path: str,
    out: Path,
    fp: str,
    start: int,
    stop: int,
    *,
    embedder: str,
    device: str = "auto",
    workers: int = 16,
    timeout: float = 10.0,
    progress: bool = False,
) -> str:
    """Load and embed seeds ``[start, stop)``; write their rows and vectors to one ``.npz``.

    A chunk already written (same fingerprint) is not redone.
    """
    from miners.seeds import load_seed_images, read_seeds

    path = chunk_path(out, fp, start)
    if path.exists():
        return str(path)
    seeds = read_seeds(seeds_path)[start:stop]
    model = get_embedder(embedder, device)
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    batch: list[tuple[int, np.ndarray]] = []
    bar = _progress(len(seeds), "seeds", progress)
    for i, image, error in load_seed_images(
        seeds, model.image_size, workers=workers, timeout=timeout
    ):
        s = seeds[i]
        rows.append({"id": s.id, "caption": s.caption, "image": s.image,
                     "status": "failed" if error else "ok", "error": error, "row": -1})  # fmt: skip
        if image is not None:
            batch.append((i, image))
        if len(batch) >= SEED_BATCH:
            _assign_rows_and_embed(model, batch, rows, vectors)
        bar.update(1)
    _assign_rows_and_embed(model, batch, rows, vectors)
    bar.close()
    emb = np.concatenate(vectors) if vectors else np.zeros((0, model.dim), np.float32)
    buf = io.BytesIO()
    np.savez(buf, emb=emb, rows=np.array(json.dumps(rows)))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def merge_seed_chunks(
    out: Path, plan: dict[str, Any], chunk_files: list[str], *, embedder: str, index: str = "auto"
) -> dict[str, Any]:
    """Join the chunks in order into ``seeds.parquet``, ``seeds.npy``, the index and,
    last, ``seeds.json``; then remove the chunks. Needs no model: ``plan`` (from
    :func:`plan_seeds`) knows its widths."""
    out = Path(out)
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
    emb = np.concatenate(vectors) if vectors else np.zeros((0, plan["dim"]), np.float32)
    out.mkdir(parents=True, exist_ok=True)
    SeedIndex(emb, kind=index).save(out)
    write_table(out / "seeds.parquet", rows)
    n_failed = sum(r["status"] != "ok" for r in rows)
    meta = {"fingerprint": plan["fingerprint"], "embedder": embedder, "dim": plan["dim"],
            "image_size": plan["image_size"], "n_seeds": len(rows),
            "n_ok": len(rows) - n_failed, "n_failed": n_failed}  # fmt: skip
    atomic_write_json(out / "seeds.json", meta)
    shutil.rmtree(out / "seed_chunks", ignore_errors=True)
    if n_failed:
        log.warning("seeds: %d of %d could not be read (see seeds.parquet)", n_failed, len(rows))
    return meta


def prepare_seeds(
    seeds_path: str,
    out: Path,
    *,
    embedder: str,
    device: str = "auto",
    workers: int = 16,
    timeout: float = 10.0,
    progress: bool = False,
    index: str = "auto",
    chunk: int = 10000,
) -> dict[str, Any]:
    """Read, load and embed the seeds, chunk after chunk in this process; write
    ``seeds.parquet``, ``seeds.npy``, ``seeds.index`` and ``seeds.json``.

    Reuses the saved embeddings when the seed table and the embedder are the
    ones that made them (``seeds.json`` records that fingerprint).
    """
    t0 = time.monotonic()
    plan = plan_seeds(seeds_path, out, embedder=embedder, device=device, index=index, chunk=chunk)
    if "reuse" in plan:
        return {**plan["reuse"], "reused": True, "seconds": time.monotonic() - t0}
    files = [
        embed_seed_chunk(seeds_path, out, plan["fingerprint"], a, b, embedder=embedder,
                         device=device, workers=workers, timeout=timeout, progress=progress)
        for a, b in plan["chunks"]
    ]  # fmt: skip
    meta = merge_seed_chunks(out, plan, files, embedder=embedder, index=index)
    return {**meta, "reused": False, "seconds": time.monotonic() - t0}


def _assign_rows_and_embed(model, batch, rows, vectors) -> None:
    """Embed a batch of loaded seed images; each seed row learns its row in its chunk."""
    if not batch:
        return
    first = sum(len(v) for v in vectors)
    vectors.append(model.embed_images(np.stack([a for _, a in batch])))
    for k, (i, _) in enumerate(batch):
        rows[i]["row"] = first + k
    batch.clear()


def seed_captions(out: Path) -> list[tuple[str, str]]:
    """``(id, caption)`` of every embedded seed, in index row order."""
    df = pd.read_parquet(Path(out) / "seeds.parquet", columns=["id", "caption", "row"])
    df = df[df["row"] >= 0].sort_values("row")
    return list(zip(df["id"], df["caption"], strict=True))


# --------------------------------------------------------------------------- videos


def scan_path(out: Path, video_id: str) -> Path:
    return Path(out) / "scans" / f"{video_id}.json"


def scan_video(
    video: dict[str, Any],
    out: Path,
    *,
    embedder: str,
    device: str = "auto",
    threshold: float,
    fps: float = 1.0,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    fetch_timeout: float = 120.0,
    max_height: int = 360,
) -> dict[str, Any]:
    """Fetch one video, sample and embed its frames, and find its seed candidates.

    ``video`` is ``{"url", "video_id", "meta"}``. The result (status, error,
    duration, counts, candidates) is written to ``OUT/scans/VIDEO_ID.json`` and
    returned; a result made with the same seeds, embedder, threshold and fps is
    returned as is. A video that cannot be
    fetched or decoded is a failed result, never an exception.
    """
    from media import MediaError
    from media.probe import probe
    from miners.fetch import FetchError, fetch_video, remove_download
    from miners.frames import iter_frames

    out = Path(out)
    path = scan_path(out, video["video_id"])
    settings = {"embedder": embedder, "threshold": threshold, "fps": fps,
                "seeds": json.loads((out / "seeds.json").read_text())["fingerprint"]}  # fmt: skip
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("settings") == settings:
            return previous
    result: dict[str, Any] = {
        "settings": settings,
        "video": video["url"], "video_id": video["video_id"], "meta": video.get("meta", {}),
        "status": "ok", "error": None, "duration": None, "n_frames": 0, "n_matches": 0,
        "candidates": [], "local_path": None, "downloaded": False, "source": {},
        "timings": {"fetch": 0.0, "decode": 0.0, "embed": 0.0},
    }  # fmt: skip
    t0 = time.monotonic()
    fetched = None
    try:
        fetched = fetch_video(video["url"], Path(cache_dir or out / "downloads"),
                              timeout=fetch_timeout, max_height=max_height)  # fmt: skip
        result["timings"]["fetch"] = time.monotonic() - t0
        result["local_path"], result["downloaded"] = str(fetched.path), fetched.downloaded
        info = probe(fetched.path)
        result["duration"] = info.duration
        result["source"] = {"width": info.width, "height": info.height, "fps": info.fps,
                            "has_audio": info.has_audio}  # fmt: skip
        model = get_embedder(embedder, device, batch_size)
        index = _cached_index(str(out))
        acc, times = HitAccumulator(), []
        t_embed = 0.0
        for batch_times, frames in iter_frames(fetched.path, fps=fps, size=model.image_size,
                                               batch_size=batch_size):  # fmt: skip
            te = time.monotonic()
            emb = model.embed_images(frames)
            rows, seeds, sims = index.search(emb, threshold)
            t_embed += time.monotonic() - te
            base = len(times)
            times.extend(batch_times.tolist())
            acc.add(rows + base, np.asarray(times), seeds, sims)
        result["n_frames"], result["n_matches"] = len(times), acc.n_hits
        result["candidates"] = [c.to_dict() for c in acc.candidates(video["video_id"])]
        result["timings"]["embed"] = t_embed
        result["timings"]["decode"] = time.monotonic() - t0 - result["timings"]["fetch"] - t_embed
    except FetchError as e:
        result.update(status="failed", error=f"fetch {e}")
    except MediaError as e:
        result.update(status="failed", error=f"decode: {e}")
    if fetched is not None and fetched.downloaded and not result["candidates"]:
        remove_download(fetched)  # nothing to cut from it
        result["local_path"] = None
    result["seconds"] = time.monotonic() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
    return result


@functools.lru_cache(maxsize=2)
def _cached_index(out: str) -> SeedIndex:
    return SeedIndex.load(Path(out))


def failed_scan(video: dict[str, Any], error: str) -> dict[str, Any]:
    """The result of a video whose scan raised where it should not have: still a row."""
    return {"video": video["url"], "video_id": video["video_id"], "meta": video.get("meta", {}),
            "status": "failed", "error": error, "duration": None, "n_frames": 0,
            "n_matches": 0, "candidates": [], "local_path": None, "downloaded": False,
            "source": {}, "timings": {}}  # fmt: skip


# --------------------------------------------------------------------------- plan


def plan_clips(
    out: Path,
    scans: list[dict[str, Any]],
    *,
    clip_seconds: float = 10.0,
    max_clips_per_seed: int = 10,
    shard_size: int = 1000,
    run: int = 0,
    first_shard: int = 0,
    used_per_seed: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Choose the clips over the scanned videos and assign them to shards.

    Shards are numbered from ``first_shard`` (after an earlier run's);
    ``used_per_seed`` counts the clips earlier runs gave each seed id, so
    ``max_clips_per_seed`` holds over all runs. Writes ``OUT/plan.json`` (the
    run, its videos, clips and shards) and returns one entry a shard:
    ``{"index": i, "keys": [...]}``.
    """
    out = Path(out)
    seeds = seed_captions(out)
    row_of = {seed_id: row for row, (seed_id, _) in enumerate(seeds)}
    used = {row_of[k]: n for k, n in (used_per_seed or {}).items() if k in row_of}
    videos = {s["video_id"]: {"video": s["video"], "duration": s["duration"], "source": s["source"]}
              for s in scans if s["status"] == "ok"}  # fmt: skip
    candidates = [Candidate(**c) for s in scans if s["status"] == "ok" for c in s["candidates"]]
    clips = select_clips(candidates, videos=videos, seeds=seeds, clip_seconds=clip_seconds,
                         max_clips_per_seed=max_clips_per_seed, used=used)  # fmt: skip
    shards = []
    for n, i in enumerate(range(0, len(clips), shard_size)):
        shards.append(
            {"index": first_shard + n, "keys": [c.key for c in clips[i : i + shard_size]]}
        )
    plan = {"run": run, "videos": [s["video_id"] for s in scans],
            "clips": [c.to_dict() for c in clips], "shards": shards}  # fmt: skip
    atomic_write_json(out / "plan.json", plan)
    return shards


def load_plan(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / "plan.json").read_text())


# --------------------------------------------------------------------------- shards


def shard_is_done(out: Path, shard: dict[str, Any]) -> bool:
    """Complete and made from the same clips as planned now."""
    stats = Path(out) / "shards" / f"{shard_name(shard['index'])}_stats.json"
    return stats.exists() and json.loads(stats.read_text()).get("keys") == shard["keys"]


def staging_dir(out: Path, index: int) -> Path:
    """Where one shard's clips wait, cut and scored, until the shard is written."""
    return Path(out) / "staging" / shard_name(index)


def cut_shard(
    out: Path,
    shard: dict[str, Any],
    *,
    clip_height: int = 360,
    workers: int = 2,
    cache_dir: Path | None = None,
    fetch_timeout: float = 120.0,
    max_height: int = 360,
) -> list[ClipRecord]:
    """Cut one shard's planned clips into its staging folder, started afresh.

    A clip that cannot be cut is a failed record with its error, not an exception.
    """
    out = Path(out)
    plan = load_plan(out)
    wanted = set(shard["keys"])
    records = [ClipRecord.from_dict(c) for c in plan["clips"] if c["key"] in wanted]
    scans = {r.video_id: json.loads(scan_path(out, r.video_id).read_text()) for r in records}
    stage = staging_dir(out, shard["index"])
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    sources = _SourceCache(Path(cache_dir or out / "downloads"), fetch_timeout, max_height)
    cut = functools.partial(
        _cut_one, work=stage, scans=scans, sources=sources, clip_height=clip_height
    )
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(cut, records))
    return records


def save_staged(
    out: Path, shard: dict[str, Any], records: list[ClipRecord], extra: dict | None = None
) -> None:
    """Record the staged clips (written last: it marks the staging complete)."""
    doc = {"keys": shard["keys"], "records": [r.to_dict() for r in records], "extra": extra or {}}
    atomic_write_json(staging_dir(out, shard["index"]) / "records.json", doc)


def load_staged(out: Path, shard: dict[str, Any]) -> tuple[list[ClipRecord], dict] | None:
    """The staged clips of ``shard``, or None when its staging is missing or from another plan."""
    path = staging_dir(out, shard["index"]) / "records.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if doc["keys"] != shard["keys"]:
        return None
    return [ClipRecord.from_dict(r) for r in doc["records"]], doc["extra"]


def write_staged(out: Path, shard: dict[str, Any]) -> dict[str, Any]:
    """Write a staged shard (tar, parquet, stats last) and remove its staging folder."""
    out = Path(out)
    if shard_is_done(out, shard):
        stats = json.loads(
            (out / "shards" / f"{shard_name(shard['index'])}_stats.json").read_text()
        )
        return {"index": shard["index"], "skipped": True, **stats}
    staged = load_staged(out, shard)
    if staged is None:
        raise RuntimeError(
            f"shard {shard['index']} has not been staged in {staging_dir(out, shard['index'])}"
        )
    records, extra = staged
    name = shard_name(shard["index"])
    for stale in (out / "shards").glob(f".{name}*.tmp"):  # left by a run that was killed
        stale.unlink()
    stats = write_shard(out / "shards", shard["index"], records, extra_stats=extra)
    shutil.rmtree(staging_dir(out, shard["index"]), ignore_errors=True)
    return {"index": shard["index"], "skipped": False, **stats}


def build_shard(out: Path, shard: dict[str, Any], **cut_options: Any) -> dict[str, Any]:
    """Cut and write one shard without filtering; skip it when already done."""
    if not shard_is_done(out, shard) and load_staged(out, shard) is None:
        save_staged(out, shard, cut_shard(out, shard, **cut_options))
    return write_staged(out, shard)


class _SourceCache:
    """Local paths of source videos; re-fetches one whose download was removed."""

    def __init__(self, cache_dir: Path, timeout: float, max_height: int):
        self.cache_dir, self.timeout, self.max_height = cache_dir, timeout, max_height
        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}

    def path(self, scan: dict[str, Any]) -> Path:
        from miners.fetch import fetch_video

        with self._lock:
            vid = scan["video_id"]
            if vid not in self._paths:
                local = scan.get("local_path")
                if local and Path(local).exists():
                    self._paths[vid] = Path(local)
                else:
                    fetched = fetch_video(scan["video"], self.cache_dir, timeout=self.timeout,
                                          max_height=self.max_height)  # fmt: skip
                    self._paths[vid] = fetched.path
            return self._paths[vid]


def _cut_one(
    record: ClipRecord, *, work: Path, scans, sources: _SourceCache, clip_height: int
) -> None:
    """Cut one clip into ``work``; a failure marks the record failed with its error."""
    from media import MediaError
    from miners.cut import cut_clip
    from miners.fetch import FetchError

    scan = scans[record.video_id]
    try:
        src = sources.path(scan)
        res = cut_clip(src, record.start, record.end, work, record.key, match_time=record.match_time,
                       height=clip_height, has_audio=bool(scan["source"].get("has_audio")))  # fmt: skip
        record.mp4, record.jpg = str(res.mp4), str(res.jpg)
        record.flac = str(res.flac) if res.flac else None
    except (FetchError, MediaError, OSError) as e:
        record.status, record.error = STATUS_FAILED, f"cut: {e}"
        log.warning("clip %s failed: %s", record.key, e)


# --------------------------------------------------------------------------- run outputs


def write_videos_table(out: Path, scans: list[dict[str, Any]], plan: dict[str, Any]) -> None:
    """``OUT/videos.parquet``: a row for every input video, failed ones with their error."""
    n_clips: dict[str, int] = {}
    for c in plan["clips"]:
        n_clips[c["video_id"]] = n_clips.get(c["video_id"], 0) + 1
    rows = [
        {"video": s["video"], "video_id": s["video_id"], "status": s["status"], "error": s["error"],
         "duration": s["duration"], "n_frames": s["n_frames"], "n_matches": s["n_matches"],
         "n_clips": n_clips.get(s["video_id"], 0), "meta": json.dumps(s.get("meta") or {})}
        for s in scans
    ]  # fmt: skip
    write_table(Path(out) / "videos.parquet", rows)


def remove_downloads(scans: list[dict[str, Any]]) -> int:
    """Delete the downloaded sources the run kept for cutting; returns how many."""
    n = 0
    for s in scans:
        if s.get("downloaded") and s.get("local_path") and Path(s["local_path"]).exists():
            Path(s["local_path"]).unlink()
            n += 1
    return n


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=not enabled, leave=False)
