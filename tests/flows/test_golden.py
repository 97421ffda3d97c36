"""What a run produces, pinned: a planted set mined with the default filters, then re-filtered.

The first run of this module on a new layout of the code must give the very
output the committed golden file holds: the same seeds and videos rows, the
same clip keys, windows, captions, scores and verdicts in every shard, the
same stats, ledger, plan and report (timings and absolute paths aside). It is
the check that a restructuring changed no result.

Rewrite the golden file only when a change is meant to alter what a run
produces, and say so in the commit::

    CAPMINE_WRITE_GOLDEN=1 .venv/bin/pytest tests/flows/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

GOLDEN = Path(__file__).with_name("golden") / "planted_run.json"
EMBEDDER = "miners.embedders:pixel_embedder"
# Stricter than filters/default.yaml, so the re-filter drops clips the run kept.
STRICT = """filters:
  - {name: text, min_words: 6}
  - {name: audio, min_rms_db: -30.0}
  - {name: caps, max_per_video: 1}
"""
# Wall-clock figures, and the input files' modification times (the set is generated anew).
VARYING_KEYS = {"seconds", "video_seconds", "finished", "timings", "mtime"}
# Scores a clip gained after the golden file was written, and only those. Since the
# filter-contract change (every filter writes scores, then decides from them alone),
# caps records each clip's rank within its video as `video_rank`; the verdicts it gives
# are the golden ones, and test_caps_rank_every_kept_clip checks the ranks themselves.
IGNORED_SCORES = {"video_rank"}


@pytest.fixture(scope="module")
def produced(tmp_path_factory, prefect_harness) -> dict[str, Any]:
    from flows.cli import main as capmine
    from flows.mine import run_mine
    from flows.params import MineParams
    from synth.planted import make_synthetic_set

    root = tmp_path_factory.mktemp("golden")
    make_synthetic_set(root / "data", n_seeds=10, n_unplanted=2, n_videos=4, seconds=30.0, seed=7)
    params = MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / "out"), embedder=EMBEDDER, shard_size=4, device="cpu",
    )  # fmt: skip
    run_mine(params)
    (root / "strict.yaml").write_text(STRICT)
    assert capmine(["filter", str(root / "out"), "--filters", str(root / "strict.yaml"),
                    "--out", str(root / "strict")]) == 0  # fmt: skip
    return {"mined": dump_run(root / "out", root), "refiltered": dump_run(root / "strict", root)}


def test_a_run_produces_what_it_produced_before(produced):
    if os.environ.get("CAPMINE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(produced, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    expected = json.loads(GOLDEN.read_text())
    assert_same(
        without_scores(produced, IGNORED_SCORES), without_scores(expected, IGNORED_SCORES), ""
    )


def test_caps_rank_every_kept_clip(produced):
    """The one score the golden file predates: every ok clip of the mined run has its rank."""
    ok = 0
    for index, shard in produced["mined"]["shards"].items():
        for row in shard["rows"]:
            if row["status"] == "ok":
                ok += 1
                assert row["scores"].get("video_rank", 0) >= 1, (index, row["key"])
        for name, member in shard["tar"]:
            if name.endswith(".json"):
                assert member["scores"]["video_rank"] >= 1, (index, name)
    assert ok >= 4


def test_the_golden_run_is_not_trivial(produced):
    """The pinned run keeps clips, drops clips for several reasons, re-cuts some to their
    shot, and fails some inputs; the re-filter drops more."""
    rows = {run: [row for shard in produced[run]["shards"].values() for row in shard["rows"]]
            for run in ("mined", "refiltered")}  # fmt: skip
    statuses = [row["status"] for row in rows["mined"]]
    assert statuses.count("ok") >= 4 and statuses.count("dropped") >= 2
    assert {row["reason"] for row in rows["refiltered"]} >= {"static", "video_cap"}
    assert any(row["end"] - row["start"] < 10.0 for row in rows["mined"])  # shrunk to a shot
    assert any(row["status"] == "failed" for row in produced["mined"]["videos"])
    assert any(row["status"] == "failed" for row in produced["mined"]["seeds"])


# ---------------------------------------------------------------- the dump


def dump_run(out: Path, root: Path) -> dict[str, Any]:
    """Everything a run folder holds that a user reads, with paths made relative to ``root``."""
    doc: dict[str, Any] = {"shards": {}}
    for name in ("seeds.parquet", "videos.parquet"):
        if (out / name).exists():
            doc[name.removesuffix(".parquet")] = _rows(out / name)
    for name in ("runs.json", "plan.json", "report.json"):
        if (out / name).exists():
            doc[name.removesuffix(".json")] = json.loads((out / name).read_text())
    for stats in sorted((out / "shards").glob("*_stats.json")):
        index = stats.name.removesuffix("_stats.json")
        doc["shards"][index] = {
            "stats": json.loads(stats.read_text()),
            "rows": _rows(out / "shards" / f"{index}.parquet"),
            "tar": _tar(out / "shards" / f"{index}.tar"),
        }
    report = doc.get("report", {})
    # Not the data: parameters gain fields as options are added (their values are the
    # test's), and where tasks ran is the options' choice.
    for key in ("params", "task_runner"):
        report.pop(key, None)
    return _clean(doc, str(root))


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = pd.read_parquet(path).to_dict("records")
    for row in rows:
        for col in ("captions", "scores", "source", "meta"):
            if isinstance(row.get(col), str):
                row[col] = json.loads(row[col])
    return rows


def _tar(path: Path) -> list[Any]:
    """Member names, and the text of the json and txt members (media bytes carry encoder noise)."""
    members = []
    with tarfile.open(path) as tar:
        for m in tar:
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if m.name.endswith(".json"):
                members.append([m.name, json.loads(data)])
            elif m.name.endswith(".txt"):
                members.append([m.name, data.decode()])
            else:
                members.append([m.name, len(data) > 0])
    return members


def _clean(value: Any, root: str) -> Any:
    """Timings out, paths relative, NaN as None: what is left must not vary between runs."""
    if isinstance(value, dict):
        return {_clean(k, root): _clean(v, root) for k, v in value.items() if k not in VARYING_KEYS}
    if isinstance(value, list | tuple):
        return [_clean(v, root) for v in value]
    if isinstance(value, str):
        value = value.replace(root, "<ROOT>")
        # a video id hashes the video's absolute path; ffmpeg names its contexts by address
        value = re.sub(r"-[0-9a-f]{10}(?![0-9a-f])", "-<hash>", value)
        return re.sub(r" @ 0x[0-9a-f]+", " @ 0x", value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item(), root)
    return value


def without_scores(value: Any, names: set[str]) -> Any:
    """``value`` with the score keys ``names`` taken out of every ``scores`` mapping in it."""
    if isinstance(value, dict):
        return {
            k: {n: s for n, s in v.items() if n not in names}
            if k == "scores" and isinstance(v, dict)
            else without_scores(v, names)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_scores(v, names) for v in value]
    return value


def assert_same(got: Any, want: Any, where: str) -> None:
    """Equal, floats to 1e-6 relative (decoded pixels are exact; sums may round differently)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a mapping"
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, int | float), f"{where}: {got!r} != {want!r}"
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
