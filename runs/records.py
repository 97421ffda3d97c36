"""The typed records of a mining run, each read and written by :class:`runs.folder.RunFolder`.

Every record crosses a process (a Prefect task's result, a Dask worker's
return) or a crash (a JSON file in OUT), so each is a dataclass with
``to_dict``/``from_dict`` whose JSON is the file's format:

* :class:`SeedsMeta`, ``OUT/seeds.json``: the seed embeddings and what made them;
* :class:`SeedPlan`: reuse the saved embeddings, or embed these chunks;
* :class:`Threshold`: the similarity threshold and what it rests on;
* :class:`ShardPlan` and :class:`RunPlan`, ``OUT/plan.json``: one run's clips and shards;
* :class:`Ledger`, ``OUT/runs.json``: what earlier runs finished.

The scan result, one video's record, is :class:`miners.scan.ScanResult`.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from miners.scan import ScanResult
from miners.videos import VideoInput
from shards.record import ClipRecord

log = logging.getLogger(__name__)


@dataclass
class SeedsMeta:
    """``OUT/seeds.json``: written last when the seeds are embedded, it marks them done."""

    fingerprint: str  # seed table + embedder + index kind: another one means embed again
    embedder: str  # the spec; the trainer reads it to use the same frozen towers
    dim: int
    image_size: int
    n_seeds: int
    n_ok: int
    n_failed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeedsMeta:
        return cls(**d)


@dataclass
class SeedPlan:
    """What the seed stage will do: reuse ``reuse``, or embed ``chunks`` ([start, stop) rows)."""

    fingerprint: str
    n_seeds: int
    dim: int
    image_size: int
    chunks: list[list[int]] = field(default_factory=list)
    reuse: SeedsMeta | None = None


@dataclass
class Threshold:
    """The cosine similarity a frame needs to match a seed, and why it is that value."""

    value: float
    basis: str  # "given", "calibrated on N seeds, M frames", ...
    calibration: dict[str, Any] = field(default_factory=dict)  # the figures it rests on

    def to_dict(self) -> dict[str, Any]:
        return {**self.calibration, "threshold": self.value, "basis": self.basis}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        rest = {k: v for k, v in d.items() if k not in ("threshold", "basis")}
        return cls(value=d["threshold"], basis=d["basis"], calibration=rest)


@dataclass
class ShardPlan:
    """One shard of a run: its number and the keys of the clips it will hold, in order."""

    index: int
    keys: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardPlan:
        return cls(index=int(d["index"]), keys=list(d["keys"]))


@dataclass
class RunPlan:
    """``OUT/plan.json``: one run's scanned videos, chosen clips and their shards.

    Saved before any clip is cut, with its threshold, so a killed run is
    finished from exactly this plan.
    """

    run: int
    videos: list[str]  # video ids this run scanned
    clips: list[ClipRecord]
    shards: list[ShardPlan]
    threshold: Threshold | None = None

    def clips_of(self, shard: ShardPlan) -> list[ClipRecord]:
        """Fresh records of ``shard``'s clips (the plan's own stay untouched)."""
        wanted = set(shard.keys)
        return [ClipRecord.from_dict(c.to_dict()) for c in self.clips if c.key in wanted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "videos": list(self.videos),
            "clips": [c.to_dict() for c in self.clips],
            "shards": [s.to_dict() for s in self.shards],
            "threshold": self.threshold.to_dict() if self.threshold else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPlan:
        return cls(
            run=int(d["run"]),
            videos=list(d["videos"]),
            clips=[ClipRecord.from_dict(c) for c in d["clips"]],
            shards=[ShardPlan.from_dict(s) for s in d["shards"]],
            threshold=Threshold.from_dict(d["threshold"]) if d.get("threshold") else None,
        )


# ---------------------------------------------------------------- the ledger


def file_identity(url: str) -> dict[str, int]:
    """Size and modification time of a local input (remote inputs are known by URL alone)."""
    path = url[len("file://") :] if url.startswith("file://") else url
    if "://" in path or not os.path.exists(path):
        return {}
    st = os.stat(path)
    return {"size": st.st_size, "mtime": int(st.st_mtime)}


@dataclass
class LedgerVideo:
    """An input a finished run mined."""

    video: str  # path or URL
    run: int
    identity: dict[str, int] = field(default_factory=dict)  # size and mtime of a local file


@dataclass
class LedgerRun:
    run: int
    shards: list[int]
    videos: int
    clips: int
    finished: float  # Unix time


@dataclass
class Ledger:
    """``OUT/runs.json``: what an OUT folder has finished, across runs.

    A scheduled run over a growing video list must mine only the new videos,
    number its shards after the last run's and keep ``max_clips_per_seed`` over
    all runs; a run killed at any point must, when run again, give the same
    dataset as one clean run. The ledger makes both possible: it is rewritten
    atomically, and only after a run's shards are all written, so a run either
    is in it or is redone from its saved plan; and it keeps the threshold the
    first run used, so later runs match on the same scale.
    """

    runs: list[LedgerRun] = field(default_factory=list)
    videos: dict[str, LedgerVideo] = field(default_factory=dict)  # by video id
    clips_per_seed: dict[str, int] = field(default_factory=dict)  # clips written, by seed id
    next_shard: int = 0
    threshold: Threshold | None = None

    def is_finished(self, run: int) -> bool:
        return any(r.run == run for r in self.runs)

    def new_videos(self, videos: list[VideoInput]) -> list[VideoInput]:
        """The inputs no finished run has mined; warns about finished local files that changed."""
        fresh = []
        for v in videos:
            done = self.videos.get(v.video_id)
            if done is None:
                fresh.append(v)
                continue
            now = file_identity(v.url)
            if now and done.identity and now != done.identity:
                log.warning("%s changed since run %d mined it; not mined again (use --overwrite)",
                            v.url, done.run)  # fmt: skip
        return fresh

    def with_run(
        self, plan: RunPlan, scans: list[ScanResult], kept_per_seed: dict[str, int]
    ) -> Ledger:
        """A new ledger with ``plan``'s run added. Failed videos are not recorded: the
        next run tries them again."""
        new = copy.deepcopy(self)
        for s in scans:
            if s.ok:
                new.videos[s.video_id] = LedgerVideo(s.video, plan.run, file_identity(s.video))
        for seed_id, n in kept_per_seed.items():
            new.clips_per_seed[seed_id] = new.clips_per_seed.get(seed_id, 0) + n
        indices = [s.index for s in plan.shards]
        new.next_shard = max([new.next_shard - 1, *indices]) + 1
        if scans:  # a run with nothing to scan sets no scale for the runs after it
            new.threshold = new.threshold or plan.threshold
        new.runs.append(LedgerRun(plan.run, indices, len(scans), len(plan.clips), time.time()))
        return new

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [asdict(r) for r in self.runs],
            "videos": {k: asdict(v) for k, v in self.videos.items()},
            "clips_per_seed": dict(self.clips_per_seed),
            "next_shard": self.next_shard,
            "threshold": self.threshold.to_dict() if self.threshold else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ledger:
        return cls(
            runs=[LedgerRun(**r) for r in d["runs"]],
            videos={k: LedgerVideo(**v) for k, v in d["videos"].items()},
            clips_per_seed=dict(d["clips_per_seed"]),
            next_shard=int(d["next_shard"]),
            threshold=Threshold.from_dict(d["threshold"]) if d.get("threshold") else None,
        )
