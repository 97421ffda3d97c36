"""What the run report shows, read back from an OUT folder.

:func:`load_run` gathers a finished run (``capmine mine``) or a re-filtered one
(``capmine filter``): ``report.json``, every clip row of the complete shards,
the failed inputs of ``videos.parquet`` and ``seeds.parquet``, and the scans'
matches. A file that is missing where it must exist, or that cannot be read,
raises :class:`ReportError` naming it; optional ones (scans, the input tables)
are simply absent from the page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from runs.folder import RunFolder

# The columns of a shard's parquet rows the report reads.
CLIP_COLUMNS = ["key", "video", "video_id", "start", "end", "match_time", "similarity", "scores",
                "caption", "captions", "status", "reason", "error"]  # fmt: skip
_WORD = re.compile(r"[A-Za-z_]+")


class ReportError(ValueError):
    """The run report cannot be written: a file of the run is missing or unreadable."""


@dataclass
class RunView:
    """One OUT folder as the report sees it."""

    root: Path
    report: dict[str, Any]  # report.json
    clips: pd.DataFrame  # every clip row of the complete shards, with its shard number
    shard_stats: list[dict[str, Any]]  # the complete shards' stats files, in shard order
    videos: pd.DataFrame  # videos.parquet (empty when there is none)
    seeds: pd.DataFrame  # seeds.parquet (empty when there is none)
    matches: list[tuple[float, str]] = field(default_factory=list)  # (similarity, fate)

    @property
    def refiltered(self) -> bool:
        """A run written by ``capmine filter``: its report.json is the re-filter's."""
        return "refilter" in self.report

    @property
    def source(self) -> Path | None:
        """The run a re-filtered run was made from."""
        src = self.report.get("refilter", {}).get("source") if self.refiltered else None
        return Path(src) if src else None

    @property
    def threshold(self) -> dict[str, Any] | None:
        """The run's threshold and its calibration figures; for a re-filtered run, its
        source's (when that run is still there)."""
        if not self.refiltered:
            return self.report.get("threshold")
        if self.source is None:
            return None
        try:
            return json.loads((self.source / "report.json").read_text()).get("threshold")
        except (OSError, ValueError, AttributeError):
            return None  # the source is gone or not a mining run: the page says no threshold


def read_json(path: Path) -> Any:
    """A JSON file of the run; a missing or broken one is a :class:`ReportError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise ReportError(f"{path} cannot be read: {e}") from None


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet table of the run; a broken one is a :class:`ReportError` naming it."""
    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise ReportError(f"{path} is missing") from None
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ReportError(f"{path} cannot be read: {' '.join(str(e).split())}") from None


def check_run(out: str | Path) -> Path:
    """``out`` as a Path when it holds a finished run's ``report.json``."""
    root = Path(out)
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder: give the OUT folder of a capmine run")
    if not (root / "report.json").is_file():
        raise ReportError(
            f"{root / 'report.json'} is missing: {root} holds no finished capmine run "
            "(capmine mine or capmine filter writes it at the end)"
        )
    return root


def load_run(out: str | Path) -> RunView:
    """Everything the report shows of the run in ``out``."""
    root = check_run(out)
    report = read_json(root / "report.json")
    if not isinstance(report, dict) or not ({"clips", "refilter"} & set(report)):
        raise ReportError(f"{root / 'report.json'} is not a capmine run report")
    stats, clips = read_shards(RunFolder(root).shard_dir)
    view = RunView(root=root, report=report, clips=clips, shard_stats=stats,
                   videos=_optional_table(root / "videos.parquet"),
                   seeds=_optional_table(root / "seeds.parquet"))  # fmt: skip
    view.matches = match_fates(clips, _scan_candidates(root, view.videos, view.seeds))
    return view


def read_shards(shard_dir: Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """The stats and the clip rows of every complete shard (its stats file written)."""
    stats, frames = [], []
    for path in sorted(shard_dir.glob("*_stats.json")):
        name = path.name.removesuffix("_stats.json")
        if not name.isdigit():
            continue
        stats.append(read_json(path))
        table = path.with_name(f"{name}.parquet")
        df = read_parquet(table)
        missing = [c for c in CLIP_COLUMNS if c not in df.columns]
        if missing:
            raise ReportError(f"{table} lacks the column(s) {', '.join(missing)}")
        df = df[CLIP_COLUMNS].copy()
        df.insert(0, "shard", int(name))
        frames.append(df)
    if not frames:
        return stats, pd.DataFrame(columns=["shard", *CLIP_COLUMNS])
    return stats, pd.concat(frames, ignore_index=True)


def _optional_table(path: Path) -> pd.DataFrame:
    return read_parquet(path) if path.exists() else pd.DataFrame()


def _scan_candidates(root: Path, videos: pd.DataFrame, seeds: pd.DataFrame) -> list[tuple]:
    """``(video_id, seed_id, peak_time, similarity)`` of every match segment the scans of
    the listed videos found (none for a run without scans)."""
    folder = RunFolder(root)
    scan_dir = folder.scan_dir
    if not scan_dir.is_dir():
        return []
    if "video_id" in videos.columns:
        paths = [folder.scan_file(str(v)) for v in videos["video_id"]]
    else:
        paths = sorted(scan_dir.glob("*.json"))
    seed_ids: dict[int, str] = {}
    if {"id", "row"} <= set(seeds.columns):
        seed_ids = {int(r): str(i) for i, r in zip(seeds["id"], seeds["row"], strict=True)}
    out = []
    for path in paths:
        if not path.is_file():
            continue
        scan = read_json(path)
        for c in scan.get("candidates", []):
            seed = seed_ids.get(int(c["seed_row"]), str(c["seed_row"]))
            out.append((scan["video_id"], seed, float(c["peak_time"]), float(c["similarity"])))
    return out


def clip_captions(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A clip row's captions, best first (its ``captions`` column is JSON)."""
    raw = row.get("captions")
    if not isinstance(raw, str):
        return []
    try:
        caps = json.loads(raw)
    except ValueError:
        return []
    return [c for c in caps if isinstance(c, dict)]


def match_fates(clips: pd.DataFrame, candidates: list[tuple]) -> list[tuple[float, str]]:
    """``(similarity, fate)`` of every match: each caption of a clip (fate: the clip's
    status), and each match segment of the scans that no clip holds (fate ``not cut``)."""
    out, held = [], set()
    for row in clips.to_dict("records"):
        for c in clip_captions(row):
            out.append((float(c.get("similarity", row["similarity"])), str(row["status"])))
            held.add((row["video_id"], str(c.get("seed_id")), round(float(c["match_time"]), 3)))
    for video_id, seed_id, time, sim in candidates:
        if (video_id, seed_id, round(time, 3)) not in held:
            out.append((sim, "not cut"))
    return out


def error_kind(error: Any) -> str:
    """A short name for an error message: its leading plain words, up to the first colon
    or the first word that is not plain (a path, a number), at most four words:
    ``fetch not_found: ...`` is ``fetch not_found``, ``decode: ...`` is ``decode``."""
    if not isinstance(error, str) or not error.strip():
        return "unknown"
    words = []
    for token in error.split()[:4]:
        word = token.removesuffix(":")
        if not _WORD.fullmatch(word):
            break
        words.append(word)
        if token.endswith(":"):
            break
    return " ".join(words) if words else "other"


def failed_inputs(view: RunView) -> list[dict[str, str]]:
    """Every failed video and seed of the run: ``{"input", "name", "error", "kind"}``."""
    return failed_rows(view.videos, view.seeds)


def failed_inputs_of(out: str | Path) -> list[dict[str, str]]:
    """:func:`failed_inputs` read straight from ``OUT/videos.parquet`` and ``seeds.parquet``
    (no shard is read): what the Prefect artifact lists."""
    root = Path(out)
    return failed_rows(_optional_table(root / "videos.parquet"),
                       _optional_table(root / "seeds.parquet"))  # fmt: skip


def failed_rows(videos: pd.DataFrame, seeds: pd.DataFrame) -> list[dict[str, str]]:
    """The failed rows of the two input tables: ``input`` (video or seed), ``name`` (the
    video, or the seed's image), ``error`` and its ``kind`` (:func:`error_kind`)."""
    out = []
    for table, kind in ((videos, "video"), (seeds, "seed")):
        if table.empty or "status" not in table.columns:
            continue
        failed = table[table["status"] != "ok"]
        for row in failed.to_dict("records"):
            error = row.get("error") if isinstance(row.get("error"), str) else ""
            name = row.get("video") if kind == "video" else row.get("image") or row.get("id")
            told = error  # a seed's error starts with its image's path: the kind follows it
            if kind == "seed" and isinstance(row.get("image"), str) and row["image"]:
                told = error.removeprefix(row["image"]).removeprefix(":").strip() or error
            out.append({"input": kind, "name": str(name if name is not None else ""),
                        "error": error, "kind": error_kind(told)})  # fmt: skip
    return out
