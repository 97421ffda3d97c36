"""Hard cuts found whatever lies on either side, and none inside one shot (media.cuts)."""

from __future__ import annotations

import numpy as np
import pytest

from media import MediaError
from media.cuts import decode_region, detect_cuts, find_cuts, shot_at
from synth.cutset import FPS, write_pair
from synth.encode import encode_frames
from synth.realclips import real_clip

NEAR = 2.5 / FPS  # within two frames of the true cut


def test_find_cuts_on_frames_noise_then_flat_grey_of_the_same_mean():
    rng = np.random.default_rng(0)
    noise = rng.integers(28, 229, size=(30, 36, 64, 3), dtype=np.uint8)
    flat = np.full((30, 36, 64, 3), 128, np.uint8)
    times = 5.0 + np.arange(60) / 25
    assert find_cuts(np.concatenate([noise, flat]), times) == pytest.approx([times[30]])
    assert find_cuts(noise, times[:30]) == []
    with pytest.raises(ValueError):
        find_cuts(noise, times)
    with pytest.raises(TypeError):
        find_cuts(noise, times[:30], threshold=27)


# PySceneDetect's ContentDetector finds none of the first three even at threshold 8,
# nor the fourth at its default 27.
@pytest.mark.parametrize(
    "left, right",
    [
        ("noise_grey", "gradient_grey_h"),  # noise|calm, same mean
        ("checker_grey", "noise_grey"),  # busy|busy, same mean: only structure changes
        ("noise_red", "checker_yellow"),  # busy|busy of other colours
        ("gradient_grey_h", "gradient_grey_v"),  # calm|calm, same mean
        ("blob_green", "noise_blue"),  # calm|busy
    ],
)
def test_cut_found_at_its_time(tmp_path, left, right):
    path, cut = write_pair(tmp_path / "pair.mp4", left, right)
    assert detect_cuts(path) == [pytest.approx(cut, abs=NEAR)]


@pytest.mark.parametrize("side", ["gradient_sunset", "blob_grey", "checker_green", "noise_red"])
def test_no_cut_in_one_drifting_or_busy_shot(tmp_path, side):
    path, _ = write_pair(tmp_path / "one.mp4", side)
    assert detect_cuts(path) == []


@pytest.mark.parametrize("name", ["bigbuckbunny", "carphone"])
def test_no_cut_in_real_single_shots(name):
    assert detect_cuts(real_clip(name).path) == []


def test_real_bikes_cuts_found_at_the_known_times():
    bikes = real_clip("bikes")
    assert detect_cuts(bikes.path) == pytest.approx(list(bikes.cuts), abs=NEAR)


def test_region_reports_source_times_strictly_inside():
    bikes = real_clip("bikes")  # cuts at 1.2, 3.04, 5.48, 7.48, 9.68
    assert detect_cuts(bikes.path, 2.0, 6.0) == pytest.approx([3.04, 5.48], abs=NEAR)
    # a region that starts on a cut: that cut is its edge, not inside it
    assert detect_cuts(bikes.path, 3.04, 5.48) == []
    assert detect_cuts(bikes.path, 6.0, 6.0) == []


def test_decoded_frames_carry_their_own_times(tmp_path):
    # frame i is painted grey 4 i: its time is i / rate, whatever the region and rate; over
    # 25 fps the first frame of each 1/25 s tick is kept
    for rate in (10, 30):
        frames = [np.full((36, 64, 3), 4 * i, np.uint8) for i in range(40)]
        path = encode_frames(tmp_path / f"idx{rate}.mp4", frames, fps=rate, width=64, height=36,
                             crf=0)  # fmt: skip
        got, times = decode_region(path, 0.51, 1.2, fps=25)
        index = np.round(got[:, 0, 0, 0] / 4.0)
        assert times == pytest.approx(index / rate, abs=1e-3)
        assert times[0] == pytest.approx(np.ceil(0.51 * rate) / rate, abs=1e-3)
        assert times[-1] < 1.2
        ticks = np.floor(times * 25 + 1e-6)  # at most one frame each 1/25 s, none skipped at 10
        assert np.all(np.diff(ticks) >= 1) and (rate > 25 or len(times) == 6)


def test_shot_at_edges():
    cuts = [2.0, 5.0]
    assert shot_at(1.0, cuts, 0.0, 8.0) == (0.0, 2.0)
    assert shot_at(2.0, cuts, 0.0, 8.0) == (2.0, 5.0)  # a cut starts the new shot
    assert shot_at(4.999, cuts, 0.0, 8.0) == (2.0, 5.0)
    assert shot_at(7.5, cuts, 0.0, 8.0) == (5.0, 8.0)
    assert shot_at(3.0, [], 1.0, 4.0) == (1.0, 4.0)
    assert shot_at(3.0, [0.5, 9.0], 1.0, 4.0) == (1.0, 4.0)  # cuts outside are ignored
    assert shot_at(-1.0, cuts, 0.0, 8.0) == (0.0, 2.0)  # outside the region: the nearest shot
    assert shot_at(9.0, cuts, 0.0, 8.0) == (5.0, 8.0)


def test_unreadable_file_is_a_media_error_naming_it(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match="broken.mp4"):
        detect_cuts(bad)


def test_metadata_cannot_spoof_frame_times(tmp_path):
    """A title and a file name holding fake showinfo lines leave the decoded times alone."""
    import subprocess

    fake = "[Parsed_showinfo_1 @ 0x1] [info] n:   0 pts:      0 pts_time:0"
    grey = [np.full((36, 64, 3), 16 * i, np.uint8) for i in range(10)]
    clean = encode_frames(tmp_path / "clean.mp4", grey, fps=FPS, width=64, height=36)
    spoofed = tmp_path / f"x\n{fake}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(clean), "-c", "copy",
         "-metadata", f"title=a\n{fake}\n{fake}", str(spoofed)],
        check=True,
    )  # fmt: skip
    _, expected = decode_region(clean)
    _, times = decode_region(spoofed)
    np.testing.assert_allclose(times, expected)
    np.testing.assert_allclose(times, np.arange(10) / FPS, atol=1e-6)
