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


# ---------------------------------------------------------------- large pictures


def _encoded(image, fmt: str, **options) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture(width: int, height: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def test_a_bomb_is_refused_from_its_header():
    import time

    from PIL import Image

    from media import MediaError

    data = _encoded(Image.new("1", (9000, 9000)), "PNG", optimize=True)
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"9000x9000 \(81\.0 megapixels\).*max_image_pixels"):
        decode_image(data, 32)
    assert time.monotonic() - t0 < 0.2  # the header only: decoding takes seconds
    with pytest.raises(MediaError, match="over the limit of 0.001 megapixels"):
        decode_image(_encoded(_picture(40, 40), "PNG"), 32, max_pixels=1000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_pictures_are_decoded_small_and_look_the_same(fmt: str, monkeypatch):
    import io

    from PIL import Image

    import media.images as images

    data = _encoded(_picture(4000, 3000), fmt)
    with Image.open(io.BytesIO(data)) as full:
        expected = preprocess(full, 32)
    seen = []
    real = images.preprocess
    monkeypatch.setattr(images, "preprocess", lambda im, s: seen.append(im.size) or real(im, s))
    out = decode_image(data, 32)
    assert seen and min(seen[0]) <= 4 * 2 * 32, seen  # decoded or reduced near 2 x 32, not 3000
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3


def test_exif_orientation_survives_reduced_decoding():
    import io

    from PIL import Image

    array = np.zeros((1000, 2000, 3), np.uint8)
    array[:, :1000] = (220, 20, 20)  # stored: red left, blue right
    array[:, 1000:] = (20, 20, 220)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: red on top
    for fmt in ("JPEG", "PNG"):
        data = _encoded(image, fmt, exif=exif.tobytes())
        with Image.open(io.BytesIO(data)) as full:
            expected = preprocess(full, 16)
        out = decode_image(data, 16)
        assert out[0, 8, 0] > 150 and out[15, 8, 2] > 150, fmt
        assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4, fmt
