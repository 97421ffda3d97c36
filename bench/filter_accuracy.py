"""Accuracy of the filter chain on a generated set whose bad clips are known (issue 4).

Generates the acceptance set of ``synth/clipset.py`` (20 good clips; 4 each
silent, static, crossing a cut, duplicated, caption-mismatched) in a temporary
folder, filters it as a mining run does (default chain + agreement + dedup, with
the set's colour test embedder), writes the run, then re-filters it with
``capmine filter`` and a stricter YAML. Prints one JSON object: per-kind recall
of the bad clips (dropped with the right reason), the share of good clips kept,
and what the stricter chain dropped on top, with how many scores it computed
again and whether the kept media came through byte for byte::

    .venv/bin/python bench/filter_accuracy.py            # about a minute on two cores
    .venv/bin/python bench/filter_accuracy.py --keep /tmp/fa   # keep the runs to look at
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, synth/ (the clip set) among them

import pandas as pd  # noqa: E402

from filters.base import Filter  # noqa: E402
from shards.reader import iter_samples  # noqa: E402
from synth.clipset import STRICT, acceptance_spec, accuracy, mine, write_run  # noqa: E402


def tar_media(shard_dir: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for tar in sorted(shard_dir.glob("*.tar")):
        for s in iter_samples(tar):
            out[s["__key__"]] = {e: s[e] for e in ("mp4", "flac", "jpg") if e in s}
    return out


def strict_yaml(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"filters": acceptance_spec(**STRICT)}, sort_keys=False))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", help="folder to work in and keep (default: a temporary one)")
    p.add_argument("--workers", type=int, default=4, help="clips encoded at once")
    args = p.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run(Path(args.keep), args.workers, keep=True)
    else:
        with tempfile.TemporaryDirectory(prefix="filter-accuracy-") as tmp:
            run(Path(tmp), args.workers, keep=False)


def run(folder: Path, workers: int, keep: bool) -> None:
    """Mine the set in ``folder``, re-filter it strictly, print the figures."""
    t0 = time.perf_counter()
    records, specs, per_clip, run_level = mine(folder, workers=workers)
    t_mine = time.perf_counter() - t0
    acc = accuracy(records, specs)
    write_run(folder / "run", records)

    # `capmine filter RUN --filters strict.yaml --out STRICT`, in process so scoring can be counted.
    from flows.cli import main as capmine

    scored: Counter[str] = Counter()
    original_score = Filter.score

    def counting_score(self, record, context):
        scored[self.name] += 1
        return original_score(self, record, context)

    Filter.score = counting_score
    t1 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
            rc = capmine(
                ["filter", str(folder / "run"), "--out", str(folder / "strict"),
                 "--filters", str(strict_yaml(folder / "strict.yaml")), "--device", "cpu"]
            )  # fmt: skip
    finally:
        Filter.score = original_score
    t_refilter = time.perf_counter() - t1
    if rc != 0:
        raise SystemExit(f"capmine filter failed with {rc}")

    side = pd.concat(
        pd.read_parquet(p) for p in sorted((folder / "strict/shards").glob("*.parquet"))
    )
    kept_before = {r.key for r in records if r.status == "ok"}
    kept_after = set(side.loc[side["status"] == "ok", "key"])
    newly = side[side["key"].isin(kept_before - kept_after)]
    src, dst = tar_media(folder / "run" / "shards"), tar_media(folder / "strict" / "shards")
    print(
        json.dumps(
            {
                "clips": acc["counts"],
                "bad_dropped_right_reason": round(acc["bad_dropped_right_reason"], 3),
                "bad_recall_per_kind": acc["per_kind"],
                "good_kept": round(acc["good_kept"], 3),
                "wrong": acc["wrong"],
                "strict_refilter": {
                    "bounds": STRICT,
                    "kept_before": len(kept_before),
                    "kept_after": len(kept_after),
                    "extra_drops": dict(Counter(newly["reason"])),
                    "status_after": dict(Counter(side["status"])),
                    "scores_computed_again": dict(scored),
                    "kept_media_identical": all(dst[k] == src[k] for k in kept_after)
                    and set(dst) == kept_after,
                },
                "seconds": {
                    "generate_and_filter": round(t_mine, 1),
                    "capmine_filter": round(t_refilter, 1),
                },
                "folder": str(folder) if keep else None,
            },
            indent=2,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
