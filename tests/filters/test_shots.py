"""Hard cuts inside a window: shrink to the matched shot, or drop when it is too short."""

from __future__ import annotations

import pytest

from filters.base import FilterContext
from filters.shots import ShotsFilter
from media.probe import duration
from shards.record import ClipRecord
from synth.cutset import write_pair
from tests.filters import make_clip


def test_window_crossing_a_cut_shrinks_to_the_matched_shot(tmp_path):
    # source seconds [10, 16): testsrc2 until 13, then a fractal; the match is at 11.5
    rec = make_clip(tmp_path, "cut", ["testsrc2", "mandelbrot"], seconds=6, start=10.0,
                    match_time=11.5)  # fmt: skip
    rec.cut = "keyframe"  # as a stream copy would have left it
    out = tmp_path / "recut"
    f = ShotsFilter()
    f([rec], FilterContext(tmp_dir=out))
    assert rec.status == "ok", rec.error
    assert rec.cut == "exact"  # trimmed to the shot means re-encoded
    assert rec.scores["n_cuts"] == 1.0
    assert (rec.start, rec.end) == pytest.approx((10.0, 13.0), abs=0.11)
    assert rec.mp4 == str(out / "cut.mp4") and rec.flac == str(out / "cut.flac")
    assert duration(rec.mp4) == pytest.approx(3.0, abs=0.15)
    assert duration(rec.flac) == pytest.approx(3.0, abs=0.15)
    assert (tmp_path / "cut.mp4").exists()  # the original is left alone when tmp_dir is set
    assert f.stats()["recut"] == 1
    # scored again (a re-filter run): nothing left to cut
    again = ShotsFilter()
    again([rec])
    assert again.stats()["recut"] == 0 and again.stats()["reused"] == 1


def test_short_matched_shot_is_dropped(tmp_path):
    rec = make_clip(tmp_path, "three", ["testsrc2", "mandelbrot", "testsrc2"], seconds=6)
    ShotsFilter()([rec])  # the match (3.0 s) sits in the 2 s middle shot
    assert (rec.status, rec.reason) == ("dropped", "crosses_cut")
    assert rec.scores["n_cuts"] == 2.0
    assert rec.scores["shot_end"] - rec.scores["shot_start"] == pytest.approx(2.0, abs=0.11)
    rec.status, rec.reason = "ok", None
    calls = []
    f = ShotsFilter(min_clip_seconds=1.5)
    # a looser bound keeps it, re-cut by the context's hook, from the stored scores
    f([rec], FilterContext(recut=lambda r, s, e: calls.append((r.key, s, e))))
    assert rec.status == "ok" and f.stats()["reused"] == 1
    assert [(k, round(s), round(e)) for k, s, e in calls] == [("three", 2, 4)]


def test_single_shot_is_left_alone(tmp_path):
    rec = make_clip(tmp_path, "one", "testsrc2")
    before = (tmp_path / "one.mp4").stat().st_mtime_ns
    ShotsFilter()([rec])
    assert rec.status == "ok" and rec.scores["n_cuts"] == 0.0
    assert (rec.start, rec.end) == (0.0, 4.0)
    assert (tmp_path / "one.mp4").stat().st_mtime_ns == before


def test_default_recut_replaces_media_in_place(tmp_path):
    rec = make_clip(tmp_path, "inplace", ["testsrc2", "mandelbrot"], seconds=8, match_time=6.0)
    ShotsFilter()([rec])
    assert rec.status == "ok"
    assert rec.mp4 == str(tmp_path / "inplace.mp4")
    assert (rec.start, rec.end) == pytest.approx((4.0, 8.0), abs=0.11)
    assert duration(rec.mp4) == pytest.approx(4.0, abs=0.15)


@pytest.mark.parametrize(
    "left, right",
    [("noise_grey", "gradient_grey_h"), ("checker_grey", "noise_grey")],  # noise|calm, busy|busy
)
def test_cut_next_to_busy_footage_is_found(tmp_path, left, right):
    # PySceneDetect's ContentDetector missed these (its flash filter merged them into the noise)
    mp4, cut = write_pair(tmp_path / "busy.mp4", left, right)  # 4 s, cut at 2 s
    rec = ClipRecord(key="busy", video="v.mp4", video_id="v", start=20.0, end=24.0,
                     match_time=23.0, similarity=0.9, mp4=str(mp4))  # fmt: skip
    calls = []
    ShotsFilter(min_clip_seconds=1.5)(
        [rec], FilterContext(recut=lambda r, s, e: calls.append((s, e)))
    )
    assert rec.status == "ok" and rec.scores["n_cuts"] == 1.0
    assert calls == [pytest.approx((20.0 + cut, 24.0), abs=0.09)]


def test_detector_tuning_is_checked():
    assert ShotsFilter(ratio=2.0, thumb_floor=5.0, window=3).ratio == 2.0
    for bad in ({"ratio": 0.0}, {"window": 0}, {"hist_floor": -0.1}, {"fps": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ShotsFilter(**bad)
