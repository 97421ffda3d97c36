"""The OUT folder of a mining run: its layout, and where its runs stand.

One class knows every path under OUT and every record kept there; the
stages (:mod:`runs.stages`) and the flows ask it, never build a path
themselves::

    OUT/seeds.parquet, seeds.npy, seeds.index(.json), seeds.json   the seed stage, seeds.json last
    OUT/seed_chunks/                 chunks embedded, waiting to be merged
    OUT/scans/VIDEO_ID.json          one video's scan (miners.scan.ScanResult)
    OUT/scans/VIDEO_ID.peaks/MS.jpg  the whole frame of each of its candidates' peaks, by time in ms
    OUT/plan.json                    the current run's clips and shards (RunPlan)
    OUT/staging/NNNNN/               a shard's clips, cut and filtered; records.json last
    OUT/shards/NNNNN.tar, .parquet, _stats.json   a written shard, _stats.json last
    OUT/dropped/NNNNN.tar            --keep-dropped: the media of the shard's dropped clips,
                                     written before the shard's _stats.json
    OUT/embeddings/NNNNN.npz         the dedup filter's vectors of a shard's kept clips (runs.embeddings)
    OUT/runs.json                    the ledger of finished runs (Ledger)
    OUT/videos.parquet, report.json  the run's rows and totals
    OUT/report.html, report/KEY.jpg|mp4  the run's page, with its thumbnails and clips
    OUT/downloads/                   fetched videos, unless --cache-dir says elsewhere
    OUT/.capmine, .capmine.lock      capmine's mark and the running run's lock (runs.lock)

Clean-ups delete only names capmine makes (the patterns below), never follow
a link and never reach outside OUT or the download cache: a user's file in
OUT stays, whatever its folder.

A run moves through planned (``plan.json`` with its threshold), staged
(every shard's ``records.json``) and done (every shard's stats file, then the
ledger); each step is written atomically, so a killed run resumes from the
last one.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from miners.cut import JPEG_QUALITY
from miners.scan import ScanResult
from runs.lock import OutFolderError, check_subfolders
from runs.records import Ledger, RunPlan, SeedsMeta, ShardPlan
from shards.record import ClipRecord
from shards.writer import (
    atomic_write_bytes,
    atomic_write_json,
    shard_name,
    write_dropped,
    write_shard,
    write_table,
)

_TMP = r"\.[A-Za-z0-9_]+\.tmp"  # atomic writes' temp suffix (shards.writer.temp_file)
_KEY = r"[A-Za-z0-9_-]+"  # sample keys and video ids (shards.keys)


def _with_temps(names: str) -> re.Pattern:
    """``names``, and the temp files their atomic writes leave when a run is killed."""
    return re.compile(rf"(?:{names})|\.(?:{names}){_TMP}")


# The files capmine writes in each of its folders.
SHARD_FILES = _with_temps(r"\d{5,}(?:\.tar|\.parquet|_stats\.json)|sizes\.json")
DROPPED_FILES = _with_temps(r"\d{5,}\.tar")
SCAN_FILES = _with_temps(rf"{_KEY}\.json")
PEAK_DIRS = re.compile(rf"{_KEY}\.peaks")
PEAK_FILES = _with_temps(r"\d{8,}\.jpg")
SEED_CHUNK_FILES = _with_temps(r"[0-9a-f]{12}-\d{10}\.npz")
STAGED_FILES = re.compile(
    rf"{_KEY}\.(?:mp4|flac|jpg)"  # a clip's media
    rf"|\.{_KEY}\.(?:mp4|flac|jpg)\.[0-9a-f]+\.part"  # being cut (miners.cut)
    rf"|\.{_KEY}\.[0-9a-f]+\.(?:mp4|flac)"  # being trimmed (media.video.trim)
    rf"|records\.json|\.records\.json{_TMP}"
)
STAGING_DIRS = re.compile(r"\d{5,}")
EMBEDDING_FILES = _with_temps(r"\d{5,}\.npz")
REPORT_FILES = _with_temps(rf"{_KEY}\.(?:jpg|mp4)")  # report.html's thumbnails and clips


def _stale_temp(name: str, pattern: re.Pattern) -> bool:
    return name.startswith(".") and name.endswith(".tmp") and pattern.fullmatch(name) is not None


def remove_file(path: Path) -> bool:
    """Unlink ``path`` when it is a plain file (never a link, never a folder)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def clear_folder(
    folder: Path, files: re.Pattern, dirs: re.Pattern | None = None, inner: re.Pattern | None = None
) -> None:
    """Delete the files of ``folder`` named by ``files`` (and, in subfolders named by ``dirs``,
    those named by ``inner``, else ``files`` too); a folder left empty goes. Anything else,
    links included, stays."""
    if folder.is_symlink():
        raise OutFolderError(
            f"{folder} is a symbolic link: capmine does not delete through links; "
            "make it a real folder"
        )
    if not folder.is_dir():
        return
    for entry in list(os.scandir(folder)):
        if entry.is_symlink():
            continue
        if entry.is_dir() and dirs is not None and dirs.fullmatch(entry.name):
            clear_folder(Path(entry.path), inner or files)
        elif entry.is_file() and files.fullmatch(entry.name):
            remove_file(Path(entry.path))
    try:
        folder.rmdir()
    except OSError:  # something of the user's is still there
        pass


class RunFolder:
    """Paths and records of one OUT folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # ------------------------------------------------------------ layout

    @property
    def shard_dir(self) -> Path:
        return self.root / "shards"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def seed_chunk_dir(self) -> Path:
        return self.root / "seed_chunks"

    def path(self, name: str) -> Path:
        """A file at the top of OUT: ``seeds.json``, ``plan.json``, ``report.json``, ..."""
        return self.root / name

    def seed_chunk(self, fingerprint: str, start: int) -> Path:
        return self.seed_chunk_dir / f"{fingerprint[:12]}-{start:010d}.npz"

    @property
    def scan_dir(self) -> Path:
        return self.root / "scans"

    def scan_file(self, video_id: str) -> Path:
        return self.scan_dir / f"{video_id}.json"

    def staging(self, index: int) -> Path:
        """Where one shard's clips wait, cut and scored, until the shard is written."""
        return self.root / "staging" / shard_name(index)

    @property
    def dropped_dir(self) -> Path:
        """Where ``--keep-dropped`` keeps the media of dropped clips, a tar a shard."""
        return self.root / "dropped"

    def dropped_file(self, index: int) -> Path:
        """``dropped/NNNNN.tar``: shard ``index``'s dropped clips, laid out as its tar."""
        return self.dropped_dir / f"{shard_name(index)}.tar"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    def embedding_file(self, index: int) -> Path:
        """``embeddings/NNNNN.npz``: the clip vectors of shard ``index``'s kept clips."""
        return self.embeddings_dir / f"{shard_name(index)}.npz"

    def shard_file(self, index: int, suffix: str) -> Path:
        """``shards/NNNNN.tar``, ``NNNNN.parquet`` or ``NNNNN_stats.json`` (suffix ``_stats.json``)."""
        return self.shard_dir / f"{shard_name(index)}{suffix}"

    # What an OUT folder holds that capmine wrote for its runs: --overwrite removes these
    # (capmine's files in these folders, these files at the top).
    RUN_FOLDERS = {"scans": (SCAN_FILES, PEAK_DIRS, PEAK_FILES), "shards": (SHARD_FILES, None, None),
                   "dropped": (DROPPED_FILES, None, None),
                   "staging": (STAGED_FILES, STAGING_DIRS, None),
                   "embeddings": (EMBEDDING_FILES, None, None),
                   "report": (REPORT_FILES, None, None)}  # fmt: skip
    RUN_FILES = ("plan.json", "runs.json", "report.json", "report.html", "videos.parquet")

    def start_over(self) -> None:
        """``--overwrite``: remove what earlier runs wrote (seed embeddings stay: they are
        checked). Only capmine's own files go: a user's file or a link stays."""
        check_subfolders(self.root)  # a link is refused before anything goes
        for name, (files, dirs, inner) in self.RUN_FOLDERS.items():
            clear_folder(self.root / name, files, dirs, inner)
        names = _with_temps("|".join(re.escape(n) for n in self.RUN_FILES))
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if names.fullmatch(entry.name) and not entry.is_symlink() and entry.is_file():
                    remove_file(Path(entry.path))

    def clear_seed_chunks(self) -> None:
        """Remove the embedded seed chunks (merged, or from another seed table)."""
        clear_folder(self.seed_chunk_dir, SEED_CHUNK_FILES)

    def clear_staging(self, index: int | None = None) -> None:
        """Remove one shard's staged clips, or (``None``) all of the staging folder's."""
        if index is None:
            clear_folder(self.root / "staging", STAGED_FILES, STAGING_DIRS)
        else:
            clear_folder(self.staging(index), STAGED_FILES)

    # ------------------------------------------------------------ seeds

    def seeds_meta(self) -> SeedsMeta | None:
        """The finished seed stage, or None when its files are not all there."""
        names = ("seeds.json", "seeds.npy", "seeds.parquet")
        if not all(self.path(n).exists() for n in names):
            return None
        return SeedsMeta.from_dict(json.loads(self.path("seeds.json").read_text()))

    def mined_with(self) -> str | None:
        """The embedder spec the run's seeds were embedded with (``seeds.json``), or None.

        Read on its own: a run copied without its seed arrays still says what it used.
        """
        if not self.path("seeds.json").exists():
            return None
        return json.loads(self.path("seeds.json").read_text()).get("embedder")

    def save_seeds_meta(self, meta: SeedsMeta) -> None:
        atomic_write_json(self.path("seeds.json"), meta.to_dict())

    def seed_captions(self) -> list[tuple[str, str]]:
        """``(id, caption)`` of every embedded seed, in index row order."""
        import pandas as pd

        df = pd.read_parquet(self.path("seeds.parquet"), columns=["id", "caption", "row"])
        df = df[df["row"] >= 0].sort_values("row")
        return list(zip(df["id"], df["caption"], strict=True))

    # ------------------------------------------------------------ scans

    def load_scan(self, video_id: str) -> ScanResult | None:
        path = self.scan_file(video_id)
        return ScanResult.from_dict(json.loads(path.read_text())) if path.exists() else None

    def save_scan(self, scan: ScanResult) -> None:
        path = self.scan_file(scan.video_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, scan.to_dict())

    def scans(self, video_ids: list[str]) -> list[ScanResult]:
        """The saved scans of ``video_ids``, in that order (each must exist)."""
        scans = [self.load_scan(v) for v in video_ids]
        missing = [v for v, s in zip(video_ids, scans, strict=True) if s is None]
        if missing:
            raise FileNotFoundError(f"{self.root}: no saved scan of {missing[:3]}")
        return scans  # type: ignore[return-value]

    def forget_failed_scans(self, video_ids: list[str]) -> None:
        """Failed scans are tried again by a new run: their saved results go."""
        for video_id in video_ids:
            scan = self.load_scan(video_id)
            if scan is not None and not scan.ok:
                self.scan_file(video_id).unlink()
                self.clear_peak_stills(video_id)

    # ------------------------------------------------------------ peak stills

    def peak_dir(self, video_id: str) -> Path:
        return self.root / "scans" / f"{video_id}.peaks"

    @staticmethod
    def peak_name(time: float) -> str | None:
        """The still's file name of a peak at ``time`` seconds (whole milliseconds); None for
        a time that cannot have one (negative or NaN)."""
        if not time >= -0.0005:
            return None
        return f"{round(time * 1000):08d}.jpg"

    def save_peak_stills(self, video_id: str, frames: dict[float, np.ndarray]) -> int:
        """Write each frame as the JPEG still of its peak time, replacing the video's
        earlier stills (a rescan's peaks lie elsewhere); returns how many were written."""
        folder = self.peak_dir(video_id)
        self.clear_peak_stills(video_id)
        named = {self.peak_name(t): f for t, f in frames.items() if self.peak_name(t) is not None}
        if not named:
            return 0
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in named.items():
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=JPEG_QUALITY)
            atomic_write_bytes(folder / name, buf.getvalue())
        return len(named)

    def clear_peak_stills(self, video_id: str) -> None:
        clear_folder(self.peak_dir(video_id), PEAK_FILES)

    def peak_still(self, video_id: str, time: float) -> Path | None:
        """The still of a candidate's peak at ``time`` (``Candidate.peak_time``), or None
        when the scan kept none (then the frame must be decoded again)."""
        name = self.peak_name(time)
        if name is None:
            return None
        path = self.peak_dir(video_id) / name
        return path if path.is_file() and not path.is_symlink() else None

    # ------------------------------------------------------------ ledger and plan

    def ledger(self) -> Ledger:
        path = self.path("runs.json")
        return Ledger.from_dict(json.loads(path.read_text())) if path.exists() else Ledger()

    def save_ledger(self, ledger: Ledger) -> None:
        atomic_write_json(self.path("runs.json"), ledger.to_dict())

    def save_plan(self, plan: RunPlan) -> None:
        atomic_write_json(self.path("plan.json"), plan.to_dict())

    def load_plan(self) -> RunPlan:
        return RunPlan.from_dict(json.loads(self.path("plan.json").read_text()))

    def pending_plan(self, ledger: Ledger) -> RunPlan | None:
        """The saved plan of a run that did not finish, if there is one."""
        if not self.path("plan.json").exists():
            return None
        plan = self.load_plan()
        if ledger.is_finished(plan.run) or plan.threshold is None:
            return None
        return plan

    # ------------------------------------------------------------ shards

    def shard_stats(self, shard: ShardPlan) -> dict[str, Any] | None:
        """The stats of ``shard`` when it is written from the same clips as planned now."""
        path = self.shard_file(shard.index, "_stats.json")
        if not path.exists():
            return None
        stats = json.loads(path.read_text())
        return stats if stats.get("keys") == shard.keys else None

    def shard_is_done(self, shard: ShardPlan) -> bool:
        return self.shard_stats(shard) is not None

    def fresh_staging(self, shard: ShardPlan) -> Path:
        """``shard``'s staging folder, emptied of an earlier, unfinished attempt."""
        self.clear_staging(shard.index)
        stage = self.staging(shard.index)
        stage.mkdir(parents=True, exist_ok=True)
        return stage

    def save_staged(
        self, shard: ShardPlan, records: list[ClipRecord], extra: dict | None = None
    ) -> None:
        """Record the staged clips (written last: it marks the staging complete)."""
        doc = {"keys": shard.keys, "records": [r.to_dict() for r in records], "extra": extra or {}}
        atomic_write_json(self.staging(shard.index) / "records.json", doc)

    def load_staged(self, shard: ShardPlan) -> tuple[list[ClipRecord], dict] | None:
        """The staged clips of ``shard``, or None when its staging is missing or from another plan."""
        path = self.staging(shard.index) / "records.json"
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        if doc["keys"] != shard.keys:
            return None
        return [ClipRecord.from_dict(r) for r in doc["records"]], doc["extra"]

    def write_staged(self, shard: ShardPlan, keep_dropped: bool = False) -> dict[str, Any]:
        """Write a staged shard (tar, parquet, stats last) and remove its staging folder.

        ``keep_dropped``: the dropped clips' media go to ``dropped/NNNNN.tar`` first, before
        the shard's stats mark it complete; without it an earlier attempt's is removed, so
        a dropped tar always belongs to its shard as written.
        """
        done = self.shard_stats(shard)
        if done is not None:
            return {"index": shard.index, "skipped": True, **done}
        staged = self.load_staged(shard)
        if staged is None:
            raise RuntimeError(
                f"shard {shard.index} has not been staged in {self.staging(shard.index)}"
            )
        records, extra = staged
        self._remove_stale_temps(shard.index)
        if keep_dropped:
            write_dropped(self.dropped_dir, shard.index, records)
        else:
            remove_file(self.dropped_file(shard.index))
        stats = write_shard(self.shard_dir, shard.index, records, extra_stats=extra)
        self.clear_staging(shard.index)
        return {"index": shard.index, "skipped": False, **stats}

    def _remove_stale_temps(self, index: int) -> None:
        """A killed run's temp files of shard ``index`` (its shard's and its dropped tar's)."""
        name = shard_name(index)
        for folder, pattern in ((self.shard_dir, SHARD_FILES), (self.dropped_dir, DROPPED_FILES)):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.name.startswith(f".{name}") and _stale_temp(entry.name, pattern):
                    remove_file(Path(entry.path))

    def save_embeddings(self, index: int, data: bytes) -> None:
        """Write shard ``index``'s ``embeddings/NNNNN.npz`` (a killed write's temp files go)."""
        if self.embeddings_dir.is_symlink():
            raise OutFolderError(
                f"{self.embeddings_dir} is a symbolic link: capmine neither writes nor deletes "
                "through links in OUT; make it a real folder"
            )
        path = self.embedding_file(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(path.parent):
            if entry.name.startswith(f".{path.name}.") and _stale_temp(entry.name, EMBEDDING_FILES):
                remove_file(Path(entry.path))
        atomic_write_bytes(path, data)

    def earlier_shards(self, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """The written shards of the runs the ledger has finished, but ``exclude`` (the
        current run's own): what a new run's clips may repeat."""
        indices = sorted({i for run in self.ledger().runs for i in run.shards} - set(exclude))
        return [i for i in indices if self.shard_file(i, "_stats.json").is_file()]

    def kept_per_seed(self, shards: list[ShardPlan]) -> dict[str, int]:
        """Clips written for each seed id (any caption of a kept clip counts)."""
        import pandas as pd

        counts: dict[str, int] = {}
        for shard in shards:
            side = pd.read_parquet(self.shard_file(shard.index, ".parquet"))
            for caps in side.loc[side["status"] == "ok", "captions"]:
                for c in json.loads(caps):
                    counts[c["seed_id"]] = counts.get(c["seed_id"], 0) + 1
        return counts

    # ------------------------------------------------------------ the run's outputs

    def write_videos_table(self, scans: list[ScanResult], plan: RunPlan) -> None:
        """``OUT/videos.parquet``: a row for every input video, failed ones with their error."""
        n_clips: dict[str, int] = {}
        for c in plan.clips:
            n_clips[c.video_id] = n_clips.get(c.video_id, 0) + 1
        rows = [
            {"video": s.video, "video_id": s.video_id, "status": s.status, "error": s.error,
             "duration": s.duration, "n_frames": s.n_frames, "n_matches": s.n_matches,
             "n_clips": n_clips.get(s.video_id, 0), "meta": json.dumps(s.meta or {})}
            for s in scans
        ]  # fmt: skip
        write_table(self.path("videos.parquet"), rows)

    def remove_downloads(self, scans: list[ScanResult], cache_dir: Path | None = None) -> int:
        """Delete the downloaded sources the run kept for cutting; returns how many.

        Only plain files inside the download cache (``cache_dir``, else ``OUT/downloads``)
        go: a scan file naming a path elsewhere (copied or edited) deletes nothing.
        """
        cache = os.path.realpath(cache_dir or self.downloads)
        n = 0
        for s in scans:
            if not (s.downloaded and s.local_path):
                continue
            local = Path(s.local_path)
            parent = os.path.realpath(local.parent)
            if os.path.commonpath([cache, parent]) != cache:
                continue
            n += remove_file(Path(parent) / local.name)
        return n

    def write_report(self, report: dict[str, Any]) -> None:
        atomic_write_json(self.path("report.json"), report)
