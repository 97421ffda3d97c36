"""Motion on generated video: moving kept; a still and a pan over a still dropped."""

from __future__ import annotations

import numpy as np

from filters.motion import MotionFilter, motion_scores
from tests.filters import make_clip, make_pan_clip


def test_moving_still_and_panned_still(tmp_path):
    recs = [
        make_clip(tmp_path, "moving", "testsrc2"),
        make_clip(tmp_path, "fractal", "mandelbrot"),
        make_clip(tmp_path, "still", "color=c=red"),
        make_pan_clip(tmp_path, "slow_pan", speed=6),
        make_pan_clip(tmp_path, "fast_pan", speed=20),
    ]
    MotionFilter()(recs)
    verdicts = {r.key: r.reason for r in recs}
    assert verdicts == {
        "moving": None,
        "fractal": None,
        "still": "static",
        "slow_pan": "pan_still",
        "fast_pan": "pan_still",
    }
    pan = recs[3].scores
    assert pan["motion"] > 0.004 and pan["pan_explained"] > 0.9


def test_shift_search_recovers_a_synthetic_translation():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (80, 120), dtype=np.uint8)
    frames = np.stack([big[8:72, 10 + 3 * i : 74 + 3 * i] for i in range(6)])
    s = motion_scores(frames, max_shift=0.15)
    assert s["motion"] > 0.1 and s["motion_residual"] < 1e-6
    noise = rng.integers(0, 255, (6, 64, 64), dtype=np.uint8)
    assert motion_scores(noise, max_shift=0.15)["pan_explained"] < 0.1
