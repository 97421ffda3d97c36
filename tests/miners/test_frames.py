"""iter_frames / frame_at: which frame came out, at what time, cropped how.

The ramp videos paint every frame of second ``s`` grey ``16 * s``, so a
frame's level says which second it was taken from.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from media import MediaError
from miners.frames import frame_at, iter_frames
from synth.testmedia import truncate, write_grey_ramp_video, write_video

LEVEL_TOL = 4  # H.264 and YUV->RGB round grey levels by a few steps


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _collect(path: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    batches = list(iter_frames(path, **kw))
    return np.concatenate([t for t, _ in batches]), np.concatenate([f for _, f in batches])


def _levels(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


def _ffmpeg_children() -> list[int]:
    """Our own ffmpeg child processes, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if comm == "ffmpeg" and int(ppid) == os.getpid() and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frames")


@pytest.fixture(scope="module")
def ramp5(media: Path) -> Path:
    return write_grey_ramp_video(media / "ramp5.mp4", seconds=10, fps=5)


@pytest.fixture(scope="module")
def ramp_ntsc(media: Path) -> Path:
    return write_grey_ramp_video(media / "ramp2997.mp4", seconds=6, fps=30000 / 1001, tone_hz=None)


@pytest.fixture(scope="module")
def ramp_ts(media: Path) -> Path:
    """An MPEG-TS copy: its clock starts at 1.4 s and the video a little later."""
    mp4 = write_grey_ramp_video(media / "for_ts.mp4", seconds=10, fps=5, gop=5)
    ts = media / "ramp.ts"
    _ffmpeg("-i", str(mp4), "-c", "copy", "-f", "mpegts", str(ts))
    return ts


def test_one_frame_per_second_with_exact_times(ramp5: Path) -> None:
    times, frames = _collect(ramp5, fps=1, size=32)
    assert times.dtype == np.float64 and frames.dtype == np.uint8
    assert frames.shape == (10, 32, 32, 3)
    np.testing.assert_allclose(times, np.arange(10), atol=1e-6)
    np.testing.assert_allclose(_levels(frames), 16 * np.floor(times), atol=LEVEL_TOL)


def test_ntsc_rate_times_are_real_frame_times(ramp_ntsc: Path) -> None:
    """At 29.97 fps no frame sits on a whole second: each pick is the first
    frame of its second, at its own presentation time, and nothing drifts."""
    times, frames = _collect(ramp_ntsc, fps=1, size=16)
    frame = 1001 / 30000
    assert len(times) == 6
    assert np.all(times >= np.arange(6) - 1e-6)
    assert np.all(times < np.arange(6) + frame)
    np.testing.assert_allclose(times / frame, np.round(times / frame), atol=1e-3)
    np.testing.assert_allclose(_levels(frames), 16 * np.floor(times), atol=LEVEL_TOL)


def test_two_per_second(ramp5: Path) -> None:
    times, frames = _collect(ramp5, fps=2, size=16)
    assert len(times) == 20
    np.testing.assert_allclose(times, np.arange(20) / 2, atol=0.2 + 1e-6)
    assert np.bincount(np.floor(times).astype(int)).tolist() == [2] * 10
    assert np.all(np.diff(np.floor(times * 2)) == 1)  # one per half-second bucket
    np.testing.assert_allclose(_levels(frames), 16 * np.floor(times), atol=LEVEL_TOL)


def test_mpegts_times_count_from_the_video_start(ramp_ts: Path) -> None:
    times, frames = _collect(ramp_ts, fps=1, size=16)
    np.testing.assert_allclose(times, np.arange(10), atol=1e-6)
    np.testing.assert_allclose(_levels(frames), 16 * np.arange(10), atol=LEVEL_TOL)


@pytest.mark.parametrize("name", ["ramp5", "ramp_ts"])
def test_frame_at_finds_the_sampled_frame(name: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(name)
    for t in (0.0, 3.0, 4.6, 7.2):  # frame times, as iter_frames reports them
        level = frame_at(path, t).mean()
        assert level == pytest.approx(16 * math.floor(t), abs=LEVEL_TOL), t


def test_frame_at_between_frames_and_after_the_last(ramp5: Path) -> None:
    assert frame_at(ramp5, 4.5).mean() == pytest.approx(64, abs=LEVEL_TOL)  # frame 4.6
    assert frame_at(ramp5, 9.9).mean() == pytest.approx(144, abs=LEVEL_TOL)  # last frame, 9.8
    with pytest.raises(MediaError, match="no frame"):
        frame_at(ramp5, 30.0)


def test_frame_at_size(media: Path) -> None:
    wide = write_grey_ramp_video(media / "wide.mp4", seconds=1, width=640, height=360, tone_hz=None)
    assert frame_at(wide, 0.0).shape == (360, 640, 3)
    assert frame_at(wide, 0.0, height=180).shape == (180, 320, 3)
    assert frame_at(wide, 0.0, height=1000).shape == (360, 640, 3)  # never upscaled


def _stripes(width: int, height: int, red: int, blue: int) -> np.ndarray:
    """Columns ``[0, red)`` red, ``[blue, width)`` blue, green between."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :red, 0] = 255
    frame[:, red:blue, 1] = 255
    frame[:, blue:, 2] = 255
    return frame


def _assert_green(frames: np.ndarray) -> None:
    """Green everywhere, edges included: a wrong crop would show red or blue."""
    for frame in frames.astype(int):
        for column in (frame[:, 0], frame[:, frame.shape[1] // 2], frame[:, -1]):
            r, g, b = column.mean(axis=0)
            assert g > 150 and r < 80 and b < 80, (r, g, b)


def test_centre_crop(media: Path) -> None:
    """64x48 with red in columns 0-7, blue in 56-63: the 48x48 centre is green;
    squashing or a left crop would bring in red, a right crop blue."""
    frame = _stripes(64, 48, 8, 56)
    path = write_video(media / "stripes.mp4", lambda i, t: frame, seconds=1, tone_hz=None)
    for size in (48, 24, 96):
        _, frames = _collect(path, size=size)
        assert frames.shape[1:] == (size, size, 3)
        _assert_green(frames)


def test_centre_crop_of_non_square_pixels(media: Path) -> None:
    """Stored 64x48 with 2:1 pixels shows as 128x48: its centre 48 columns are
    stored columns 20-43. Ignoring the pixel shape would crop 8-55 instead."""
    frame = _stripes(64, 48, 20, 44)
    stored = write_video(media / "stripes_sq.mp4", lambda i, t: frame, seconds=1, tone_hz=None)
    anamorphic = media / "stripes_sar.mp4"
    _ffmpeg("-i", str(stored), "-vf", "setsar=2", "-c:v", "libx264", "-crf", "10", str(anamorphic))
    _, frames = _collect(anamorphic, size=32)
    _assert_green(frames[:, :, 3:-3])  # stored chroma edges blur over ~2 display columns


def test_batches(ramp5: Path) -> None:
    batches = list(iter_frames(ramp5, fps=1, size=16, batch_size=3))
    assert [len(t) for t, _ in batches] == [3, 3, 3, 1]
    assert all(f.shape[0] == len(t) for t, f in batches)
    assert np.concatenate([t for t, _ in batches]).tolist() == pytest.approx(list(range(10)))


def test_threads_option(ramp5: Path) -> None:
    times, _ = _collect(ramp5, fps=1, size=16, threads=1)
    assert len(times) == 10


@pytest.mark.timeout(60)
def test_truncated_video_gives_fewer_frames_or_an_error(media: Path) -> None:
    whole = write_grey_ramp_video(media / "whole.mp4", seconds=10, fps=5)
    faststart = media / "faststart.mp4"  # index first, so the start still decodes
    _ffmpeg("-i", str(whole), "-c", "copy", "-movflags", "+faststart", str(faststart))
    for path in (truncate(whole, 0.5), truncate(faststart, 0.5)):
        try:
            times, frames = _collect(path, fps=1, size=16)
        except MediaError as e:
            assert path.name in str(e)
            continue
        assert 0 < len(times) < 10
        np.testing.assert_allclose(_levels(frames), 16 * np.floor(times), atol=LEVEL_TOL)


def test_garbage_raises(media: Path) -> None:
    path = media / "garbage.mp4"
    path.write_bytes(os.urandom(20_000))
    with pytest.raises(MediaError, match="garbage.mp4"):
        list(iter_frames(path))
    with pytest.raises(MediaError, match="garbage.mp4"):
        frame_at(path, 0.0)


def test_timeout_raises(ramp5: Path) -> None:
    with pytest.raises(MediaError, match="timed out"):
        list(iter_frames(ramp5, fps=5, size=16, timeout=0.001))
    assert _ffmpeg_children() == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_early_close_leaves_no_ffmpeg(media: Path) -> None:
    long = write_grey_ramp_video(media / "long.mp4", seconds=60, fps=10, tone_hz=None)
    frames = iter_frames(long, fps=10, size=16, batch_size=1)
    times, _ = next(frames)
    assert times.tolist() == [0.0]
    assert len(_ffmpeg_children()) == 1  # still decoding, blocked on the pipe
    frames.close()
    assert _ffmpeg_children() == []


# ---------------------------------------------------------------- hostile metadata
# ffmpeg prints an input's title, comments and file name to the same stderr that
# carries showinfo's frame times: none of them may move a frame's time.

FAKE = "Parsed_showinfo_1 @ 0x1] [info] n:   0 pts:      0 pts_time:0"
HOSTILE_TAGS = {
    "title": ["Parsed_showinfo n:0 pts:0 pts_time:0"],
    "comment": [f"[{FAKE}"],
    "multiline_title": [f"a video\n[{FAKE}\n[{FAKE.replace('n:   0', 'n:   1')}"],
}


@pytest.mark.parametrize("tag", sorted(HOSTILE_TAGS))
def test_metadata_cannot_spoof_frame_times(tag: str, ramp5: Path, media: Path) -> None:
    value = HOSTILE_TAGS[tag][0]
    key = "comment" if tag == "comment" else "title"
    spoofed = media / f"spoofed_{tag}.mp4"
    _ffmpeg("-i", str(ramp5), "-c", "copy", "-metadata", f"{key}={value}", str(spoofed))
    times, frames = _collect(spoofed, fps=1, size=16)
    np.testing.assert_allclose(times, np.arange(10), atol=1e-6)
    np.testing.assert_allclose(_levels(frames), 16 * np.arange(10), atol=LEVEL_TOL)


@pytest.mark.parametrize(
    "name",
    ["Parsed_showinfo n:0 pts:0 pts_time:0.mp4", f"x\n[{FAKE}\n.mp4", f"[{FAKE}.mp4"],
)
def test_file_name_cannot_spoof_frame_times(name: str, ramp5: Path, tmp_path: Path) -> None:
    spoofed = tmp_path / name
    spoofed.write_bytes(ramp5.read_bytes())
    times, frames = _collect(spoofed, fps=1, size=16)
    np.testing.assert_allclose(times, np.arange(10), atol=1e-6)
    np.testing.assert_allclose(_levels(frames), 16 * np.arange(10), atol=LEVEL_TOL)
    assert frame_at(spoofed, 5.0).mean() == pytest.approx(16 * 5, abs=LEVEL_TOL)
