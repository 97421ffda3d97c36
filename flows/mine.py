"""The mining flow: seeds -> index -> per-video scans -> clip plan -> shards -> report.

Prefect only arranges the library stages of :mod:`miners.pipeline`; tasks pass
paths and small summaries. Run it with ``capmine mine`` or call ``mine(params)``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import MineParams
from miners import ledger, pipeline
from miners.calibrate import calibrate
from miners.embedders import get_embedder
from miners.videos import read_videos
from shards.writer import atomic_write_json


@task(name="plan-seeds")
def plan_seeds(params: MineParams) -> dict[str, Any]:
    return pipeline.plan_seeds(params.seeds, Path(params.out), embedder=params.embedder,
                               device=params.device, index=params.index, chunk=params.seed_chunk)  # fmt: skip


@task(name="embed-seed-chunk", task_run_name="seeds-{chunk[0]}")
def embed_seed_chunk(chunk: list[int], fp: str, params: MineParams) -> str:
    return pipeline.embed_seed_chunk(
        params.seeds, Path(params.out), fp, chunk[0], chunk[1], embedder=params.embedder,
        device=params.device, workers=params.seed_workers, timeout=params.seed_timeout,
        progress=params.progress,
    )  # fmt: skip


def embed_seeds(params: MineParams) -> dict[str, Any]:
    """Seed embeddings: reused when unchanged, else embedded chunk by chunk (on the
    task runner: threads, or spread over the Dask cluster) and merged in order."""
    t0 = time.monotonic()
    plan = plan_seeds(params)
    if "reuse" in plan:
        return {**plan["reuse"], "reused": True, "seconds": time.monotonic() - t0}
    futures = embed_seed_chunk.map(plan["chunks"], fp=plan["fingerprint"], params=unmapped(params))
    files = [f.result() for f in futures]
    meta = pipeline.merge_seed_chunks(
        Path(params.out), plan, files, embedder=params.embedder, index=params.index
    )
    return {**meta, "reused": False, "seconds": time.monotonic() - t0}


@task(name="scan-video", task_run_name="scan-{video[video_id]}")
def scan(video: dict[str, Any], params: MineParams, threshold: float) -> dict[str, Any]:
    return pipeline.scan_video(
        video, Path(params.out), embedder=params.embedder, device=params.device,
        threshold=threshold, fps=params.fps, batch_size=params.batch_size,
        cache_dir=_cache_dir(params), fetch_timeout=params.fetch_timeout, max_height=params.max_height,
    )  # fmt: skip


@task(name="cut-and-filter", task_run_name="cut-{shard[index]}")
def stage(shard: dict[str, Any], params: MineParams) -> dict[str, Any]:
    """Cut one shard's clips and run the per-clip filters on them (skipped when done)."""
    out = Path(params.out)
    if pipeline.shard_is_done(out, shard) or pipeline.load_staged(out, shard) is not None:
        return {"index": shard["index"], "skipped": True}
    t0 = time.monotonic()
    records = pipeline.cut_shard(
        out, shard, clip_height=params.clip_height, workers=params.workers,
        cache_dir=_cache_dir(params), fetch_timeout=params.fetch_timeout, max_height=params.max_height,
    )  # fmt: skip
    chain = filter_chains(params)[0]
    chain(records, _filter_context(params, chain, pipeline.staging_dir(out, shard["index"])))
    pipeline.save_staged(out, shard, records, {"filters": chain.stats()})
    return {"index": shard["index"], "skipped": False, "seconds": time.monotonic() - t0}


@task(name="run-level-filters")
def filter_run(shards: list[dict[str, Any]], params: MineParams) -> dict[str, Any]:
    """Filters that must see every clip of the run at once (dedup, per-video caps)."""
    chain = filter_chains(params)[1]
    out = Path(params.out)
    staged = [(s, pipeline.load_staged(out, s)) for s in shards]
    staged = [(s, st) for s, st in staged if st is not None]
    if not len(chain) or not staged:
        return {}
    records = [r for _, (recs, _) in staged for r in recs]
    chain(records, _filter_context(params, chain, out / "staging"))
    for shard, (recs, extra) in staged:
        extra = dict(extra, run_filters=chain.stats())
        pipeline.save_staged(out, shard, recs, extra)
    return chain.stats()


@task(name="write-shard", task_run_name="shard-{shard[index]}")
def write(shard: dict[str, Any], params: MineParams) -> dict[str, Any]:
    return pipeline.write_staged(Path(params.out), shard)


def filter_chains(params: MineParams):
    """(per-clip chain, run-level chain) of the run's filter spec."""
    from filters.registry import split_chain

    overrides = {}
    if params.min_clip_seconds is not None:
        overrides["shots"] = {"min_clip_seconds": params.min_clip_seconds}
    return split_chain(params.filters, overrides)


def _filter_context(params: MineParams, chain, tmp_dir: Path):
    """What ``chain`` borrows from the run: the embedder only when one of its filters needs it."""
    from filters.base import FilterContext

    needs = any(f.needs_embedder for f in chain.filters)
    embedder = get_embedder(params.embedder, params.device, params.batch_size) if needs else None
    return FilterContext(embedder=embedder, tmp_dir=tmp_dir)


def _cache_dir(params: MineParams) -> Path:
    return Path(params.cache_dir) if params.cache_dir else Path(params.out) / "downloads"


@task(name="calibrate-threshold")
def auto_threshold(params: MineParams) -> dict[str, Any]:
    """Estimate the threshold on a sample of this run's own seeds and videos."""
    est = calibrate(
        params.seeds, params.videos, embedder=params.embedder, device=params.device,
        false_match_rate=params.false_match_rate, fps=params.fps, max_seeds=500,
        max_videos=20, max_frames_per_video=60, seed_workers=params.seed_workers,
    )  # fmt: skip
    return est | {"basis": f"calibrated on {est['n_seeds']} seeds, {est['n_frames']} frames"}


@flow(name="mine", task_runner=ThreadPoolTaskRunner(max_workers=2))
def mine(params: MineParams) -> dict[str, Any]:
    """Mine captioned audio+video clips for ``params.seeds`` from ``params.videos``.

    Incremental: videos an earlier run finished are skipped, new shards are
    numbered after the earlier ones, and a run that was killed is resumed from
    its saved plan, so the final dataset is the one a clean run gives.
    """
    logger = get_run_logger()
    t0 = time.monotonic()
    out = Path(params.out)
    if params.overwrite:
        _start_over(out, logger)
    out.mkdir(parents=True, exist_ok=True)
    videos = [
        {"url": v.url, "video_id": v.video_id, "meta": v.meta} for v in read_videos(params.videos)
    ]
    logger.info("%d videos from %s", len(videos), params.videos)

    seeds = embed_seeds(params)
    logger.info("seeds: %d embedded, %d failed (%s, %.1fs)", seeds["n_ok"], seeds["n_failed"],
                "reused" if seeds["reused"] else "new", seeds["seconds"])  # fmt: skip
    if seeds["n_ok"] == 0:
        raise ValueError(f"no seed in {params.seeds} could be read; see {out / 'seeds.parquet'}")
    done = ledger.load(out)
    pending = _pending_plan(out, done)
    t_seeds = time.monotonic() - t0

    if pending is not None:
        # a run that was killed after planning: finish exactly that plan
        run, calib = pending["run"], pending["threshold"]
        logger.info("resuming run %d: %d videos, %d shards planned", run, len(pending["videos"]),
                    len(pending["shards"]))  # fmt: skip
        scans = [json.loads(pipeline.scan_path(out, v).read_text()) for v in pending["videos"]]
        shards = pending["shards"]
    else:
        run = len(done["runs"])
        todo = ledger.new_videos(done, videos)
        logger.info("run %d: %d new videos (%d finished by earlier runs)", run, len(todo),
                    len(videos) - len(todo))  # fmt: skip
        calib = _threshold(params, done, todo, logger)
        _forget_failed_scans(out, todo)  # failures are retried by a new run
        scans = _scan_all(todo, params, calib["threshold"], logger)
        shards = pipeline.plan_clips(
            out, scans, clip_seconds=params.clip_seconds, max_clips_per_seed=params.max_clips_per_seed,
            shard_size=params.shard_size, run=run, first_shard=done["next_shard"],
            used_per_seed=done["clips_per_seed"],
        )  # fmt: skip
        _note_plan_threshold(out, calib)
    t_scan = time.monotonic() - t0 - t_seeds
    n_planned = sum(len(s["keys"]) for s in shards)
    logger.info("%d clips planned in %d shards", n_planned, len(shards))
    shard_stats = []
    if shards:
        for future in stage.map(shards, params=unmapped(params)):
            future.result()  # every shard cut and filtered before the run-level filters
        filter_run(shards, params)
        shard_stats = [f.result() for f in write.map(shards, params=unmapped(params))]
    t_shards = time.monotonic() - t0 - t_seeds - t_scan

    plan = pipeline.load_plan(out)
    done = ledger.record_run(out, done, plan=plan, scans=scans, threshold=calib,
                             kept_per_seed=_kept_per_seed(out, shards))  # fmt: skip
    pipeline.write_videos_table(out, _all_scans(out, videos, scans), plan)
    removed = 0 if params.keep_downloads else pipeline.remove_downloads(scans)
    report = _report(params, seeds, calib, scans, shard_stats, removed,
                     {"seeds": t_seeds, "scan": t_scan, "shards": t_shards,
                      "total": time.monotonic() - t0})  # fmt: skip
    report.update(run=run, skipped_videos=len(videos) - len(scans), next_shard=done["next_shard"])
    atomic_write_json(out / "report.json", report)
    logger.info("done: run %d, %d clips in %d shards; %d of %d videos failed; report %s", run,
                report["clips"]["ok"], len(shard_stats), report["videos"]["failed"],
                len(scans), out / "report.json")  # fmt: skip
    return report


def _start_over(out: Path, logger) -> None:
    """--overwrite: remove what earlier runs wrote (seed embeddings stay: they are checked)."""
    import shutil

    for name in ledger.RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    logger.info("--overwrite: removed earlier runs' scans, shards and ledger in %s", out)


def _pending_plan(out: Path, done: dict[str, Any]) -> dict[str, Any] | None:
    """The saved plan of a run that did not finish, if there is one."""
    path = out / "plan.json"
    if not path.exists():
        return None
    plan = json.loads(path.read_text())
    if "run" not in plan or ledger.is_finished(done, plan["run"]) or "threshold" not in plan:
        return None
    return plan


def _threshold(params: MineParams, done: dict[str, Any], todo: list, logger) -> dict[str, Any]:
    """Given, else the one earlier runs used (same scale over runs), else calibrated now."""
    if params.threshold is not None:
        return {"threshold": params.threshold, "basis": "given"}
    if done["threshold"] is not None:
        return done["threshold"]
    if not todo:
        return {"threshold": 1.0, "basis": "nothing to mine"}
    calib = auto_threshold(params)
    logger.info("threshold %.4f %s, false-match rate %g", calib["threshold"], calib["basis"],
                params.false_match_rate)  # fmt: skip
    return calib


def _note_plan_threshold(out: Path, calib: dict[str, Any]) -> None:
    """Store the threshold in the plan: written last, it marks the plan complete."""
    plan = pipeline.load_plan(out)
    plan["threshold"] = calib
    atomic_write_json(out / "plan.json", plan)


def _forget_failed_scans(out: Path, videos: list[dict[str, Any]]) -> None:
    for v in videos:
        path = pipeline.scan_path(out, v["video_id"])
        if path.exists() and json.loads(path.read_text())["status"] != "ok":
            path.unlink()


def _kept_per_seed(out: Path, shards: list[dict[str, Any]]) -> dict[str, int]:
    """Clips written for each seed id (any caption of a kept clip counts)."""
    import pandas as pd

    counts: dict[str, int] = {}
    for shard in shards:
        side = pd.read_parquet(out / "shards" / f"{pipeline.shard_name(shard['index'])}.parquet")
        for caps in side.loc[side["status"] == "ok", "captions"]:
            for c in json.loads(caps):
                counts[c["seed_id"]] = counts.get(c["seed_id"], 0) + 1
    return counts


def _all_scans(
    out: Path, videos: list[dict[str, Any]], scans: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """This run's scans, then those of listed videos earlier runs finished."""
    mine_now = {s["video_id"] for s in scans}
    earlier = []
    for v in videos:
        path = pipeline.scan_path(out, v["video_id"])
        if v["video_id"] not in mine_now and path.exists():
            earlier.append(json.loads(path.read_text()))
    return scans + earlier


def _scan_all(videos, params: MineParams, threshold: float, logger) -> list[dict[str, Any]]:
    """Scan every video concurrently; an unexpected task failure is that video's row, not the run's end."""
    from tqdm.auto import tqdm

    if not videos:
        return []
    futures = scan.map(videos, params=unmapped(params), threshold=threshold)
    by_future = {id(f): v for f, v in zip(futures, videos, strict=True)}
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=len(videos), desc="videos", unit="video", disable=not params.progress, file=sys.stderr
    )
    failed, step = 0, max(1, len(videos) // 10)
    for f in as_completed(futures):
        video = by_future[id(f)]
        try:
            res = f.result()
        except Exception as e:  # a bug in one video's scan must not lose the others
            res = pipeline.failed_scan(video, f"internal: {type(e).__name__}: {e}")
        results[video["video_id"]] = res
        failed += res["status"] != "ok"
        bar.update(1)
        bar.set_postfix(failed=failed)
        if len(results) % step == 0 or len(results) == len(videos):
            logger.info("scanned %d/%d videos (%d failed)", len(results), len(videos), failed)
    bar.close()
    return [results[v["video_id"]] for v in videos]


def _report(params, seeds, calib, scans, shard_stats, removed, timings) -> dict[str, Any]:
    status: dict[str, int] = {}
    for s in shard_stats:
        for k, v in s.get("status", {}).items():
            status[k] = status.get(k, 0) + v
    stage = {"fetch": 0.0, "decode": 0.0, "embed": 0.0}
    for s in scans:
        for k in stage:
            stage[k] += s.get("timings", {}).get(k, 0.0)
    failed = [s for s in scans if s["status"] != "ok"]
    dropped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for s in shard_stats:
        for reason, n in s.get("reasons", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        for chain in (s.get("filters", {}), s.get("run_filters", {})):
            for reason, keys in chain.get("examples", {}).items():
                seen = examples.setdefault(reason, [])
                seen.extend(k for k in keys if k not in seen and len(seen) < 5)
    return {
        "params": json.loads(params.model_dump_json()),
        "threshold": calib,
        "seeds": {k: seeds[k] for k in ("n_seeds", "n_ok", "n_failed", "reused", "embedder")},
        "videos": {"total": len(scans), "ok": len(scans) - len(failed), "failed": len(failed),
                   "frames": sum(s["n_frames"] for s in scans),
                   "matches": sum(s["n_matches"] for s in scans)},
        "clips": {"planned": sum(s.get("count", 0) for s in shard_stats),
                  "ok": status.get("ok", 0), "failed": status.get("failed", 0),
                  "dropped": status.get("dropped", 0)},
        "filters": {"chain": params.filters, "dropped": dropped, "examples": examples},
        "shards": len(shard_stats),
        "downloads_removed": removed,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "video_seconds": {k: round(v, 3) for k, v in stage.items()},
    }  # fmt: skip


def run_mine(params: MineParams) -> dict[str, Any]:
    """Run the flow on ``params.workers`` threads, or on Dask when ``params.dask`` is set."""
    from flows.dask import task_runner_for

    with task_runner_for(params) as runner:
        return mine.with_options(task_runner=runner)(params)
