"""``capmine filter``: a finished run re-filtered with new bounds, without cutting or encoding.

It walks the mining run's own staging path (:func:`runs.stages.stage_records`,
:func:`~runs.stages.filter_run`, :meth:`~runs.folder.RunFolder.write_staged`) with records
loaded instead of cut: every clip of the source run is rebuilt from its
shard's parquet row (kept and dropped alike, with their scores) and its media
from the shard's tar when it was kept, or from ``dropped/NNNNN.tar`` when it was
dropped and the source run kept its drops (``--keep-dropped``). Drops of clips
whose media is there are reopened and the chains applied again: bounds read the
stored scores, so only scores the source run never computed are computed now,
and looser bounds bring such clips back. A dropped clip without media keeps its
verdict: without ``dropped/`` re-filtering can drop more, never bring one back.
New shards get the same numbers, their media copied byte for byte; with
``keep_dropped`` the new run keeps its own drops' media too. A killed re-filter
resumes shard by shard.
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
from shards.record import STATUS_DROPPED, STATUS_OK, ClipRecord
from shards.writer import write_sizes

log = logging.getLogger(__name__)

# What a re-filtered run keeps of its source, beside the new shards.
COPIED = ("seeds.json", "seeds.parquet", "seeds.npy", "seeds.index", "seeds.index.json",
          "videos.parquet")  # fmt: skip


def _extract(tar: Path, keys: set[str], media_dir: Path) -> dict[str, dict[str, str]]:
    """The media of ``tar``'s samples named in ``keys``, written into ``media_dir``:
    ``{key: {ext: path}}``."""
    files: dict[str, dict[str, str]] = {}
    for sample in iter_samples(tar):
        key = sample["__key__"]
        if key not in keys:
            continue
        for ext in ("mp4", "flac", "jpg"):
            if ext in sample:
                path = media_dir / f"{key}.{ext}"
                path.write_bytes(sample[ext])
                files.setdefault(key, {})[ext] = str(path)
    return files


def load_shard_records(
    tar: Path, media_dir: Path, dropped_tar: Path | None = None
) -> list[ClipRecord]:
    """The records of one shard, with the kept ones' media extracted into ``media_dir``,
    and the dropped ones' too from ``dropped_tar`` (``dropped/NNNNN.tar``) when given."""
    rows = pd.read_parquet(tar.with_suffix(".parquet")).to_dict("records")
    media_dir.mkdir(parents=True, exist_ok=True)
    files = _extract(tar, {r["key"] for r in rows if r["status"] == STATUS_OK}, media_dir)
    if dropped_tar is not None:
        dropped = {r["key"] for r in rows if r["status"] == STATUS_DROPPED}
        files.update(_extract(dropped_tar, dropped, media_dir))
    records = []
    for row in rows:
        rec = ClipRecord.from_row(row)
        for ext, path in files.get(rec.key, {}).items():
            setattr(rec, ext, path)
        records.append(rec)
    return records


def _reopened(tar: Path, dropped_tar: Path | None, media_dir: Path) -> list[ClipRecord]:
    """A source shard's records, its drops reopened where their media is there."""
    from filters.base import reset_drops

    records = load_shard_records(tar, media_dir, dropped_tar)
    reset_drops([r for r in records if r.mp4 is not None])
    return records


def refilter(
    src: str | Path, dst: str | Path, setup: FilterSetup, *, keep_dropped: bool = False
) -> dict[str, Any]:
    """Apply ``setup``'s chains to the shards of run ``src``; write the result as run ``dst``
    (shards, the source's seed and video tables, and ``report.json``).

    ``setup.embedder`` defaults to the embedder ``src`` was mined with. Clips ``src`` kept
    in its ``dropped/`` are judged again like kept ones; ``keep_dropped`` keeps the media
    of what this chain drops in ``dst/dropped/``.
    """
    source, target = RunFolder(src), RunFolder(dst)
    tars = complete_shards(source.shard_dir)
    if not tars:
        raise ValueError(f"{src}: no complete shard under {source.shard_dir}")
    if target.root.resolve() == source.root.resolve():
        raise ValueError("refilter writes a new run: --out must differ from the source run")
    setup.chains()  # an unknown filter or parameter is an error before any work
    with claim_out(target.root, "filter"):
        return _refilter(source, target, tars, setup, keep_dropped)


def _refilter(
    source: RunFolder, target: RunFolder, tars: list[Path], setup: FilterSetup, keep_dropped: bool
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
        dropped = source.dropped_file(shard.index)
        dropped = dropped if dropped.is_file() else None
        stage_records(target, shard, functools.partial(_reopened, tar, dropped), setup)
        shards.append(shard)
    if not source.dropped_dir.is_dir():
        log.info("%s kept no dropped clips (mined without --keep-dropped): its drops stay", src)
    filter_run(target, shards, setup)
    stats = [target.write_staged(shard, keep_dropped=keep_dropped) for shard in shards]
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
    write_sizes(target.shard_dir)  # shards/sizes.json, for open_clip's trainer
    report["report_html"] = str(write_html_report(target.root))
    return report
