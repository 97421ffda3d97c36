"""``capmine filter``: a finished run re-filtered with new bounds, without cutting or encoding.

It walks the mining run's own staging path (:func:`runs.stages.stage_records`,
:func:`~runs.stages.filter_run`, :meth:`~runs.folder.RunFolder.write_staged`) with records
loaded instead of cut: every clip of the source run is rebuilt from its
shard's parquet row (kept and dropped alike, with their scores) and, when it
was kept, its media from the tar. Drops of clips whose media was written are
reopened and the chains applied again: bounds read the stored scores, so only
scores the source run never computed are computed now. A clip the source run
dropped keeps its verdict: its media never reached the tar, so re-filtering
can drop more, never bring one back. New shards get the same numbers, their
media copied byte for byte; a killed re-filter resumes shard by shard.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from runs.folder import RunFolder
from runs.htmlreport import write_html_report
from runs.lock import claim_out
from runs.records import ShardPlan
from runs.report import drops_by_reason
from runs.stages import FilterSetup, filter_run, stage_records
from shards.reader import complete_shards, iter_samples
from shards.record import ClipRecord

log = logging.getLogger(__name__)

# What a re-filtered run keeps of its source, beside the new shards.
COPIED = ("seeds.json", "seeds.parquet", "seeds.npy", "seeds.index", "seeds.index.json",
          "videos.parquet")  # fmt: skip


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


def _reopened(tar: Path, media_dir: Path) -> list[ClipRecord]:
    """A source shard's records, its drops reopened where the media was written."""
    from filters.base import reset_drops

    records = load_shard_records(tar, media_dir)
    reset_drops([r for r in records if r.mp4 is not None])
    return records


def refilter(src: str | Path, dst: str | Path, setup: FilterSetup) -> dict[str, Any]:
    """Apply ``setup``'s chains to the shards of run ``src``; write the result as run ``dst``
    (shards, the source's seed and video tables, and ``report.json``).

    ``setup.embedder`` defaults to the embedder ``src`` was mined with.
    """
    source, target = RunFolder(src), RunFolder(dst)
    tars = complete_shards(source.shard_dir)
    if not tars:
        raise ValueError(f"{src}: no complete shard under {source.shard_dir}")
    if target.root.resolve() == source.root.resolve():
        raise ValueError("refilter writes a new run: --out must differ from the source run")
    setup.chains()  # an unknown filter or parameter is an error before any work
    with claim_out(target.root, "filter"):
        return _refilter(source, target, tars, setup)


def _refilter(
    source: RunFolder, target: RunFolder, tars: list[Path], setup: FilterSetup
) -> dict[str, Any]:
    src = source.root
    mined_with = source.mined_with()
    if setup.embedder is None and mined_with is not None:
        setup = dataclasses.replace(setup, embedder=mined_with)
    target.shard_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for tar in tars:
        keys = pd.read_parquet(tar.with_suffix(".parquet"), columns=["key"])["key"].tolist()
        shard = ShardPlan(int(tar.stem), keys)
        stage_records(target, shard, functools.partial(_reopened, tar), setup)
        shards.append(shard)
    filter_run(target, shards, setup)
    stats = [target.write_staged(shard) for shard in shards]
    target.clear_staging()
    for name in COPIED:
        if source.path(name).exists():
            shutil.copy2(source.path(name), target.path(name))
    dropped, examples = drops_by_reason(stats)
    report = {
        "source": str(src), "shards": len(stats),
        "clips": {"total": sum(s["count"] for s in stats), "ok": sum(s["successes"] for s in stats)},
        "dropped": dropped, "examples": examples,
    }  # fmt: skip
    target.write_report({"refilter": report, "filters": setup.spec})
    report["report_html"] = str(write_html_report(target.root))
    return report
