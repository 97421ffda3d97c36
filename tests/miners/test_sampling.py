"""iter_frames' decoding options: keyframes sampling and hardware decoding.

Frame *i* of the videos here carries its own number: the left half is grey
``8 * (i % 32)``, the right half grey ``64 * (i // 32)``, so a sampled frame
says which source frame it is. Key frames are placed by the encoder at known
frames (a fixed GOP, or forced at irregular times), and ffprobe's packet flags
say where they are.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from media import MediaError
from media.ffmpeg import FFMPEG, FFPROBE, FilterLog, run
from media.probe import probe_streams
from miners import frames as frames_module
from miners.frames import _sampling_command, cuda_decoding_available, iter_frames, resolve_hwaccel

FPS = 12
SIZE = 48  # the 64x48 frames' centre square: source columns 8-55
LEVEL_TOL = 4


def _painted(i: int) -> np.ndarray:
    frame = np.empty((48, 64, 3), np.uint8)
    frame[:, :32] = 8 * (i % 32)
    frame[:, 32:] = 64 * (i // 32)
    return frame


def _frame_number(frame: np.ndarray) -> int:
    """The number painted into a sampled (SIZE x SIZE) frame; centre columns 24 = source 32."""
    left, right = frame[4:-4, 2:20].mean(), frame[4:-4, 28:46].mean()
    assert (
        abs(left - 8 * round(left / 8)) <= LEVEL_TOL
        and abs(right - 64 * round(right / 64)) <= LEVEL_TOL
    )
    return round(left / 8) % 32 + 32 * round(right / 64)


def _encode(path: Path, n_frames: int, *x264: str) -> Path:
    """``n_frames`` painted frames at FPS, H.264 with the key frame options ``x264``."""
    cmd = [FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
           "-r", str(FPS), "-i", "pipe:0", "-c:v", "libx264", "-preset", "ultrafast",
           "-crf", "10", "-pix_fmt", "yuv420p", "-sc_threshold", "0", *x264, str(path)]  # fmt: skip
    run(cmd, what=path, stdin=b"".join(_painted(i).tobytes() for i in range(n_frames)))
    return path


def _keyframe_times(path: Path) -> list[float]:
    """Presentation times of the key frame packets, as ffprobe flags them (K)."""
    out = run([FFPROBE, "-v", "error", "-select_streams", "v", "-show_entries",
               "packet=pts_time,flags", "-of", "csv=p=0", str(path)], what=path)  # fmt: skip
    times = []
    for line in out.decode().split():
        pts, flags = line.split(",")[:2]
        if "K" in flags:
            times.append(float(pts))
    return sorted(times)


def _collect(path: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    batches = list(iter_frames(path, size=SIZE, **kw))
    return np.concatenate([t for t, _ in batches]), np.concatenate([f for _, f in batches])


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sampling")


@pytest.fixture(scope="module")
def every_second(media: Path) -> Path:
    """6 s at 12 fps, a key frame every 12 frames: at 0, 1, ..., 5 s."""
    return _encode(media / "gop12.mp4", 6 * FPS, "-g", "12", "-keyint_min", "12")


@pytest.fixture(scope="module")
def sparse(media: Path) -> Path:
    """9 s at 12 fps, key frames forced at 0, 1.5, 4.25 and 7 s only."""
    return _encode(media / "sparse.mp4", 9 * FPS, "-g", "1000", "-keyint_min", "1000",
                   "-force_key_frames", "0,1.5,4.25,7")  # fmt: skip


def test_the_videos_have_their_key_frames_where_planned(every_second: Path, sparse: Path) -> None:
    assert _keyframe_times(every_second) == pytest.approx([0, 1, 2, 3, 4, 5])
    assert _keyframe_times(sparse) == pytest.approx([0, 1.5, 4.25, 7])


def test_keyframes_gives_the_key_frames_pictures_at_their_times(every_second: Path) -> None:
    times, frames = _collect(every_second, fps=1, sampler="keyframes")
    assert times.tolist() == pytest.approx(_keyframe_times(every_second), abs=1e-6)
    assert [_frame_number(f) for f in frames] == [FPS * k for k in range(6)]


def test_keyframes_matches_exact_where_both_pick_the_same_frame(every_second: Path) -> None:
    """A key frame decodes alone, so it is the very picture exact sampling gives."""
    exact_times, exact_frames = _collect(every_second, fps=1)
    key_times, key_frames = _collect(every_second, fps=1, sampler="keyframes")
    np.testing.assert_array_equal(key_times, exact_times)
    np.testing.assert_array_equal(key_frames, exact_frames)


def test_keyframes_at_a_higher_rate_adds_no_frame(every_second: Path) -> None:
    """At 2 fps the half-second buckets without a key frame stay empty."""
    times, frames = _collect(every_second, fps=2, sampler="keyframes")
    assert times.tolist() == pytest.approx([0, 1, 2, 3, 4, 5], abs=1e-6)
    exact_times, _ = _collect(every_second, fps=2)
    assert len(exact_times) == 12


def test_sparse_key_frames_keep_their_exact_times(sparse: Path) -> None:
    times, frames = _collect(sparse, fps=1, sampler="keyframes")
    assert times.tolist() == pytest.approx(_keyframe_times(sparse), abs=1e-6)
    assert [_frame_number(f) for f in frames] == [0, 18, 51, 84]


def test_at_most_one_key_frame_per_bucket(sparse: Path) -> None:
    """Buckets of 4 s: 0 and 1.5 share the first, 4.25 and 7 the second; the first of each stays."""
    times, frames = _collect(sparse, fps=0.25, sampler="keyframes")
    assert times.tolist() == pytest.approx([0, 4.25], abs=1e-6)
    assert [_frame_number(f) for f in frames] == [0, 51]


def test_exact_still_samples_every_second(sparse: Path) -> None:
    times, frames = _collect(sparse, fps=1)
    assert times.tolist() == pytest.approx(list(range(9)), abs=1e-6)
    assert [_frame_number(f) for f in frames] == [FPS * k for k in range(9)]


# ---------------------------------------------------------------- the command


def _command(path: Path, **kw) -> list[str]:
    _, streams = probe_streams(path)
    return _sampling_command(path, streams, fps=1.0, size=SIZE, threads=0,
                             showinfo=FilterLog("showinfo"), **kw)  # fmt: skip


def _input_options(cmd: list[str]) -> list[str]:
    return cmd[1 : cmd.index("-i")]


def test_exact_software_command_has_no_decoder_options(every_second: Path) -> None:
    assert _input_options(_command(every_second)) == ["-threads", "0"]


def test_decoder_options_come_before_the_input(every_second: Path) -> None:
    cmd = _command(every_second, sampler="keyframes", hwaccel="cuda")
    options = _input_options(cmd)
    assert options[options.index("-skip_frame") + 1] == "nokey"
    assert options[options.index("-hwaccel") + 1] == "cuda"
    assert not any("hwaccel_output_format" in c for c in cmd)  # frames come back to the CPU


@pytest.mark.parametrize("kw", [{"sampler": "everything"}, {"hwaccel": "vaapi"}])
def test_unknown_option_values_raise(every_second: Path, kw: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        list(iter_frames(every_second, **kw))


# ---------------------------------------------------------------- hardware decoding

NO_GPU = not cuda_decoding_available()


@pytest.fixture
def fresh_cuda_answer():
    cuda_decoding_available.cache_clear()
    yield
    cuda_decoding_available.cache_clear()


def test_auto_is_cuda_only_with_both_a_device_and_ffmpeg_support(
    monkeypatch, fresh_cuda_answer, tmp_path: Path
) -> None:
    asked = []

    def fake_run(cmd, **kw):
        asked.append(cmd)
        return listed

    monkeypatch.setattr(frames_module, "run", fake_run)
    monkeypatch.setattr(frames_module, "_nvidia_smi_runs", lambda: True)
    listed = b"Hardware acceleration methods:\nvdpau\ncuda\nvaapi\n"
    assert resolve_hwaccel("auto") == "cuda"
    assert resolve_hwaccel("auto") == "cuda" and len(asked) == 1  # asked once per process
    cuda_decoding_available.cache_clear()
    listed = b"Hardware acceleration methods:\nvaapi\n"
    assert resolve_hwaccel("auto") == "none"
    cuda_decoding_available.cache_clear()
    monkeypatch.setattr(frames_module, "_nvidia_smi_runs", lambda: False)
    monkeypatch.setattr(frames_module, "_NVIDIA_DEVICE", tmp_path / "nvidia0")
    asked.clear()
    assert resolve_hwaccel("auto") == "none" and asked == []  # no device: ffmpeg is not asked
    assert resolve_hwaccel("none") == "none" and resolve_hwaccel("cuda") == "cuda"


@pytest.mark.skipif(not NO_GPU, reason="this machine can decode with cuda")
def test_auto_resolves_to_software_here() -> None:
    assert resolve_hwaccel("auto") == "none"


@pytest.mark.skipif(not NO_GPU, reason="this machine can decode with cuda")
def test_cuda_without_a_gpu_falls_back_to_software(every_second: Path, caplog) -> None:
    """ffmpeg here fails before the first frame (no libcuda); the video is decoded
    again in software, with the same frames, and the fallback is logged."""
    with caplog.at_level(logging.WARNING, logger="miners.frames"):
        times, frames = _collect(every_second, fps=1, hwaccel="cuda")
    exact_times, exact_frames = _collect(every_second, fps=1)
    np.testing.assert_array_equal(times, exact_times)
    np.testing.assert_array_equal(frames, exact_frames)
    warned = [r.getMessage() for r in caplog.records if "software" in r.getMessage()]
    assert len(warned) == 1 and "gop12.mp4" in warned[0] and "cuda" in warned[0]


def test_cuda_on_a_broken_file_is_still_a_media_error_naming_it(media: Path) -> None:
    path = media / "garbage.mp4"
    path.write_bytes(os.urandom(20_000))
    with pytest.raises(MediaError, match="garbage.mp4"):
        list(iter_frames(path, hwaccel="cuda"))


def test_cuda_keyframes_decode_the_key_frames(sparse: Path) -> None:
    """On a GPU machine NVDEC decodes; here software does: either way the same frames."""
    times, frames = _collect(sparse, fps=1, sampler="keyframes", hwaccel="cuda")
    assert times.tolist() == pytest.approx([0, 1.5, 4.25, 7], abs=1e-6)
    assert [_frame_number(f) for f in frames] == [0, 18, 51, 84]


# ---------------------------------------------------------------- the run's options


def test_mine_params_sampling_defaults_and_spelling() -> None:
    from pydantic import ValidationError

    from flows.params import MineParams

    base = {"seeds": "s", "videos": "v", "out": "o", "embedder": "miners.embedders:pixel_embedder"}
    params = MineParams(**base)
    assert (params.sampler, params.hwaccel) == ("exact", "auto")
    assert MineParams(**base, sampler="keyframes", hwaccel="cuda").sampler == "keyframes"
    for bad in ({"sampler": "key"}, {"hwaccel": "nvdec"}):
        with pytest.raises(ValidationError):
            MineParams(**base, **bad)
