"""Clips of real footage cut hard against other scenes: one scene a clip, one caption a scene.

A small cut of the clip-quality set (``synth.qualityset``), mined stage by stage
with the default filters: real shots whose seed is their *first* frame (a
window centred on it would be half the scene before), next to noise, a frozen
photo and each other.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from miners.videos import read_videos
from runs.folder import RunFolder
from runs.records import Ledger, Threshold
from runs.stages import FilterSetup, filter_run, plan_run, scan_video_into, stage_shard
from synth.qualityset import judge, make_quality_set
from tests.runs.test_stages import EMBEDDER, embed_seeds

ORDER = ["noise_a", "bbb", "carphone", "frozen_bikes"]  # real | real: adjacent shots


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    qs = make_quality_set(root / "set", videos={"v": ORDER})
    folder = RunFolder(root / "out")
    embed_seeds(str(qs.seeds), folder)
    scans = [scan_video_into(folder, v, embedder=EMBEDDER, device="cpu", threshold=0.8)
             for v in read_videos(qs.videos)]  # fmt: skip
    plan = plan_run(folder, scans, ledger=Ledger(), threshold=Threshold(0.8, "given"))
    setup = FilterSetup("default")
    for shard in plan.shards:
        stage_shard(folder, shard, setup)
    filter_run(folder, plan.shards, setup)
    for shard in plan.shards:
        folder.write_staged(shard)
    rows = pd.concat(pd.read_parquet(p) for p in sorted(folder.shard_dir.glob("*.parquet")))
    return qs, scans, rows.astype(object).where(rows.notna(), None).to_dict("records")


def test_adjacent_real_shots_give_a_clip_each_with_its_own_caption(mined):
    qs, scans, rows = mined
    placed = {p.piece: p for p in qs.placed}
    (scan,) = scans
    shots = {c.seed_row: c.shot for c in scan.candidates}
    assert len(set(shots.values())) == 3  # bbb, carphone and the photo: three shots found
    kept = [r for r in rows if r["status"] == "ok"]
    by_caption = {r["caption"]: r for r in kept}
    assert set(by_caption) == {"footage of bbb", "footage of carphone"}
    for name, r in (("bbb", by_caption["footage of bbb"]),
                    ("carphone", by_caption["footage of carphone"])):  # fmt: skip
        p = placed[name]
        assert [c["caption"] for c in json.loads(r["captions"])] == [f"footage of {name}"]
        # the whole shot (shorter than clip_seconds), and nothing of its neighbours
        assert r["start"] == pytest.approx(p.start, abs=0.1)
        assert r["end"] == pytest.approx(p.end, abs=0.1)
    figures = judge(qs.placed, rows)
    assert figures["purity"] == 1.0 and figures["defects_dropped"] == 1.0
    assert figures["centred_windows_inside"] == 0.0  # what a centred window would have done


def test_the_frozen_photo_beside_them_is_dropped_as_static(mined):
    _, _, rows = mined
    frozen = [r for r in rows if r["caption"] == "footage of frozen bikes"]
    assert [(r["status"], r["reason"]) for r in frozen] == [("dropped", "static")]
