"""Read the list of videos to mine, in the formats users already have.

Accepted inputs (the video2dataset conventions, plus plain lists):

* a text file (``.txt``, ``.list``, ``.lst`` or no extension): one path or URL
  a line; blank lines and ``#`` comments are skipped;
* a CSV / TSV / parquet / JSONL table with a ``url`` column; every other column
  is kept, JSON-serialisable, in :attr:`VideoInput.meta`;
* a folder: every video file below it, recursively, in sorted order.

Relative local paths in a list are taken relative to the list file's folder, so
a list travels with the videos beside it whatever the working directory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from shards.keys import video_id_for

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}
)
TEXT_EXTENSIONS = frozenset({"", ".txt", ".list", ".lst"})
TABLE_EXTENSIONS = frozenset({".csv", ".tsv", ".parquet", ".jsonl"})

ACCEPTED = (
    "a text file (.txt or no extension) with one path or URL a line, "
    "a CSV/TSV/parquet/JSONL table with a 'url' column, "
    f"or a folder of video files ({' '.join(sorted(VIDEO_EXTENSIONS))})"
)


@dataclass
class VideoInput:
    """One video to mine: where it is, its stable key, and the user's extra columns."""

    url: str
    video_id: str
    meta: dict[str, Any] = field(default_factory=dict)


def read_videos(path: str | Path) -> list[VideoInput]:
    """The videos named by ``path`` (list file, table or folder), duplicates dropped.

    Raises FileNotFoundError when ``path`` does not exist and ValueError when it
    is not a format listed in :data:`ACCEPTED`: a wrong input is a bad run, not
    a bad sample, so it fails at once.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"video list {str(path)!r} does not exist; expected {ACCEPTED}")
    if path.is_dir():
        rows = _read_folder(path)
    else:
        suffix = path.suffix.lower()
        if suffix in TABLE_EXTENSIONS:
            rows = _read_table(path, suffix)
        elif suffix in TEXT_EXTENSIONS:
            rows = _read_text(path)
        else:
            raise ValueError(f"cannot read videos from {str(path)!r}: expected {ACCEPTED}")
    videos = _dedupe(rows, path)
    if not videos:
        log.warning("no videos found in %s", path)
    return videos


def _read_text(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """One entry a line; ``#`` starts a comment only at the start of a line (URLs carry ``#``)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((_resolve(line, path.parent), {}))
    return rows


def _read_table(path: Path, suffix: str) -> list[tuple[str, dict[str, Any]]]:
    """Rows of a table with a ``url`` column; other columns become JSON-safe metadata."""
    import pandas as pd  # heavy: only tables need it

    if suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix == ".jsonl":
        df = pd.read_json(path, lines=True, dtype=False)
    else:
        # the url stays text even when it looks numeric; other columns keep their types
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={"url": str})
    if "url" not in df.columns:
        raise ValueError(
            f"video table {str(path)!r} has no 'url' column (columns: {list(df.columns)}); "
            f"expected {ACCEPTED}"
        )
    # a JSON round trip turns NaN into None, numpy scalars into Python ones and
    # timestamps into ISO strings, so meta can go straight into a parquet or json
    metas = json.loads(
        df.drop(columns="url").to_json(orient="records", date_format="iso", default_handler=str)
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    for i, (url, meta) in enumerate(zip(df["url"].tolist(), metas, strict=True)):
        if not isinstance(url, str) or not url.strip():
            log.warning("%s row %d has no url; skipped", path, i)
            continue
        rows.append((_resolve(url.strip(), path.parent), meta))
    return rows


def _read_folder(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """Video files below ``folder``, sorted by relative path so runs are repeatable."""
    root = folder.resolve()
    found = [
        p
        for p in root.rglob("*")
        # dot files include macOS "._x.mp4" resource forks, which are not videos
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    ]
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return [(str(p), {}) for p in found]


def _resolve(entry: str, base: Path) -> str:
    """A URL unchanged; a local path made absolute against the list file's folder.

    A ``file:`` URL with a relative path (``file:clips/a.mp4``, ``file:-x``) is a
    local path too, so it is resolved the same way: against the list, never the
    working directory.
    """
    parsed = urlparse(entry)
    scheme = parsed.scheme
    if scheme.lower() == "file" and not parsed.netloc and not parsed.path.startswith("/"):
        return _resolve(url2pathname(parsed.path), base) if parsed.path else entry
    if len(scheme) > 1:  # a one-letter scheme is a Windows drive, i.e. a path
        return entry
    local = Path(entry).expanduser()
    if not local.is_absolute():
        local = base.absolute() / local
    return os.path.normpath(local)


def _dedupe(rows: list[tuple[str, dict[str, Any]]], source: Path) -> list[VideoInput]:
    """Keep the first row of each URL: a video mined twice would give duplicate clips."""
    seen: set[str] = set()
    videos: list[VideoInput] = []
    dropped: list[str] = []
    for url, meta in rows:
        if url in seen:
            dropped.append(url)
            continue
        seen.add(url)
        videos.append(VideoInput(url=url, video_id=video_id_for(url), meta=meta))
    if dropped:
        log.warning(
            "%s: %d duplicated video(s) kept once (first wins), e.g. %s",
            source,
            len(dropped),
            dropped[:3],
        )
    return videos
