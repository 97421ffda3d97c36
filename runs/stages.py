"""The stages of a mining run after the seeds, as plain functions over a :class:`RunFolder`.

threshold -> scan each video -> plan the clips -> stage each shard (cut, per-clip
filters) -> run-level filters over every staged clip -> write each shard
(:meth:`RunFolder.write_staged`).

Each stage reads what the one before left in OUT and writes its own result
there atomically, so a rerun finds finished work and skips it, and any
orchestrator (the Prefect flow, a Dask cluster, a plain loop) can drive them
passing only paths and small records. ``capmine filter`` re-uses the staging
path with records loaded from a finished run instead of cut (:mod:`runs.refilter`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filters.base import EarlierClips, Filter, FilterContext
from miners.embedders import fingerprint, get_embedder
from miners.index import SeedIndex
from miners.matching import select_clips
from miners.scan import ScanResult, scan_video
from miners.videos import VideoInput
from runs.embeddings import MadeWith, load_earlier, store_kept
from runs.folder import RunFolder
from runs.records import Ledger, RunPlan, ShardPlan, Threshold
from shards.record import ClipRecord

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- threshold


def known_threshold(
    given: float | None, ledger: Ledger, todo: list[VideoInput]
) -> Threshold | None:
    """The threshold this run uses without calibrating: given, else the one earlier runs
    used (one scale over runs), else none is needed when nothing is to be mined.
    None means: calibrate it (:func:`calibrate_threshold`)."""
    if given is not None:
        return Threshold(given, "given")
    if ledger.threshold is not None:
        return ledger.threshold
    if not todo:
        return Threshold(1.0, "nothing to mine")
    return None


def calibrate_threshold(
    seeds: str,
    videos: str,
    *,
    embedder: str,
    device: str = "auto",
    false_match_rate: float = 0.001,
    fps: float = 1.0,
    seed_workers: int = 16,
    seed_guards: dict | None = None,
    hwaccel: str = "auto",
) -> Threshold:
    """Estimate the threshold on a sample of this run's own seeds and videos
    (``hwaccel`` decodes their frames as the scans do)."""
    from miners.calibrate import calibrate

    est = calibrate(
        seeds, videos, embedder=embedder, device=device, false_match_rate=false_match_rate,
        fps=fps, max_seeds=500, max_videos=20, max_frames_per_video=60, seed_workers=seed_workers,
        seed_guards=seed_guards, hwaccel=hwaccel,
    )  # fmt: skip
    basis = f"calibrated on {est['n_seeds']} seeds, {est['n_frames']} frames"
    return Threshold.from_dict(est | {"basis": basis})


# ---------------------------------------------------------------- scans


@functools.lru_cache(maxsize=2)
def _bytes(megabytes: float | None) -> int | None:
    """A size in megabytes (10^6 bytes) as bytes; None stays None (no cap)."""
    return None if megabytes is None else int(megabytes * 1_000_000)


def _seed_index(root: str, fingerprint: str) -> SeedIndex:
    """The run's seed index, loaded once per process while its files stay as they are:
    every video's scan shares it (and, on a GPU, one copy of the seed matrix there)."""
    files = [Path(root) / n for n in ("seeds.npy", "seeds.index")]
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists())
    return _loaded_index(root, fingerprint, stamp)


@functools.lru_cache(maxsize=2)
def _loaded_index(root: str, fingerprint: str, stamp: tuple) -> SeedIndex:
    return SeedIndex.load(Path(root))


def scan_video_into(
    folder: RunFolder,
    video: VideoInput,
    *,
    embedder: str,
    device: str = "auto",
    threshold: float,
    fps: float = 1.0,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    fetch_timeout: float = 600.0,
    max_height: int = 360,
    clip_seconds: float = 10.0,
    max_download_mb: float | None = 2000.0,
    sampler: str = "exact",
    hwaccel: str = "none",
    decode_threads: int = 0,
) -> ScanResult:
    """Scan one video against the run's seed index and keep the result in ``OUT/scans/``.

    Shots are looked for ``clip_seconds`` around each match (a window is never
    longer). A result made with the same seeds, embedder, threshold, fps and
    shot span is returned as it is. A video that cannot be fetched or decoded is
    a failed result. ``fetch_timeout`` (seconds) and ``max_download_mb`` bound each
    download attempt as it runs (None: no size cap). A scan made with another
    ``sampler`` is redone; ``hwaccel`` decodes the same frames, so it is not a setting.
    """
    seeds = folder.seeds_meta()
    if seeds is None:
        raise FileNotFoundError(f"{folder.root}: the seeds are not embedded yet (no seeds.json)")
    settings = {"embedder": embedder, "threshold": threshold, "fps": fps,
                "seeds": seeds.fingerprint, "shot_context": clip_seconds}  # fmt: skip
    if sampler != "exact":  # named only when not the default, so earlier exact scans still count
        settings["sampler"] = sampler
    previous = folder.load_scan(video.video_id)
    if previous is not None and previous.settings == settings:
        return previous
    index = _seed_index(str(folder.root), seeds.fingerprint)
    result = scan_video(
        video, index=index, embedder=get_embedder(embedder, device, batch_size),
        threshold=threshold, fps=fps, batch_size=batch_size, cache_dir=cache_dir or folder.downloads,
        fetch_timeout=fetch_timeout, max_height=max_height, shot_context=clip_seconds,
        max_bytes=_bytes(max_download_mb), sampler=sampler, hwaccel=hwaccel,
        decode_threads=decode_threads,
    )  # fmt: skip
    result.settings = settings
    # the stills before the scan file; a run killed between the two leaves a scan whose
    # stills are missing, and a missing still is decoded again at cut time
    folder.save_peak_stills(video.video_id, result.peak_frames if result.ok else {})
    result.peak_frames = {}
    folder.save_scan(result)
    return result


# ---------------------------------------------------------------- plan


def plan_run(
    folder: RunFolder,
    scans: list[ScanResult],
    *,
    ledger: Ledger,
    threshold: Threshold,
    clip_seconds: float = 10.0,
    max_clips_per_seed: int = 10,
    shard_size: int = 1000,
) -> RunPlan:
    """Choose the clips over the scanned videos, deal them into shards, save the plan.

    Shards are numbered after the ledger's last one and ``max_clips_per_seed``
    holds over all runs (the ledger counts what earlier runs gave each seed).
    """
    seeds = folder.seed_captions()
    row_of = {seed_id: row for row, (seed_id, _) in enumerate(seeds)}
    used = {row_of[k]: n for k, n in ledger.clips_per_seed.items() if k in row_of}
    videos = {s.video_id: {"video": s.video, "duration": s.duration, "source": s.source}
              for s in scans if s.ok}  # fmt: skip
    candidates = [c for s in scans if s.ok for c in s.candidates]
    clips = select_clips(candidates, videos=videos, seeds=seeds, clip_seconds=clip_seconds,
                         max_clips_per_seed=max_clips_per_seed, used=used)  # fmt: skip
    shards = [
        ShardPlan(ledger.next_shard + n, [c.key for c in clips[i : i + shard_size]])
        for n, i in enumerate(range(0, len(clips), shard_size))
    ]
    plan = RunPlan(run=len(ledger.runs), videos=[s.video_id for s in scans], clips=clips,
                   shards=shards, threshold=threshold)  # fmt: skip
    folder.save_plan(plan)
    return plan


# ---------------------------------------------------------------- shards


@dataclass(frozen=True)
class FilterSetup:
    """A filter chain and what its filters borrow from the run; the same for every shard."""

    spec: str = "default"  # default, none, or a YAML file
    min_clip_seconds: float | None = None  # the shots filter's bound, when the user set it
    embedder: str | None = None  # loaded only when a filter of the chain needs it
    device: str = "auto"
    batch_size: int = 64

    def chains(self):
        """(per-clip chain, run-level chain), built fresh: a chain counts what it sees."""
        from filters.registry import split_chain

        overrides = {}
        if self.min_clip_seconds is not None:
            overrides["shots"] = {"min_clip_seconds": self.min_clip_seconds}
        return split_chain(self.spec, overrides)

    def context(self, chain, tmp_dir: Path):
        """What ``chain`` borrows: the embedder only when one of its filters needs it."""
        embedder = None
        if any(f.needs_embedder for f in chain.filters):
            if self.embedder is None:
                raise ValueError(f"filters {self.spec!r} need an embedder and none was given")
            embedder = get_embedder(self.embedder, self.device, self.batch_size)
        return FilterContext(embedder=embedder, tmp_dir=tmp_dir)


def stage_records(
    folder: RunFolder,
    shard: ShardPlan,
    records_into: Callable[[Path], list[ClipRecord]],
    setup: FilterSetup,
) -> dict[str, Any]:
    """Stage one shard: its records (``records_into(staging folder)`` makes their media),
    then the per-clip filters; skipped when the shard is written or staged already."""
    if folder.shard_is_done(shard) or folder.load_staged(shard) is not None:
        return {"index": shard.index, "skipped": True}
    t0 = time.monotonic()
    work = folder.fresh_staging(shard)
    records = records_into(work)
    chain = setup.chains()[0]
    chain(records, setup.context(chain, work))
    folder.save_staged(shard, records, {"filters": chain.stats()})
    return {"index": shard.index, "skipped": False, "seconds": time.monotonic() - t0}


def stage_shard(
    folder: RunFolder,
    shard: ShardPlan,
    setup: FilterSetup,
    *,
    clip_height: int = 360,
    cut_workers: int = 2,
    cache_dir: Path | None = None,
    fetch_timeout: float = 600.0,
    max_height: int = 360,
    max_download_mb: float | None = 2000.0,
    cut: str = "exact",
    keyframe_slack: float = 1.0,
) -> dict[str, Any]:
    """Stage one shard of the plan: its clips cut from their sources (``cut``:
    exact, keyframe or auto, see :mod:`miners.cut`), then filtered."""
    cutter = functools.partial(
        _cut_planned, folder, shard, clip_height=clip_height, cut_workers=cut_workers,
        cache_dir=cache_dir, fetch_timeout=fetch_timeout, max_height=max_height,
        max_download_mb=max_download_mb, cut=cut, keyframe_slack=keyframe_slack,
    )  # fmt: skip
    return stage_records(folder, shard, cutter, setup)


def _cut_planned(
    folder: RunFolder,
    shard: ShardPlan,
    work: Path,
    *,
    clip_height: int,
    cut_workers: int,
    cache_dir: Path | None,
    fetch_timeout: float,
    max_height: int,
    max_download_mb: float | None,
    cut: str = "exact",
    keyframe_slack: float = 1.0,
) -> list[ClipRecord]:
    """The shard's planned clips, cut into ``work``; a clip that cannot be cut is a failed record."""
    from miners.cut import cut_records
    from miners.fetch import SourceCache

    records = folder.load_plan().clips_of(shard)
    scans = {v: folder.load_scan(v) for v in {r.video_id for r in records}}
    from miners.fetch import SOCKET_TIMEOUT

    sources = SourceCache(
        cache_dir or folder.downloads, timeout=min(fetch_timeout, SOCKET_TIMEOUT),
        wall_timeout=fetch_timeout, max_bytes=_bytes(max_download_mb), max_height=max_height,
    )  # fmt: skip
    cut_records(records, work, scans=scans, sources=sources, height=clip_height,
                workers=cut_workers, mode=cut, keyframe_slack=keyframe_slack,
                stills=lambda r: folder.peak_still(r.video_id, r.match_time))  # fmt: skip
    return records


def filter_run(folder: RunFolder, shards: list[ShardPlan], setup: FilterSetup) -> dict[str, Any]:
    """The filters that must see every clip of the run at once (dedup, per-video caps),
    over every staged shard; their verdicts and counts go back into each staging.

    ``dedup`` also compares with the kept clips of the runs the ledger has finished (never
    with ``shards`` themselves), and the vectors of this run's kept clips are stored for
    the runs after it (:mod:`runs.embeddings`). A resumed run whose stagings all hold the
    verdicts already does not take them again: it ends as a clean run does.
    """
    chain = setup.chains()[1]
    staged = [(s, folder.load_staged(s)) for s in shards]
    staged = [(s, st) for s, st in staged if st is not None]
    if not len(chain) or not staged:
        return {}
    taken = [extra.get("run_filters") for _, (_, extra) in staged]
    if all(taken):
        log.info("run-level filters: verdicts already taken for every staged shard")
        return taken[0]
    records = [r for _, (recs, _) in staged for r in recs]
    context = setup.context(chain, folder.root / "staging")
    dedups = [f for f in chain.filters if f.name == "dedup"]
    if dedups:
        earlier = folder.earlier_shards(exclude={s.index for s in shards})
        context.earlier = _earlier_clips(folder, earlier, dedups, context, setup)
    chain(records, context)
    if dedups:
        made = _made_with(setup, context, dedups[0].frames)
        store_kept(folder, [(s.index, recs) for s, (recs, _) in staged], dedups[0].vectors, made)
    for shard, (recs, extra) in staged:
        folder.save_staged(shard, recs, dict(extra, run_filters=chain.stats()))
    return chain.stats()


def _made_with(setup: FilterSetup, context: FilterContext, frames: int) -> MadeWith:
    spec = setup.embedder or ""
    return MadeWith(spec, fingerprint(spec, context.embedder), frames)


def _earlier_clips(
    folder: RunFolder,
    shards: list[int],
    dedups: list[Filter],
    context: FilterContext,
    setup: FilterSetup,
) -> dict[int, EarlierClips]:
    """Earlier runs' kept clips for each dedup filter's frame count (stored vectors written
    back only for the first's, the count this run stores)."""
    earlier = {}
    for f in dedups:
        if f.frames not in earlier:
            embed = functools.partial(f.embed, context=context)
            earlier[f.frames] = load_earlier(
                folder, shards, embed, _made_with(setup, context, f.frames),
                dim=int(context.embedder.dim), store=f is dedups[0],
            )  # fmt: skip
    return earlier


def all_scans(
    folder: RunFolder, videos: list[VideoInput], scans: list[ScanResult]
) -> list[ScanResult]:
    """This run's scans, then those of listed videos earlier runs finished."""
    now = {s.video_id for s in scans}
    earlier = [folder.load_scan(v.video_id) for v in videos if v.video_id not in now]
    return scans + [s for s in earlier if s is not None]
