"""The default chain end to end on a few generated clips."""

from __future__ import annotations

import json

from filters.registry import build_chain
from tests.filters import make_clip


def test_default_chain_names_every_drop(tmp_path):
    recs = [
        make_clip(tmp_path, "good", "testsrc2", caption="a clock with coloured bars"),
        make_clip(tmp_path, "quiet", "testsrc2", audio="anullsrc", caption="a quiet clock face"),
        make_clip(tmp_path, "still", "smptebars", caption="colour bars on a screen"),
        make_clip(tmp_path, "terse", "testsrc2", caption="clock"),
        make_clip(tmp_path, "mute", "mandelbrot", audio=None, caption="a fractal zooming in"),
    ]
    chain = build_chain("default")
    out = chain(recs)
    assert out is recs
    assert {r.key: r.reason for r in recs} == {
        "good": None, "quiet": "silent", "still": "static", "terse": "short_caption", "mute": None,
    }  # fmt: skip
    stats = chain.stats()
    assert stats["reasons"] == {"silent": 1, "static": 1, "short_caption": 1}
    assert stats["examples"]["static"] == ["still"]
    assert stats["filters"]["text"]["scored"] == 5 and stats["filters"]["audio"]["scored"] == 4
    json.dumps(stats)  # goes into the shard's stats file as is
    good = recs[0].scores
    assert {"n_cuts", "audio_rms_db", "motion", "blank_fraction", "speech_fraction"} <= set(good)
    json.dumps(good, allow_nan=False)  # finite floats only
