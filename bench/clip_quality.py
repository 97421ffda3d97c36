"""Clip quality on real footage: is each kept clip one scene, and is each defect dropped?

Builds the set of ``synth/qualityset.py`` (real single shots, real fast-cut
footage, busy noise, frozen photos, pans and zooms over photos and muted real
footage, concatenated with hard cuts in several orders), mines it with
``capmine mine`` and the default filters (weight-free pixel embedder, so it
runs anywhere), and prints one JSON object:

* ``purity``: the share of real single shots kept with at least 0.9 of the
  clip's time inside the shot (goal >= 0.95);
* ``defects_dropped``: the share of defects dropped with the right reason
  (``static``, ``pan_still``, ``silent``, ``crosses_cut``; goal >= 0.95);
* ``baseline_centred_windows_inside``: on the same matches, the share of real
  shots whose window would lie 0.9 inside the shot had it been ``clip_seconds``
  centred on the peak (VideoCC3M's rule, capmine's before windows were placed
  inside the shot);
* ``cut_detection``: recall on generated hard cuts (busy|busy, busy|calm,
  calm|busy, calm|calm) and real ones, and false cuts per minute of real
  single-shot footage (:mod:`synth.cutset`);
* ``misses``: every shot or defect that scored wrong, with its verdicts.

    .venv/bin/python bench/clip_quality.py              # about two minutes on two cores
    .venv/bin/python bench/clip_quality.py --keep /tmp/cq   # keep the set and the run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, synth/ (the set) among them

import pandas as pd  # noqa: E402

from synth.cutset import cut_detection_figures  # noqa: E402
from synth.qualityset import judge, make_quality_set  # noqa: E402

EMBEDDER = "miners.embedders:pixel_embedder"
THRESHOLD = 0.8  # a seed's own footage scores 0.9-1.0 under the pixel embedder; others < 0.6


def mine(qs, out: Path) -> float:
    """``capmine mine`` over the set, as a user runs it; returns its wall seconds."""
    cli = Path(sys.executable).with_name("capmine")
    cmd = [str(cli) if cli.exists() else "capmine", "mine", "--seeds", str(qs.seeds),
           "--videos", str(qs.videos), "--out", str(out), "--embedder", EMBEDDER,
           "--threshold", str(THRESHOLD), "--device", "cpu", "--no-progress", "--overwrite"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_HOME": str(out.parent / "prefect-home")}  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"capmine mine failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def clips(out: Path) -> list[dict]:
    rows = pd.concat(pd.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet")))
    rows = rows.astype(object).where(rows.notna(), None)
    return rows.to_dict("records")


def run(folder: Path, keep: bool) -> None:
    t0 = time.perf_counter()
    qs = make_quality_set(folder / "set")
    t_make = time.perf_counter() - t0
    t_mine = mine(qs, folder / "run")
    figures = judge(qs.placed, clips(folder / "run"))
    t1 = time.perf_counter()
    cuts = cut_detection_figures(folder / "cuts")
    t_cuts = time.perf_counter() - t1
    report = json.loads((folder / "run" / "report.json").read_text())
    print(
        json.dumps(
            {
                "purity": figures["purity"],
                "defects_dropped": figures["defects_dropped"],
                "defects_by_kind": figures["defects_by_kind"],
                "kept_real_clips_inside": figures["kept_real_clips_inside"],
                "baseline_centred_windows_inside": figures["centred_windows_inside"],
                "n_real_shots": figures["n_real_shots"],
                "n_defects": figures["n_defects"],
                "cut_detection": cuts,
                "clips": report["clips"],
                "dropped": report["filters"]["dropped"],
                "misses": figures["misses"],
                "seconds": {
                    "make_set": round(t_make, 1),
                    "capmine_mine": round(t_mine, 1),
                    "cut_detection": round(t_cuts, 1),
                },  # fmt: skip
                "folder": str(folder) if keep else None,
            },
            indent=2,
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", help="folder to work in and keep (default: a temporary one)")
    args = p.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run(Path(args.keep), keep=True)
    else:
        with tempfile.TemporaryDirectory(prefix="clip-quality-") as tmp:
            run(Path(tmp), keep=False)


if __name__ == "__main__":
    main()
