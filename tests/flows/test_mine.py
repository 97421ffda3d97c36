"""The mining flow end to end, on a planted set whose answers are known.

One session-scoped run on ``synth.planted``'s set (seed pictures planted in
videos at known intervals, distractors, noise, broken inputs), mined with the
weight-free pixel embedder through ``--embedder``, is checked for what the
issue promises: planted pairs found with the right caption and time, no
clip for seeds never planted, a failed row for every broken input, shards
readable by webdataset, and a rerun that redoes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds

from flows.params import MineParams
from miners.calibrate import calibrate
from synth.planted import make_synthetic_set

EMBEDDER = "miners.embedders:pixel_embedder"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    manifest = make_synthetic_set(
        root / "data", n_seeds=14, n_unplanted=3, n_videos=6, seconds=36.0
    )
    return root, manifest


@pytest.fixture(scope="module")
def mined(planted, prefect_harness):
    from flows.mine import run_mine

    root, manifest = planted
    calib = calibrate(
        str(root / "data" / "seeds"), str(root / "data" / "videos.txt"), embedder=EMBEDDER
    )
    params = MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / "out"), embedder=EMBEDDER, threshold=calib["threshold"], shard_size=4,
        device="cpu", filters="none",
    )  # fmt: skip
    report = run_mine(params)
    return root / "out", manifest, report, params, calib


def _samples(out: Path) -> list[dict]:
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False))


def _pairs(samples):
    """(seed_id, video) -> match_time of every (clip, caption) pair emitted."""
    out = {}
    for s in samples:
        meta = json.loads(s["json"])
        for c in meta["captions"]:
            out.setdefault((c["seed_id"], meta["video"]), []).append(c["match_time"])
    return out


def test_calibrated_threshold_separates_planted_from_null(mined):
    _, _, _, _, calib = mined
    assert 0.0 < calib["threshold"] < 0.8, calib
    assert set(calib["nulls"]) == {"seed_vs_other_seeds", "frame_vs_scrambled_seeds"}


def test_planted_pairs_are_found_with_caption_and_time(mined):
    out, manifest, _, _, _ = mined
    samples = _samples(out)
    pairs = _pairs(samples)
    planted = manifest["planted"]
    found = [p for p in planted
             if any(p["start"] <= t <= p["end"] for t in pairs.get((p["seed_id"], p["video"]), []))]  # fmt: skip
    recall = len(found) / len(planted)
    truth = {(p["seed_id"], p["video"]): (p["start"], p["end"]) for p in planted}
    emitted = [(k, t) for k, ts in pairs.items() for t in ts]
    right = [(k, t) for k, t in emitted if k in truth and truth[k][0] <= t <= truth[k][1]]
    precision = len(right) / max(1, len(emitted))
    print(f"planted recall {recall:.3f} ({len(found)}/{len(planted)}); "
          f"caption precision {precision:.3f} ({len(right)}/{len(emitted)})")  # fmt: skip
    assert recall >= 0.95
    assert precision >= 0.95
    # the caption text travels too: txt is the best caption, json lists them all
    for s in samples:
        meta = json.loads(s["json"])
        assert s["txt"].decode() == meta["captions"][0]["caption"]
        assert meta["captions"][0]["caption"] == manifest["seeds"][meta["captions"][0]["seed_id"]]


def test_unplanted_seeds_give_no_clip(mined):
    out, manifest, _, _, _ = mined
    seeds_out = {sid for sid, _ in _pairs(_samples(out))}
    assert manifest["unplanted"] and not seeds_out & set(manifest["unplanted"])


def test_clip_windows_and_media(mined):
    out, manifest, _, params, _ = mined
    samples = _samples(out)
    assert samples
    spans = {(p["seed_id"], p["video"]): (p["start"], p["end"]) for p in manifest["planted"]}
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["start"] <= meta["match_time"] <= meta["end"]
        # the window is the planted scene, or clip_seconds of it: never the filler beside it
        a, b = spans[(meta["captions"][0]["seed_id"], meta["video"])]
        length = meta["end"] - meta["start"]
        assert a - 0.1 <= meta["start"] and meta["end"] <= b + 0.1, (meta, a, b)
        assert min(params.clip_seconds, b - a) - 0.25 <= length <= params.clip_seconds + 0.01
    for s in samples[:4]:
        meta = json.loads(s["json"])
        assert {"mp4", "jpg", "txt", "json"} <= set(s) and s["jpg"][:2] == b"\xff\xd8"
        assert ("flac" in s) == meta["source"]["has_audio"]
    side = pd.concat(pd.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet")))
    assert len(side) == sum(1 for _ in samples) and set(side["status"]) == {"ok"}
    stats = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("*_stats.json"))]
    assert all(s["count"] <= params.shard_size for s in stats)


def test_broken_inputs_are_failed_rows_and_the_run_finishes(mined):
    out, manifest, report, _, _ = mined
    videos = pd.read_parquet(out / "videos.parquet")
    failed = videos[videos["status"] == "failed"]
    assert sorted(failed["video"]) == sorted(manifest["broken_videos"])
    assert failed["error"].str.len().min() > 10
    assert (
        "not_found"
        in failed.set_index("video").loc[
            str(Path(manifest["broken_videos"][0]).parent / "missing.mp4"), "error"
        ]
    )
    seeds = pd.read_parquet(out / "seeds.parquet")
    bad = seeds[seeds["status"] == "failed"]
    assert list(bad["id"]) == manifest["broken_seeds"] and bad["error"].iloc[0]
    assert report["videos"]["failed"] == len(manifest["broken_videos"])
    ok = videos[videos["status"] == "ok"]
    assert (ok["n_frames"] > 0).all() and ok["n_clips"].sum() == report["clips"]["ok"]


def test_rerun_on_same_out_redoes_nothing(mined):
    """A second run over the same list is a new, empty run: finished videos are skipped,
    complete shards untouched; only the failed inputs are tried again."""
    from flows.mine import run_mine

    out, manifest, report, params, _ = mined
    ok_scans = [
        p for p in (out / "scans").glob("*.json") if json.loads(p.read_text())["status"] == "ok"
    ]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*")}
    stamps |= {p: p.stat().st_mtime_ns for p in ok_scans}
    again = run_mine(params)
    assert again["seeds"]["reused"] is True
    assert again["run"] == 1 and again["skipped_videos"] == len(ok_scans)
    assert again["videos"]["total"] == len(manifest["broken_videos"])  # retried, failed again
    assert again["clips"]["planned"] == 0 and again["next_shard"] == report["next_shard"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    videos = pd.read_parquet(out / "videos.parquet")
    assert len(videos) == len(manifest["broken_videos"]) + len(ok_scans)  # a row for every input


def test_cli_runs_the_flow_and_reports_failures(planted, tmp_path):
    root, manifest = planted
    videos = tmp_path / "videos.txt"
    lines = [p["video"] for p in manifest["planted"][:1]] + [str(tmp_path / "nope.mp4")]
    videos.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "mine",
         "--seeds", str(root / "data" / "seeds"), "--videos", str(videos), "--out", str(tmp_path / "out"),
         "--embedder", EMBEDDER, "--threshold", "0.6", "--clip-seconds", "4", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 failed" in proc.stdout and "input(s) failed" in proc.stdout
    assert (tmp_path / "out" / "shards" / "00000_stats.json").exists()
