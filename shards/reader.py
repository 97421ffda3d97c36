"""Reading shards back: samples from the tar, rows from the sidecar, completeness from stats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from media.tars import iter_raw_samples


def iter_samples(tar_path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one dict a sample: ``{"__key__": K, "mp4": bytes, "json": dict, "txt": str, ...}``,
    grouped the way webdataset groups them (:mod:`media.tars`)."""
    for sample in iter_raw_samples(tar_path):
        if "json" in sample:
            sample["json"] = json.loads(sample["json"])
        if "txt" in sample:
            sample["txt"] = sample["txt"].decode("utf-8")
        yield sample


def read_sidecars(shard_dir: str | Path) -> pd.DataFrame:
    """All complete shards' parquet rows, with a ``shard`` column."""
    frames = []
    for stats in sorted(Path(shard_dir).glob("*_stats.json")):
        name = stats.name.removesuffix("_stats.json")
        df = pd.read_parquet(stats.with_name(f"{name}.parquet"))
        df.insert(0, "shard", name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def complete_shards(shard_dir: str | Path) -> list[Path]:
    """Tars whose stats file exists: the only ones a reader should trust."""
    out = []
    for stats in sorted(Path(shard_dir).glob("*_stats.json")):
        tar = stats.with_name(stats.name.removesuffix("_stats.json") + ".tar")
        if tar.exists():
            out.append(tar)
    return out
