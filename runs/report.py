"""The end of a mining run: the ledger, ``videos.parquet``, downloads, ``report.json`` and
``report.html``.

:func:`finish_run` records a run whose shards are all written; :func:`build_report`
is the totals and timings of ``report.json``; :func:`summary_lines` is what a
terminal shows of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from miners.scan import ScanResult
from miners.videos import VideoInput
from runs.folder import RunFolder
from runs.htmlreport import write_html_report
from runs.records import Ledger, RunPlan, SeedsMeta
from runs.stages import all_scans
from shards.writer import write_sizes

log = logging.getLogger(__name__)

REPORT_EXAMPLES = 5  # keys kept per drop reason in the report


def finish_run(
    folder: RunFolder,
    *,
    plan: RunPlan,
    ledger: Ledger,
    scans: list[ScanResult],
    videos: list[VideoInput],
    keep_downloads: bool = False,
    cache_dir: Path | None = None,
    report: dict[str, Any],
) -> dict[str, Any]:
    """Record a finished run in the ledger, write ``videos.parquet`` (a row for every listed
    video), remove the downloads it kept for cutting, and write ``report.json``.

    ``report`` is :func:`build_report`'s; the run's place in the ledger is added to it.
    """
    ledger = ledger.with_run(plan, scans, kept_per_seed=folder.kept_per_seed(plan.shards))
    folder.save_ledger(ledger)
    folder.write_videos_table(all_scans(folder, videos, scans), plan)
    write_sizes(folder.shard_dir)  # shards/sizes.json, for open_clip's trainer
    removed = 0 if keep_downloads else folder.remove_downloads(scans, cache_dir)
    report = dict(report, downloads_removed=removed, run=plan.run,
                  skipped_videos=len(videos) - len(scans), next_shard=ledger.next_shard)  # fmt: skip
    folder.write_report(report)
    try:
        html = {"report_html": str(write_html_report(folder.root))}
    except (ValueError, OSError) as e:  # a page that cannot be made does not undo the run
        log.warning("report.html not written: %s", e)
        html = {"report_html": None, "report_html_error": " ".join(str(e).split())}
    return report | html


def build_report(
    *,
    params: dict[str, Any],
    filters: str,
    seeds: SeedsMeta,
    seeds_reused: bool,
    plan: RunPlan,
    scans: list[ScanResult],
    shard_stats: list[dict[str, Any]],
    timings: Mapping[str, float],
) -> dict[str, Any]:
    """Totals of the run: seeds, videos, clips by status, drops by reason, seconds per stage."""
    status: dict[str, int] = {}
    for s in shard_stats:
        for k, v in s.get("status", {}).items():
            status[k] = status.get(k, 0) + v
    stage = {"fetch": 0.0, "decode": 0.0, "embed": 0.0, "shots": 0.0}
    for s in scans:
        for k in stage:
            stage[k] += s.timings.get(k, 0.0)
    failed = sum(not s.ok for s in scans)
    dropped, examples = drops_by_reason(shard_stats)
    return {
        "params": params,
        "threshold": plan.threshold.to_dict() if plan.threshold else None,
        "seeds": {"n_seeds": seeds.n_seeds, "n_ok": seeds.n_ok, "n_failed": seeds.n_failed,
                  "reused": seeds_reused, "embedder": seeds.embedder},
        "videos": {"total": len(scans), "ok": len(scans) - failed, "failed": failed,
                   "frames": sum(s.n_frames for s in scans),
                   "matches": sum(s.n_matches for s in scans)},
        "clips": {"planned": sum(s.get("count", 0) for s in shard_stats),
                  "ok": status.get("ok", 0), "failed": status.get("failed", 0),
                  "dropped": status.get("dropped", 0)},
        "filters": {"chain": filters, "dropped": dropped, "examples": examples,
                    **earlier_clips(shard_stats)},
        "shards": len(shard_stats),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "video_seconds": {k: round(v, 3) for k, v in stage.items()},
    }  # fmt: skip


def drops_by_reason(
    shard_stats: list[dict[str, Any]],
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Drops counted by reason over shards, and a few example keys each (per-clip and
    run-level filters alike), in shard order."""
    dropped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for s in shard_stats:
        for reason, n in s.get("reasons", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        for chain in (s.get("filters", {}), s.get("run_filters", {})):
            for reason, keys in chain.get("examples", {}).items():
                seen = examples.setdefault(reason, [])
                seen.extend(k for k in keys if k not in seen and len(seen) < REPORT_EXAMPLES)
    return dropped, examples


def earlier_clips(shard_stats: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """What dedup compared of earlier runs' kept clips (``{"earlier_clips": {"compared",
    "not_compared"}}``), or nothing when the chain has no dedup. The run-level filters'
    stats are the run's, the same in every shard."""
    for s in shard_stats:
        dedup = s.get("run_filters", {}).get("filters", {}).get("dedup")
        if dedup is not None and "earlier_clips" in dedup:
            return {"earlier_clips": {"compared": int(dedup["earlier_clips"]),
                                      "not_compared": int(dedup.get("earlier_not_compared", 0))}}  # fmt: skip
    return {}


def summary_lines(report: dict[str, Any], out: str) -> list[str]:
    """What a terminal shows at the end of ``capmine mine``: clips, inputs, drops, failures."""
    v, c, s = report["videos"], report["clips"], report["seeds"]
    threshold = report["threshold"] or {"threshold": None, "basis": "none"}
    lines = [
        f"capmine: {c['ok']} clips in {report['shards']} shard(s) under {os.path.join(out, 'shards')}",
        f"  seeds: {s['n_ok']} embedded, {s['n_failed']} failed; threshold "
        f"{threshold['threshold']} ({threshold['basis']})",
        f"  videos: {v['ok']} scanned, {v['failed']} failed; {v['frames']} frames, "
        f"{v['matches']} matches",
    ]
    if report.get("filters", {}).get("dropped"):
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(report["filters"]["dropped"].items()))
        lines.append(f"  filtered out: {c['dropped']} clips ({reasons})")
    earlier = report.get("filters", {}).get("earlier_clips")
    if earlier:
        lines.append(f"  dedup against earlier runs: {earlier['compared']} kept clips compared"
                     + (f", {earlier['not_compared']} could not be (media unreadable)"
                        if earlier["not_compared"] else ""))  # fmt: skip
    if c["failed"]:
        lines.append(
            f"  clips failed (cut, or a filter could not judge them): {c['failed']} "
            "(see the error column of the shards' parquet files)"
        )
    if v["failed"] or s["n_failed"]:
        lines.append(
            f"  {v['failed'] + s['n_failed']} input(s) failed: see {out}/videos.parquet "
            f"and {out}/seeds.parquet"
        )
    if report.get("report_html_error"):
        lines.append(f"  report: not written ({report['report_html_error']}); "
                     f"capmine report {out} tries again")  # fmt: skip
    else:
        lines.append(f"  report: {os.path.join(out, 'report.html')}")
    return lines
