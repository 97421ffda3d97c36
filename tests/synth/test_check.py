"""The demo's check of mined clips against a planted set's manifest, on hand-made rows."""

from __future__ import annotations

import json

import pandas as pd

import miners.embedders
from synth.check import PIXEL_EMBEDDER, check_planted, choose_embedder

MANIFEST = {
    "planted": [
        {"seed_id": "seed_00", "video": "a.mp4", "start": 2.0, "end": 8.0},
        {"seed_id": "seed_01", "video": "a.mp4", "start": 12.0, "end": 18.0},
        {"seed_id": "seed_01", "video": "b.mp4", "start": 4.0, "end": 9.0},
    ]
}


def row(video: str, seed_id: str, match_time: float, status: str = "ok", reason=None) -> dict:
    captions = [{"seed_id": seed_id, "caption": "c", "similarity": 0.9, "match_time": match_time}]
    return {"video": video, "status": status, "reason": reason, "captions": json.dumps(captions)}


def test_found_wrong_and_verdicts():
    clips = pd.DataFrame([
        row("a.mp4", "seed_00", 5.0),  # found, kept
        row("a.mp4", "seed_01", 15.0, "dropped", "static"),  # found, dropped
        row("b.mp4", "seed_01", 20.0),  # planted pair, but the match lies outside the interval
        row("b.mp4", "seed_02", 6.0),  # a seed that was not planted there
    ])  # fmt: skip
    check = check_planted(MANIFEST, clips)
    assert (check.planted, check.found, check.captioned, check.wrong) == (3, 2, 4, 1)
    assert check.verdicts == {"ok": 1, "static": 1}
    lines = check.lines()
    assert lines[0].startswith("planted (seed, video) pairs found: 2/3;")
    assert lines[0].endswith("not planted: 1/4")
    assert lines[1] == "what the filters made of the found clips: ok 1, static 1"
    assert "'static'" in lines[2]


def test_no_weights_means_the_pixel_embedder(monkeypatch):
    def no_weights(spec, device):
        raise RuntimeError("weights?\nno such file: open_clip_model.safetensors")

    monkeypatch.setattr(miners.embedders, "load_embedder", no_weights)
    embedder, why = choose_embedder()
    assert embedder == PIXEL_EMBEDDER
    assert "no such file: open_clip_model.safetensors" in why
