"""Blank frames and letterboxing on generated video."""

from __future__ import annotations

from filters.blank import BlankFilter
from tests.filters import make_clip


def test_black_letterbox_and_normal(tmp_path):
    recs = [
        make_clip(tmp_path, "normal", "testsrc2"),
        make_clip(tmp_path, "black", "color=c=black"),
        make_clip(tmp_path, "white", "color=c=white"),
        # a 128x40 picture in a 128x128 frame: 69% bars
        make_clip(tmp_path, "boxed", "testsrc2", vf="scale=128:40,pad=128:128:0:44:black"),
        # 2.35:1-ish bars in 4:3: 25% bars, under the default bound
        make_clip(tmp_path, "wide", "testsrc2", vf="pad=128:96:0:12:black"),
        # a pillarbox: 64 px wide picture in the middle
        make_clip(tmp_path, "pillar", "testsrc2", vf="scale=40:72,pad=128:72:44:0:black"),
    ]
    BlankFilter()(recs)
    verdicts = {r.key: r.reason for r in recs}
    assert verdicts == {
        "normal": None,
        "black": "blank",
        "white": "blank",
        "boxed": "letterbox",
        "wide": None,
        "pillar": "letterbox",
    }
    assert abs(recs[3].scores["letterbox"] - (1 - 40 / 128)) < 0.03
    assert abs(recs[4].scores["letterbox"] - 0.25) < 0.03
    assert recs[1].scores["blank_fraction"] == 1.0
