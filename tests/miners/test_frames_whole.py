"""iter_frames' whole frames, and its numpy centre crop against ffmpeg's own crop.

The sampler asks ffmpeg for whole frames (shorter side at the embedder's
size) and cuts the centre square in numpy, so the frame of a peak can be kept
whole. The square must be the very pixels ``scale...,crop=S:S`` gave before,
or every embedding would move: checked here byte for byte, on sources whose
margins are even and odd, landscape, portrait and anamorphic.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from miners.frames import centre_crop, iter_frames
from synth.testmedia import write_video


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _noise_video(path: Path, width: int, height: int, seconds: float = 2.0) -> Path:
    """Random pixels: any shift of a crop changes them."""
    rng = np.random.default_rng(width * 1000 + height)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(10)]
    return write_video(path, lambda i, t: frames[i % 10], seconds=seconds, fps=5,
                       width=width, height=height, tone_hz=None)  # fmt: skip


def _ffmpeg_crop(path: Path, size: int, anamorphic: bool) -> np.ndarray:
    """What the sampler's filters gave before: the rule's scale, then ffmpeg's crop."""
    square = "scale=iw*sar:ih,setsar=1," if anamorphic else ""
    vf = (f"select='isnan(prev_selected_t)+gt(floor(t),floor(prev_selected_t))',{square}"
          f"scale={size}:{size}:force_original_aspect_ratio=increase:flags=bicubic,"
          f"crop={size}:{size}")  # fmt: skip
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf", vf, "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(out, np.uint8).reshape(-1, size, size, 3)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, tuple[Path, bool]]:
    root = tmp_path_factory.mktemp("whole")
    anamorphic = root / "anamorphic.mp4"
    _ffmpeg("-i", str(_noise_video(root / "stored.mp4", 120, 90)), "-vf", "setsar=4/3",
            "-c:v", "libx264", "-crf", "10", str(anamorphic))  # fmt: skip
    return {
        "landscape": (_noise_video(root / "landscape.mp4", 160, 90), False),
        "odd": (_noise_video(root / "odd.mp4", 166, 100), False),
        "portrait": (_noise_video(root / "portrait.mp4", 90, 162), False),
        "anamorphic": (anamorphic, True),
    }


@pytest.mark.parametrize("name", ["landscape", "odd", "portrait", "anamorphic"])
def test_the_numpy_crop_is_ffmpegs_crop(name: str, sources) -> None:
    path, anamorphic = sources[name]
    for size in (16, 17, 31, 45, 64):
        want = _ffmpeg_crop(path, size, anamorphic)
        got = np.concatenate([f for _, f in iter_frames(path, fps=1, size=size, batch_size=3)])
        assert got.shape == want.shape and got.flags["C_CONTIGUOUS"]
        assert np.array_equal(got, want), (name, size)


def test_whole_frames_keep_the_aspect_and_hold_the_crop(sources) -> None:
    path, _ = sources["landscape"]  # 160x90
    batches = list(iter_frames(path, fps=1, size=36, batch_size=4, whole=True))
    assert [len(t) for t, _, _ in batches] == [2]
    times, frames, wholes = batches[0]
    assert wholes.shape == (2, 36, 64, 3)  # 160x90 scaled to 64x36
    assert np.shares_memory(frames, wholes)
    assert np.array_equal(frames, wholes[:, :, 14:50])
    plain = np.concatenate([f for _, f in iter_frames(path, fps=1, size=36)])
    assert np.array_equal(plain, frames)


def test_centre_crop_rounds_half_to_even_and_refuses_small_frames() -> None:
    frames = np.arange(1 * 4 * 9 * 3, dtype=np.uint8).reshape(1, 4, 9, 3)
    # (9 - 4) / 2 = 2.5 -> 2, as ffmpeg's lrint; (4 - 4) / 2 = 0
    assert np.array_equal(centre_crop(frames, 4), frames[:, :, 2:6])
    frames11 = np.arange(1 * 4 * 11 * 3, dtype=np.uint8).reshape(1, 4, 11, 3)  # 3.5 -> 4
    assert np.array_equal(centre_crop(frames11, 4), frames11[:, :, 4:8])
    with pytest.raises(ValueError, match="smaller"):
        centre_crop(frames, 5)
