"""cut_clip: the right window, in sync, sized, and nothing half-written.

Sources are grey ramps (second ``s`` painted ``16 * s``) with a tone whose
pitch says the second too (``200 + 100 * s`` Hz), so the first frame and the
first sound of a clip both say where it starts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media import MediaError
from miners.cut import CutResult, cut_clip
from synth.testmedia import write_grey_ramp_video

LEVEL_TOL = 4
RATE = 16000


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True
    ).stdout


def _streams(path: Path) -> list[dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"]


def _video_levels(path: Path) -> np.ndarray:
    """Mean grey level of every frame, decoded independently of the code under test."""
    raw = _ffmpeg("-i", str(path), "-s", "16x16", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:")
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 16 * 16)
    return frames.mean(axis=1)


def _samples(path: Path) -> np.ndarray:
    raw = _ffmpeg("-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:")
    return np.frombuffer(raw, np.int16).astype(np.float64)


def _pitch(samples: np.ndarray) -> float:
    """The dominant frequency, in Hz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()])


def _ramp_with_stepped_tone(path: Path, *, seconds: int = 10, gop: int | None = None) -> Path:
    silent = write_grey_ramp_video(path.with_suffix(".silent.mp4"), seconds=seconds, fps=5,
                                   tone_hz=None, gop=gop)  # fmt: skip
    tone = f"aevalsrc=0.5*sin(2*PI*(200+100*floor(t))*t):s={RATE}:d={seconds}"
    _ffmpeg("-i", str(silent), "-f", "lavfi", "-i", tone, "-c:v", "copy",
            "-c:a", "aac", "-b:a", "96k", "-shortest", str(path))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cut")


@pytest.fixture(scope="module")
def ramp(media: Path) -> Path:
    return _ramp_with_stepped_tone(media / "ramp.mp4")


@pytest.fixture(scope="module")
def ramp_ts(media: Path) -> Path:
    """MPEG-TS, key frame every second: a clock that starts at 1.4 s and a
    seek by byte guess, where times from iter_frames must still line up."""
    mp4 = _ramp_with_stepped_tone(media / "for_ts.mp4", gop=5)
    ts = media / "ramp.ts"
    _ffmpeg("-i", str(mp4), "-c", "copy", "-f", "mpegts", str(ts))
    return ts


@pytest.mark.parametrize("source", ["ramp", "ramp_ts"])
def test_cut_window(source: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    src = request.getfixturevalue(source)
    res = cut_clip(src, 3.0, 6.0, tmp_path, "clip-1_a", match_time=4.5, has_audio=True)
    assert isinstance(res, CutResult)
    assert res.mp4 == tmp_path / "clip-1_a.mp4"
    assert res.duration == pytest.approx(3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip-1_a.flac", "clip-1_a.jpg", "clip-1_a.mp4",
    ]  # fmt: skip

    video, audio = sorted(_streams(res.mp4), key=lambda s: s["codec_type"] != "video")
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert float(video["duration"]) == pytest.approx(3.0, abs=0.2 + 1e-6)  # one frame at 5 fps
    assert float(video["start_time"]) == pytest.approx(0.0, abs=0.01)
    assert (audio["codec_name"], audio["channels"]) == ("aac", 1)  # mono as the source

    levels = _video_levels(res.mp4)
    assert len(levels) == 15
    assert levels[0] == pytest.approx(16 * 3, abs=LEVEL_TOL)  # starts at 3.0, not a key frame
    assert levels[-1] == pytest.approx(16 * 5, abs=LEVEL_TOL)  # frame 5.8, nothing of 6.0

    (flac,) = _streams(res.flac)
    assert (flac["codec_name"], flac["channels"], int(flac["sample_rate"])) == ("flac", 1, RATE)
    samples = _samples(res.flac)
    assert len(samples) / RATE == pytest.approx(3.0, abs=0.02)
    for second, hz in enumerate((500, 600, 700)):  # seconds 3, 4 and 5 of the source
        part = samples[int((second + 0.1) * RATE) : int((second + 0.9) * RATE)]
        assert _pitch(part) == pytest.approx(hz, abs=5)

    jpg = np.asarray(Image.open(res.jpg).convert("RGB"))
    assert jpg.shape == (48, 64, 3)
    assert jpg.mean() == pytest.approx(16 * 4, abs=LEVEL_TOL)


def test_height_cap_keeps_aspect_and_never_upscales(media: Path, tmp_path: Path) -> None:
    wide = write_grey_ramp_video(media / "wide.mp4", seconds=1, width=640, height=360, tone_hz=None)
    tall = write_grey_ramp_video(media / "tall.mp4", seconds=1, width=360, height=640, tone_hz=None)
    for src, height, size in [
        (wide, 180, (320, 180)),
        (tall, 180, (180, 320)),
        (wide, 720, (640, 360)),
    ]:
        res = cut_clip(src, 0.0, 0.4, tmp_path, f"k{height}{src.stem}", match_time=0.2,
                       height=height, has_audio=False)  # fmt: skip
        (video,) = _streams(res.mp4)
        assert (video["width"], video["height"]) == size
        assert Image.open(res.jpg).size == size


def test_source_without_audio(media: Path, tmp_path: Path) -> None:
    src = write_grey_ramp_video(media / "silent.mp4", seconds=4, tone_hz=None)
    res = cut_clip(src, 1.0, 3.0, tmp_path, "k", match_time=2.0, has_audio=False)
    assert res.flac is None
    assert [s["codec_type"] for s in _streams(res.mp4)] == ["video"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.jpg", "k.mp4"]
    assert _video_levels(res.mp4)[0] == pytest.approx(16, abs=LEVEL_TOL)


def test_has_audio_without_an_audio_stream_fails_clean(media: Path, tmp_path: Path) -> None:
    src = write_grey_ramp_video(media / "mute.mp4", seconds=2, tone_hz=None)
    with pytest.raises(MediaError, match="no audio"):
        cut_clip(src, 0.0, 1.0, tmp_path, "k", match_time=0.5, has_audio=True)
    assert list(tmp_path.iterdir()) == []


def test_garbage_source_raises_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "garbage.mp4"
    src.write_bytes(b"\x00\x01junk" * 5000)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MediaError, match="garbage.mp4"):
        cut_clip(src, 0.0, 1.0, out, "k", match_time=0.5, has_audio=True)
    assert list(out.iterdir()) == []


def test_failure_after_the_mp4_removes_it(ramp: Path, tmp_path: Path) -> None:
    """The still fails (no frame that late) after the mp4 and flac were written:
    their temporary files go too, and no final name ever appeared."""
    with pytest.raises(MediaError, match="no frame"):
        cut_clip(ramp, 3.0, 6.0, tmp_path, "k", match_time=99.0, has_audio=True)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(ramp: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key"):
        cut_clip(ramp, 0.0, 1.0, tmp_path, "a.b", match_time=0.5, has_audio=True)
    with pytest.raises(ValueError, match="empty window"):
        cut_clip(ramp, 2.0, 2.0, tmp_path, "k", match_time=2.0, has_audio=True)
