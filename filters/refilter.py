"""Re-filtering a finished run with new bounds, without cutting or encoding again.

Every clip of the source run is rebuilt from its shard's parquet row (kept and
dropped alike, with their scores) and, when it was kept, its media from the tar.
Drops of clips whose media was written are reopened and the chain applied
again: bounds read the stored scores, so only scores the source run never
computed are computed now. A clip the source run dropped keeps its verdict: its
media never reached the tar, so re-filtering can drop more, never bring one
back. New shards get the same numbers, their media copied byte for byte.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from filters.base import FilterChain, FilterContext, reset_drops
from shards.reader import complete_shards, iter_samples
from shards.record import ClipRecord
from shards.writer import write_shard

log = logging.getLogger(__name__)


def load_shard_records(tar: Path, media_dir: Path) -> list[ClipRecord]:
    """The records of one shard, with the kept ones' media extracted into ``media_dir``."""
    rows = pd.read_parquet(tar.with_suffix(".parquet")).to_dict("records")
    media_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for sample in iter_samples(tar):
        key = sample["__key__"]
        for ext in ("mp4", "flac", "jpg"):
            if ext in sample:
                path = media_dir / f"{key}.{ext}"
                path.write_bytes(sample[ext])
                files.setdefault(key, {})[ext] = str(path)
    records = []
    for row in rows:
        rec = ClipRecord.from_row(row)
        for ext, path in files.get(rec.key, {}).items():
            setattr(rec, ext, path)
        records.append(rec)
    return records


def refilter(
    src: str | Path,
    dst: str | Path,
    per_clip: FilterChain,
    run_level: FilterChain,
    *,
    embedder: Any = None,
) -> dict[str, Any]:
    """Apply new chains to the shards of run ``src``; write the result as run ``dst``."""
    src, dst = Path(src), Path(dst)
    tars = complete_shards(src / "shards")
    if not tars:
        raise ValueError(f"{src}: no complete shard under {src / 'shards'}")
    if dst.resolve() == src.resolve():
        raise ValueError("refilter writes a new run: --out must differ from the source run")
    (dst / "shards").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".refilter-", dir=dst))
    try:
        shards: list[tuple[int, list[ClipRecord]]] = []
        for tar in tars:
            records = load_shard_records(tar, work / tar.stem)
            # Only clips whose media was written can be judged again; a clip the source
            # run dropped keeps its verdict (its media never reached the tar).
            reset_drops([r for r in records if r.mp4 is not None])
            per_clip(records, FilterContext(embedder=embedder, tmp_dir=work / tar.stem))
            shards.append((int(tar.stem), records))
        everything = [r for _, recs in shards for r in recs]
        run_level(everything, FilterContext(embedder=embedder, tmp_dir=work))
        stats = [
            write_shard(
                dst / "shards",
                index,
                recs,
                extra_stats={"filters": per_clip.stats(), "run_filters": run_level.stats()},
            )  # fmt: skip
            for index, recs in shards
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in ("seeds.json", "seeds.parquet", "seeds.npy", "seeds.index", "videos.parquet"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    dropped: dict[str, int] = {}
    for s in stats:
        for reason, n in s["reasons"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    return {
        "source": str(src), "shards": len(stats),
        "clips": {"total": sum(s["count"] for s in stats), "ok": sum(s["successes"] for s in stats)},
        "dropped": dropped,
        "examples": {**per_clip.stats()["examples"], **run_level.stats()["examples"]},
    }  # fmt: skip
