"""The one resize rule, as ffmpeg filters and as PIL, gives the same pixels."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from media.images import (
    SQUARE_PIXELS,
    centre_square,
    decode_image,
    filter_string,
    fit_short_side,
    preprocess,
)


def test_filter_string_spells_the_steps():
    assert filter_string(centre_square(64)) == (
        "scale=64:64:force_original_aspect_ratio=increase:flags=bicubic,crop=64:64"
    )
    assert filter_string(SQUARE_PIXELS) == "scale=iw*sar:ih,setsar=1"
    with pytest.raises(ValueError, match="positive"):
        centre_square(0)


def test_fit_short_side():
    assert fit_short_side(640, 360, 180) == (320, 180)
    assert fit_short_side(360, 640, 180) == (180, 320)
    assert fit_short_side(64, 48, 360) == (64, 48)
    assert fit_short_side(853, 480, 240) == (426, 240)  # even sides for H.264


def test_ffmpeg_and_pil_frame_a_picture_alike(tmp_path):
    """A 96x48 picture, left half dark, right half bright, cut to a centre square either way."""
    from PIL import Image

    picture = np.zeros((48, 96, 3), np.uint8)
    picture[:, 48:] = 200
    png = tmp_path / "p.png"
    Image.fromarray(picture).save(png)
    cmd = ["ffmpeg", "-v", "error", "-i", str(png), "-vf",
           filter_string(SQUARE_PIXELS + centre_square(32)), "-f", "rawvideo",
           "-pix_fmt", "rgb24", "pipe:1"]  # fmt: skip
    by_ffmpeg = np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, np.uint8)
    by_ffmpeg = by_ffmpeg.reshape(32, 32, 3).astype(int)
    by_pil = decode_image(png.read_bytes(), 32).astype(int)
    assert by_pil.shape == (32, 32, 3)
    # both keep the middle of the picture: the edge between the halves runs down the centre
    for square in (by_ffmpeg, by_pil):
        assert square[:, :12].mean() < 20 and square[:, 20:].mean() > 180
    assert np.abs(by_ffmpeg - by_pil).mean() < 6
    assert preprocess(Image.fromarray(picture), 32).shape == (32, 32, 3)
