"""What a mining OUT folder has finished, across runs: the ledger ``OUT/runs.json``.

A scheduled run over a growing video list must mine only the new videos,
number its shards after the last run's and keep ``max_clips_per_seed`` over
all runs; a run killed at any point must, when run again, give the same
dataset as one clean run. The ledger makes both possible:

* it is rewritten atomically, and only after a run's shards are all written,
  so a run either is in it, or is redone from its saved plan;
* it records each finished input by its path or URL (with size and mtime for
  local files, to warn when a file changed after it was mined), the next shard
  number, the clips each seed has, and the threshold the first run used, so
  later runs match on the same scale.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from shards.writer import atomic_write_json

log = logging.getLogger(__name__)

LEDGER = "runs.json"
# What an OUT folder holds that capmine wrote for its runs: --overwrite removes these.
RUN_OUTPUTS = ("scans", "shards", "staging", "plan.json", LEDGER, "report.json", "videos.parquet")


def empty() -> dict[str, Any]:
    return {"runs": [], "videos": {}, "clips_per_seed": {}, "next_shard": 0, "threshold": None}


def load(out: Path) -> dict[str, Any]:
    path = Path(out) / LEDGER
    return json.loads(path.read_text()) if path.exists() else empty()


def identity(url: str) -> dict[str, Any]:
    """Size and modification time of a local input (remote inputs are known by URL alone)."""
    path = url[len("file://") :] if url.startswith("file://") else url
    if "://" in path or not os.path.exists(path):
        return {}
    st = os.stat(path)
    return {"size": st.st_size, "mtime": int(st.st_mtime)}


def new_videos(ledger: dict[str, Any], videos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs no finished run has mined; warns about finished local files that changed."""
    fresh = []
    for v in videos:
        done = ledger["videos"].get(v["video_id"])
        if done is None:
            fresh.append(v)
            continue
        now = identity(v["url"])
        if now and done.get("identity") and now != done["identity"]:
            log.warning("%s changed since run %d mined it; not mined again (use --overwrite)",
                        v["url"], done["run"])  # fmt: skip
    return fresh


def record_run(
    out: Path,
    ledger: dict[str, Any],
    *,
    plan: dict[str, Any],
    scans: list[dict[str, Any]],
    kept_per_seed: dict[str, int],
    threshold: dict[str, Any],
) -> dict[str, Any]:
    """Add a finished run to the ledger and save it. Failed videos are not recorded:
    the next run tries them again."""
    ledger = json.loads(json.dumps(ledger))  # a copy: the caller's stays as it was
    for s in scans:
        if s["status"] == "ok":
            ledger["videos"][s["video_id"]] = {"video": s["video"], "run": plan["run"],
                                               "identity": identity(s["video"])}  # fmt: skip
    for seed_id, n in kept_per_seed.items():
        ledger["clips_per_seed"][seed_id] = ledger["clips_per_seed"].get(seed_id, 0) + n
    indices = [s["index"] for s in plan["shards"]]
    ledger["next_shard"] = max([ledger["next_shard"] - 1, *indices]) + 1
    ledger["threshold"] = ledger["threshold"] or threshold
    ledger["runs"].append({"run": plan["run"], "shards": indices, "videos": len(scans),
                           "clips": len(plan["clips"]), "finished": time.time()})  # fmt: skip
    atomic_write_json(Path(out) / LEDGER, ledger)
    return ledger


def is_finished(ledger: dict[str, Any], run: int) -> bool:
    return any(r["run"] == run for r in ledger["runs"])
