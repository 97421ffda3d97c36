"""Shard writing: a tar of samples, a parquet sidecar of every clip, then the stats file.

A shard is complete when ``NNNNN_stats.json`` exists. Every file is written under
a temporary name and renamed into place, the stats file last, so a crash at any
point leaves either a complete shard or one that a rerun will redo.

With ``--keep-dropped`` the media of the shard's dropped clips go to a tar of their
own (:func:`write_dropped`, ``OUT/dropped/NNNNN.tar``), written before the shard.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from shards.keys import is_valid_key
from shards.record import STATUS_DROPPED, STATUS_OK, ClipRecord

SIDE_COLUMNS = {
    "key": pa.string(), "video": pa.string(), "video_id": pa.string(),
    "start": pa.float64(), "end": pa.float64(), "match_time": pa.float64(),
    "similarity": pa.float64(), "caption": pa.string(), "captions": pa.string(),
    "scores": pa.string(), "status": pa.string(), "reason": pa.string(),
    "error": pa.string(), "has_audio": pa.bool_(), "source": pa.string(),
}  # fmt: skip

log = logging.getLogger(__name__)


def shard_name(index: int) -> str:
    return f"{index:05d}"


_UMASK_GUARD = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_GUARD:  # elsewhere: set and restore, the strict value in between
        old = os.umask(0o077)
        os.umask(old)
    return old


def temp_file(path: Path) -> tuple[int, str]:
    """An open temp file beside ``path`` (``.NAME.XXXXXXXX.tmp``), with the permissions a new
    file gets under the current umask (``mkstemp`` alone makes it owner-only)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` when the block ends: a temp file beside it
    (:func:`temp_file`), flushed, synced and renamed into place; removed if the block raises,
    so ``path`` is either its old self or complete."""
    path = Path(path)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> None:
    """A parquet file written atomically; ``schema`` keeps empty tables typed."""
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema else pa.table({})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())


def is_complete(shard_dir: Path, index: int) -> bool:
    return (Path(shard_dir) / f"{shard_name(index)}_stats.json").exists()


@contextlib.contextmanager
def _tar_file(path: Path) -> Iterator[tarfile.TarFile]:
    """A tar (PAX) written into :func:`atomic_file`: ``path`` appears complete or not at all."""
    with (
        atomic_file(path) as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        yield tar


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _sample_files(record: ClipRecord) -> list[tuple[str, bytes]]:
    files = []
    for ext in ("mp4", "flac", "jpg"):
        path = getattr(record, ext)
        if path:
            files.append((ext, Path(path).read_bytes()))
    files.append(("txt", record.caption.encode("utf-8")))
    files.append(("json", json.dumps(record.sample_json(), ensure_ascii=False).encode("utf-8")))
    return files


def write_shard(
    shard_dir: Path, index: int, records: Iterable[ClipRecord], *, extra_stats: dict | None = None
) -> dict[str, Any]:
    """Write shard ``index``: kept records go to the tar, all records to the parquet.

    Returns the stats that were written. A record whose media cannot be read
    becomes a failed row, it does not stop the shard.
    """
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    name = shard_name(index)
    records = list(records)
    tar_path = shard_dir / f"{name}.tar"
    with _tar_file(tar_path) as tar:
        for rec in records:
            if rec.status != STATUS_OK:
                continue
            if not is_valid_key(rec.key):
                raise ValueError(f"invalid sample key {rec.key!r}: letters, digits, _ and - only")
            try:
                files = _sample_files(rec)
            except OSError as e:
                rec.status, rec.error = "failed", f"media unreadable: {e}"
                continue
            for ext, data in files:
                _add_bytes(tar, f"{rec.key}.{ext}", data)
    # "cut" (how each clip was cut) only in runs that chose a way other than exact
    columns = {**SIDE_COLUMNS, **({"cut": pa.string()} if any(r.cut for r in records) else {})}
    write_table(shard_dir / f"{name}.parquet", [r.row() for r in records], pa.schema(columns))
    stats = shard_stats(records)
    stats.update(extra_stats or {})
    atomic_write_json(shard_dir / f"{name}_stats.json", stats)
    return stats


def write_dropped(dropped_dir: Path, index: int, records: Iterable[ClipRecord]) -> list[str]:
    """Write ``dropped_dir/NNNNN.tar``: the samples of the records a filter dropped, laid
    out as a shard's (mp4, flac, jpg, txt, json; the json also names the drop ``reason``).

    Only dropped records whose mp4 is there are written (failed ones have no media); the
    tar is written, empty or not, so its presence says the shard kept its drops. Returns
    the keys written.
    """
    dropped_dir = Path(dropped_dir)
    dropped_dir.mkdir(parents=True, exist_ok=True)
    tar_path = dropped_dir / f"{shard_name(index)}.tar"
    written = []
    with _tar_file(tar_path) as tar:
        for rec in records:
            if rec.status != STATUS_DROPPED or not rec.mp4 or not is_valid_key(rec.key):
                continue
            try:
                files = _sample_files(rec)[:-1]  # the json names the reason too
            except OSError as e:  # its media is gone: it cannot be reopened, nothing more
                log.warning("dropped clip %s: media unreadable, not kept: %s", rec.key, e)
                continue
            meta = {**rec.sample_json(), "reason": rec.reason}
            files.append(("json", json.dumps(meta, ensure_ascii=False).encode("utf-8")))
            for ext, data in files:
                _add_bytes(tar, f"{rec.key}.{ext}", data)
            written.append(rec.key)
    return written


def shard_stats(records: list[ClipRecord]) -> dict[str, Any]:
    status = Counter(r.status for r in records)
    reasons = Counter(r.reason for r in records if r.reason)
    return {
        "count": len(records),
        "successes": status.get(STATUS_OK, 0),
        "status": dict(status),
        "reasons": dict(reasons),
        "keys": [r.key for r in records],
    }


SIZES_FILE = "sizes.json"  # open_clip's name for it (open_clip_train.data.get_dataset_size)


def write_sizes(shard_dir: Path) -> dict[str, int]:
    """Write ``sizes.json`` in ``shard_dir``: every complete shard's tar name and the number of
    samples in it (its kept clips), the file open_clip's trainer reads to size an epoch.

    Shards that kept nothing are listed with 0 (open_clip refuses a total of 0 samples).
    A file that already says the same is left as it is (a rerun that adds nothing touches
    nothing). Returns the sizes.
    """
    from shards.reader import complete_shards  # lazy: the reader brings pandas

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)  # a run that planned no clip: an empty list
    sizes = {tar.name: _kept(tar.with_name(f"{tar.stem}_stats.json"))
             for tar in complete_shards(shard_dir) if tar.stem.isdigit()}  # fmt: skip
    if _read_json(shard_dir / SIZES_FILE) != sizes:
        atomic_write_json(shard_dir / SIZES_FILE, sizes)
    for stale in shard_dir.glob(f".{SIZES_FILE}.*.tmp"):  # a killed run's (OUT is locked)
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)
    return sizes


def _read_json(path: Path) -> Any:
    """``path``'s JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _kept(stats_path: Path) -> int:
    """Samples in a complete shard's tar: its stats' successes (the tar holds exactly those),
    else its parquet's rows with status ok."""
    try:
        return int(json.loads(stats_path.read_text())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    side = stats_path.with_name(stats_path.name.removesuffix("_stats.json") + ".parquet")
    try:
        status = pq.read_table(side, columns=["status"]).column("status").to_pylist()
    except (OSError, KeyError, pa.ArrowException) as e:
        raise ValueError(f"{stats_path}: unreadable shard stats and parquet ({e})") from e
    return sum(s == STATUS_OK for s in status)
