"""Motion on generated and real video: moving kept; a still, and a pan or zoom over a still,
dropped."""

from __future__ import annotations

import numpy as np
import pytest

from filters.motion import (
    MotionFilter,
    _warp,
    motion_scores,
    shift_residual,
    similarity_residual,
)
from media.video import trim
from shards.record import ClipRecord
from synth.kenburns import painted_photo, real_photo, write_ken_burns, write_moving_subject
from synth.realclips import real_clip
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


# Ken Burns moves over still photos (synth.kenburns) must score as stills; real footage and
# a subject moving over a still must pass. Clips are 4 s at 10 fps (the filter samples 8
# frames), the slow zoom 10 s at 5 fps; rates are per 10 s as in synth.kenburns.
PHOTOS = {
    "bunny": lambda: real_photo("bigbuckbunny", 2.0),
    "bikes": lambda: real_photo("bikes", 2.0),
    "painted": lambda: painted_photo(),
}
MOVES = [  # (move, zoom_rate, pan_rate, seconds)
    ("zoom_in", 1.3, 0.1, 4.0),
    ("zoom_out", 1.5, 0.1, 4.0),
    ("pan", 1.0, 0.2, 4.0),
    ("zoom_pan", 1.2, 0.1, 4.0),
]


def clip_record(key: str, mp4) -> ClipRecord:
    return ClipRecord(key=key, video=f"{key}.mp4", video_id=key, start=0.0, end=1.0,
                      match_time=0.5, similarity=0.9, mp4=str(mp4))  # fmt: skip


@pytest.fixture(scope="module")
def photos():
    return {name: make() for name, make in PHOTOS.items()}


def test_ken_burns_moves_over_photos_are_pan_still(tmp_path, photos):
    recs = []
    for pname, photo in photos.items():
        for move, zoom, pan, seconds in MOVES:
            path = write_ken_burns(tmp_path / f"{pname}_{move}.mp4", photo, seconds=seconds,
                                   move=move, fps=10, zoom_rate=zoom, pan_rate=pan, tone_hz=None)  # fmt: skip
            recs.append(clip_record(f"{pname}:{move}", path))
    slow = write_ken_burns(tmp_path / "slow.mp4", photos["bunny"], seconds=10, move="zoom_in",
                           fps=5, zoom_rate=1.1, tone_hz=None)  # fmt: skip
    recs.append(clip_record("bunny:slow_zoom_in", slow))
    still = write_ken_burns(tmp_path / "still.mp4", photos["bikes"], seconds=4, move="still",
                            fps=10, tone_hz=None)  # fmt: skip
    recs.append(clip_record("bikes:still", still))
    MotionFilter()(recs)
    verdicts = {r.key: r.reason for r in recs}
    assert verdicts == {r.key: "pan_still" for r in recs[:-1]} | {"bikes:still": "static"}
    zooms = {r.key: r.scores["zoom"] for r in recs}
    assert zooms["bunny:pan"] < 0.002 < zooms["bunny:zoom_in"]
    # The shift-only model (max_zoom 1, as before) lets the zooms through.
    old = MotionFilter(max_zoom=1.0, blur=0.0, noise_floor=0.0)
    zoom_recs = [clip_record(r.key, r.mp4) for r in recs if "zoom" in r.key]
    old(zoom_recs)
    assert all(r.reason is None for r in zoom_recs)


def test_real_footage_and_a_moving_subject_pass(tmp_path, photos):
    recs = [clip_record(name, real_clip(name).path) for name in ("bigbuckbunny", "carphone")]
    bikes = real_clip("bikes")
    for i, (a, b) in enumerate(bikes.shots()):
        if b - a >= 1.0:  # one frame in from each cut, so no frame of the next shot leaks in
            path = trim(bikes.path, a + 0.02, b - a - 0.04, tmp_path / f"bikes_{i}.mp4")
            recs.append(clip_record(f"bikes_shot{i}", path))
    assert len(recs) == 7
    for pname in ("bunny", "painted"):
        path = write_moving_subject(tmp_path / f"subject_{pname}.mp4", photos[pname], seconds=4,
                                    fps=10, tone_hz=None)  # fmt: skip
        recs.append(clip_record(f"subject:{pname}", path))
    MotionFilter()(recs)
    assert {r.key: r.reason for r in recs} == {r.key: None for r in recs}
    assert max(r.scores["pan_explained"] for r in recs) < 0.5


def test_similarity_fit_recovers_a_synthetic_zoom_and_shift():
    rng = np.random.default_rng(1)
    big = _smooth(rng.normal(0, 1, (160, 160)))
    a = big[16:144, 16:144]
    scale, dy, dx = 1.06, 2.5, -3.25
    b, (ys, xs) = _warp(a, scale, dy, dx)
    r_shift = shift_residual(a, b, 19, 19)
    r, log_scale = similarity_residual(a, b, 0.15, 1.25, 6)
    assert abs(log_scale - np.log(scale)) < 0.002
    assert r < 0.02 * r_shift


def _smooth(x: np.ndarray) -> np.ndarray:
    """A blurred noise field, 0-1: detail at a few pixels, as a photo squeezed to 128."""
    k = np.exp(-(np.arange(-6, 7) ** 2) / 8.0)
    x = np.apply_along_axis(lambda v: np.convolve(v, k, "same"), 0, x)
    x = np.apply_along_axis(lambda v: np.convolve(v, k, "same"), 1, x)
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
