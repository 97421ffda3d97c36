"""The mining flow: Prefect arranges the stages of :mod:`runs` over one OUT folder.

``mine`` is what ``capmine mine`` and the deployments in ``prefect.yaml`` run:
it picks the task runner from the parameters (threads, or Dask with ``dask``)
and runs ``mine-stages`` on it, so a deployment honours ``dask`` and
``scan_workers`` exactly as the command line does. Tasks pass paths and
small records, never media; the work is in :mod:`runs`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.context import FlowRunContext
from prefect.futures import as_completed

from flows.artifacts import publish_mine
from flows.params import MineParams
from miners.scan import ScanResult
from miners.videos import VideoInput, read_videos
from runs.folder import RunFolder
from runs.lock import claim_out
from runs.progress import stage_bar
from runs.records import Ledger, RunPlan, SeedPlan, SeedsMeta, ShardPlan, Threshold
from runs.report import build_report, finish_run
from runs.seeds import embed_seed_chunk, merge_seed_chunks, plan_seeds
from runs.stages import (
    FilterSetup,
    calibrate_threshold,
    filter_run,
    known_threshold,
    plan_run,
    scan_video_into,
    stage_shard,
)


def _folder(params: MineParams) -> RunFolder:
    return RunFolder(params.out)


def _cache_dir(params: MineParams) -> Path | None:
    return Path(params.cache_dir) if params.cache_dir else None


def _filters(params: MineParams) -> FilterSetup:
    return FilterSetup(params.filters, params.min_clip_seconds, params.embedder, params.device,
                       params.batch_size)  # fmt: skip


@task(name="plan-seeds")
def plan_seeds_task(params: MineParams) -> SeedPlan:
    return plan_seeds(_folder(params), params.seeds, embedder=params.embedder,
                      device=params.device, index=params.index, chunk=params.seed_chunk)  # fmt: skip


@task(name="embed-seed-chunk", task_run_name="seeds-{chunk[0]}")
def embed_seed_chunk_task(chunk: list[int], fingerprint: str, params: MineParams) -> str:
    return embed_seed_chunk(
        _folder(params), params.seeds, fingerprint, chunk[0], chunk[1], embedder=params.embedder,
        device=params.device, workers=params.seed_workers, timeout=params.seed_timeout,
        progress=params.progress, max_image_pixels=params.max_image_pixels,
        allowed_protocols=params.allowed_protocols,
        block_private_addresses=params.block_private_addresses,
    )  # fmt: skip


@task(name="calibrate-threshold")
def calibrate_threshold_task(params: MineParams) -> Threshold:
    return calibrate_threshold(
        params.seeds, params.videos, embedder=params.embedder, device=params.device,
        false_match_rate=params.false_match_rate, fps=params.fps, seed_workers=params.seed_workers,
        seed_guards={"max_image_pixels": params.max_image_pixels,
                     "allowed_protocols": params.allowed_protocols,
                     "block_private_addresses": params.block_private_addresses},
        hwaccel=params.hwaccel,
    )  # fmt: skip


def _decode_threads(params: MineParams) -> int:
    """ffmpeg's decoder threads per scanned video: ``--decode-threads``, else ``--threads``,
    else the cores shared by the videos scanned at once. ffmpeg's own choice (a thread
    a core for each decoder) costs a sixth more CPU once decoders share the cores."""
    from flows.threads import default_threads

    return params.decode_threads or params.threads or default_threads(params.scan_workers)


@task(name="scan-video", task_run_name="scan-{video.video_id}")
def scan_video_task(video: VideoInput, params: MineParams, threshold: float) -> ScanResult:
    return scan_video_into(
        _folder(params), video, embedder=params.embedder, device=params.device,
        threshold=threshold, fps=params.fps, batch_size=params.batch_size,
        cache_dir=_cache_dir(params), fetch_timeout=params.fetch_timeout, max_height=params.max_height,
        max_download_mb=params.max_download_mb, clip_seconds=params.clip_seconds,
        sampler=params.sampler, hwaccel=params.hwaccel, decode_threads=_decode_threads(params),
    )  # fmt: skip


@task(name="stage-shard", task_run_name="stage-{shard.index}")
def stage_shard_task(shard: ShardPlan, params: MineParams) -> dict[str, Any]:
    return stage_shard(
        _folder(params), shard, _filters(params), clip_height=params.clip_height,
        cut_workers=params.cut_workers, cache_dir=_cache_dir(params),
        fetch_timeout=params.fetch_timeout, max_height=params.max_height,
        max_download_mb=params.max_download_mb, cut=params.cut,
        keyframe_slack=params.keyframe_slack,
    )  # fmt: skip


@task(name="filter-run")
def filter_run_task(shards: list[ShardPlan], params: MineParams) -> dict[str, Any]:
    return filter_run(_folder(params), shards, _filters(params))


@task(name="write-shard", task_run_name="shard-{shard.index}")
def write_shard_task(shard: ShardPlan, params: MineParams) -> dict[str, Any]:
    return _folder(params).write_staged(shard, keep_dropped=params.keep_dropped)


@flow(name="mine")
def mine(params: MineParams) -> dict[str, Any]:
    """Mine captioned audio+video clips for ``params.seeds`` from ``params.videos``.

    The stages run on ``params.scan_workers`` threads, or on Dask when
    ``params.dask`` is set (a LocalCluster or an existing scheduler).
    """
    from flows.runners import task_runner_for

    # The process that drives the run holds OUT for all of it (tasks may run elsewhere).
    with claim_out(params.out, "mine"), task_runner_for(params) as runner:
        return mine_stages.with_options(task_runner=runner)(params)


def run_mine(params: MineParams) -> dict[str, Any]:
    """Run the ``mine`` flow (the Python spelling of ``capmine mine``).

    OUT is claimed before the flow starts, so a folder in use or not capmine's is
    refused at once, before any task runs.
    """
    with claim_out(params.out, "mine"):
        return mine(params)


@flow(name="mine-stages")
def mine_stages(params: MineParams) -> dict[str, Any]:
    """Seeds, scans, plan, shards, report: one run over OUT.

    Incremental: videos an earlier run finished are skipped, new shards are
    numbered after the earlier ones, and a run that was killed is resumed from
    its saved plan, so the final dataset is the one a clean run gives.
    """
    logger = get_run_logger()
    t0, laps = time.monotonic(), {}
    runner = _task_runner(params)
    logger.info("tasks run on %s", runner)
    folder = _folder(params)
    if params.overwrite:
        folder.start_over()
        logger.info(
            "--overwrite: removed earlier runs' scans, shards and ledger in %s", folder.root
        )
    folder.root.mkdir(parents=True, exist_ok=True)
    videos = read_videos(params.videos)
    logger.info("%d videos from %s", len(videos), params.videos)
    seeds, reused = _embed_seeds(params, folder)
    ledger = folder.ledger()
    plan = folder.pending_plan(ledger)
    laps["seeds"] = time.monotonic() - t0
    if plan is not None:
        logger.info("resuming run %d: %d videos, %d shards planned", plan.run, len(plan.videos),
                    len(plan.shards))  # fmt: skip
        scans = folder.scans(plan.videos)
    else:
        plan, scans = _plan_new_run(params, folder, ledger, videos)
    laps["scan"] = time.monotonic() - t0 - laps["seeds"]
    logger.info("%d clips planned in %d shards", len(plan.clips), len(plan.shards))
    shard_stats = _make_shards(plan.shards, params)
    laps["shards"] = time.monotonic() - t0 - laps["seeds"] - laps["scan"]
    report = build_report(
        params=params.model_dump(mode="json"), filters=params.filters, seeds=seeds,
        seeds_reused=reused, plan=plan, scans=scans, shard_stats=shard_stats,
        timings={**laps, "total": time.monotonic() - t0},
    )  # fmt: skip
    report = finish_run(folder, plan=plan, ledger=ledger, scans=scans, videos=videos,
                        keep_downloads=params.keep_downloads, cache_dir=_cache_dir(params),
                        report=report | {"task_runner": runner})  # fmt: skip
    logger.info("done: run %d, %d clips in %d shards; %d of %d videos failed; report %s",
                plan.run, report["clips"]["ok"], len(shard_stats), report["videos"]["failed"],
                len(scans), folder.path("report.json"))  # fmt: skip
    publish_mine(report, params.out)
    return report


def _task_runner(params: MineParams) -> str:
    """Where this flow's tasks run, as the report says it: the runner ``mine`` gave it."""
    runner = FlowRunContext.get().task_runner
    address = getattr(runner, "address", None)  # a Dask scheduler's
    if address:
        return f"{type(runner).__name__} at {address}"
    return f"{type(runner).__name__}, {params.scan_workers} threads"


def _embed_seeds(params: MineParams, folder: RunFolder) -> tuple[SeedsMeta, bool]:
    """Seed embeddings: reused when unchanged, else embedded chunk by chunk on the task
    runner (threads, or spread over the Dask cluster) and merged in order."""
    logger = get_run_logger()
    t0 = time.monotonic()
    plan = plan_seeds_task(params)
    if plan.reuse is not None:
        meta, reused = plan.reuse, True
    else:
        futures = embed_seed_chunk_task.map(
            plan.chunks, fingerprint=plan.fingerprint, params=unmapped(params)
        )
        files = [f.result() for f in futures]
        meta = merge_seed_chunks(folder, plan, files, embedder=params.embedder, index=params.index)
        reused = False
    logger.info("seeds: %d embedded, %d failed (%s, %.1fs)", meta.n_ok, meta.n_failed,
                "reused" if reused else "new", time.monotonic() - t0)  # fmt: skip
    if meta.n_ok == 0:
        raise ValueError(
            f"no seed in {params.seeds} could be read; see {folder.path('seeds.parquet')}"
        )
    return meta, reused


def _plan_new_run(
    params: MineParams, folder: RunFolder, ledger: Ledger, videos: list[VideoInput]
) -> tuple[RunPlan, list[ScanResult]]:
    """A new run: the videos no run finished, scanned at the run's threshold, then planned."""
    logger = get_run_logger()
    todo = ledger.new_videos(videos)
    logger.info("run %d: %d new videos (%d finished by earlier runs)", len(ledger.runs), len(todo),
                len(videos) - len(todo))  # fmt: skip
    threshold = known_threshold(params.threshold, ledger, todo)
    if threshold is None:
        threshold = calibrate_threshold_task(params)
        logger.info("threshold %.4f %s, false-match rate %g", threshold.value, threshold.basis,
                    params.false_match_rate)  # fmt: skip
    folder.forget_failed_scans([v.video_id for v in todo])  # failures are retried by a new run
    scans = _scan_all(todo, params, threshold.value)
    plan = plan_run(folder, scans, ledger=ledger, threshold=threshold,
                    clip_seconds=params.clip_seconds, max_clips_per_seed=params.max_clips_per_seed,
                    shard_size=params.shard_size)  # fmt: skip
    return plan, scans


def _scan_all(videos: list[VideoInput], params: MineParams, threshold: float) -> list[ScanResult]:
    """Scan every video concurrently; an unexpected task failure is that video's row, not the run's end."""
    if not videos:
        return []
    logger = get_run_logger()
    futures = scan_video_task.map(videos, params=unmapped(params), threshold=threshold)
    by_future = {id(f): v for f, v in zip(futures, videos, strict=True)}
    results: dict[str, ScanResult] = {}
    bar = stage_bar("scan", len(videos), "videos", params.progress)
    failed, frames, step, t0 = 0, 0, max(1, len(videos) // 10), time.monotonic()
    for f in as_completed(futures):
        video = by_future[id(f)]
        try:
            result = f.result()
        except Exception as e:  # a bug in one video's scan must not lose the others
            result = ScanResult.failed(video, f"internal: {type(e).__name__}: {e}")
        results[video.video_id] = result
        failed, frames = failed + (not result.ok), frames + result.n_frames
        rate = frames / max(time.monotonic() - t0, 1e-6)
        bar.set_postfix_str(f"{rate:.1f} frames/s, {failed} failed", refresh=False)
        bar.update(1)
        if len(results) % step == 0 or len(results) == len(videos):
            logger.info("scanned %d/%d videos (%d failed)", len(results), len(videos), failed)
    bar.close()
    return [results[v.video_id] for v in videos]


def _make_shards(shards: list[ShardPlan], params: MineParams) -> list[dict[str, Any]]:
    """Every shard staged (cut, per-clip filters), then the run-level filters over all of
    them, then every shard written."""
    if not shards:
        return []
    bar = stage_bar("cut+filter", sum(len(s.keys) for s in shards), "clips", params.progress)
    futures = stage_shard_task.map(shards, params=unmapped(params))
    size = {id(f): len(s.keys) for f, s in zip(futures, shards, strict=True)}
    for future in as_completed(futures):
        future.result()  # every shard staged before the run-level filters
        bar.update(size[id(future)])
    bar.close()
    filter_run_task(shards, params)
    bar = stage_bar("write", len(shards), "shards", params.progress)
    futures = write_shard_task.map(shards, params=unmapped(params))
    for _ in as_completed(futures):
        bar.update(1)
    bar.close()
    return [f.result() for f in futures]
