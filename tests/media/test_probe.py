"""probe: size as displayed, sound or not, and a named error for what is not a video."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from media import MediaError
from media.probe import ProbeInfo, probe, probe_streams
from synth.testmedia import grey_frame, write_grey_ramp_video, write_video


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


def test_video_with_audio(media: Path) -> None:
    path = write_grey_ramp_video(media / "av.mp4", seconds=3, fps=5, tone_hz=440.0)
    info = probe(path)
    assert isinstance(info, ProbeInfo)
    assert info.duration == pytest.approx(3.0, abs=0.1)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(5.0)
    assert info.has_audio
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.as_dict()["width"] == 64
    assert set(info.as_dict()) == {
        "duration", "width", "height", "fps", "has_audio", "video_codec", "audio_codec",
    }  # fmt: skip


def test_video_without_audio(media: Path) -> None:
    path = write_grey_ramp_video(media / "silent.mp4", seconds=2, fps=25, tone_hz=None)
    info = probe(path)
    assert not info.has_audio
    assert info.audio_codec is None
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert probe_streams(path)[1].audio_index is None


def test_portrait_video(media: Path) -> None:
    path = write_video(
        media / "portrait.mp4", lambda i, t: grey_frame(100, 48, 64), seconds=1, width=48, height=64
    )
    info = probe(path)
    assert (info.width, info.height) == (48, 64)


def test_rotation_metadata_swaps_display_size(media: Path) -> None:
    """A phone video is stored landscape and tagged 90 degrees: it displays portrait."""
    stored = write_grey_ramp_video(media / "stored.mp4", seconds=1)
    rotated = media / "rotated.mp4"
    _ffmpeg("-i", str(stored), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated))
    info = probe(rotated)
    if (info.width, info.height) == (64, 48):
        pytest.skip("this ffmpeg does not write rotation from the rotate tag")
    assert (info.width, info.height) == (48, 64)


def test_sample_aspect_ratio_gives_square_pixel_size(media: Path) -> None:
    stored = write_grey_ramp_video(media / "sq.mp4", seconds=1, tone_hz=None)
    anamorphic = media / "anamorphic.mp4"
    _ffmpeg("-i", str(stored), "-vf", "setsar=2", "-c:v", "libx264", str(anamorphic))
    info, streams = probe_streams(anamorphic)
    assert (info.width, info.height) == (128, 48)
    assert not streams.square_pixels


def test_mpegts_start_times(media: Path) -> None:
    """MPEG-TS starts its clock at 1.4 s; the decoders need both origins."""
    mp4 = write_grey_ramp_video(media / "for_ts.mp4", seconds=2)
    ts = media / "ramp.ts"
    _ffmpeg("-i", str(mp4), "-c", "copy", "-f", "mpegts", str(ts))
    info, streams = probe_streams(ts)
    assert info.duration == pytest.approx(2.0, abs=0.15)
    assert streams.video_start >= 1.0
    assert streams.container_start <= streams.video_start
    assert streams.source_time(0.0) == streams.video_start


def test_audio_only_file_is_not_a_video(media: Path) -> None:
    path = media / "tone.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    with pytest.raises(MediaError, match="no video stream") as err:
        probe(path)
    assert "tone.m4a" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.mp4", b""), ("garbage.mp4", b"this is not a video at all\n" * 200)],
)
def test_unreadable_files_raise_naming_the_file(media: Path, name: str, content: bytes) -> None:
    path = media / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as err:
        probe(path)
    message = str(err.value)
    assert name in message
    assert "Invalid data" in message  # ffprobe's own words are kept


def test_missing_file_raises_naming_the_file(media: Path) -> None:
    with pytest.raises(MediaError, match="nowhere.mp4") as err:
        probe(media / "nowhere.mp4")
    assert "No such file" in str(err.value)
