"""Pictures made into embedder input, and the one resize rule every decoder follows.

The rule: shorter side scaled to S (bicubic), centre-cropped to S x S, as
CLIP's own ``Resize(S)`` + ``CenterCrop(S)``. Video frames get it from ffmpeg
(:func:`centre_square`, :func:`filter_string`: sampled frames, clip frames for
the filters and the trainer), images from PIL (:func:`preprocess`: seed
pictures, a clip's still), so a seed and its frame never differ in framing
before the model sees either, and the image-image similarity never drops for
a reason other than content.
"""

from __future__ import annotations

import io
import logging
import re

import numpy as np
from PIL import Image, ImageOps

from media.ffmpeg import MediaError

log = logging.getLogger(__name__)

# An ffmpeg filter: (name, positional args, keyword args), as ffmpeg-python's ``filter`` takes it.
FilterStep = tuple[str, tuple, dict]
# Non-square pixels (anamorphic video) stretched to square ones, as a player shows them.
SQUARE_PIXELS: list[FilterStep] = [("scale", ("iw*sar", "ih"), {}), ("setsar", (1,), {})]

# Transparent pixels are composited onto white, as img2dataset does: a logo on
# a transparent background is meant to be seen on a page, not on black.
_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side scaled to ``size`` (bicubic), centre-cropped: a (size, size, 3) uint8 RGB array.

    EXIF orientation is applied first, because phones store pictures sideways
    and only the tag says which way is up; the frames of a video carry no tag.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = to_rgb(ImageOps.exif_transpose(image))
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"empty image ({width}x{height})")
    image = _scale_shorter_side(image, size)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).copy()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: alpha over white, 16-bit grey scaled down, CMYK and palettes converted."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _INT_MODES:
        # PIL's own I -> L conversion clips at 255 instead of scaling 16-bit values.
        grey = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def _scale_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size``; the longer one is truncated, as ffmpeg and torchvision do."""
    width, height = image.size
    if width <= height:
        new_size = (size, max(size, int(height * size / width)))
    else:
        new_size = (max(size, int(width * size / height)), size)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BICUBIC)


def centre_square(size: int) -> list[FilterStep]:
    """The rule as ffmpeg filters: shorter side to ``size`` (bicubic), centre crop."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    scale = {"force_original_aspect_ratio": "increase", "flags": "bicubic"}
    return [("scale", (size, size), scale), ("crop", (size, size), {})]


def filter_string(steps: list[FilterStep]) -> str:
    """Filter steps as one ``-vf`` chain, e.g. ``scale=224:224:flags=bicubic,crop=224:224``."""
    parts = []
    for name, args, kwargs in steps:
        values = [str(a) for a in args] + [f"{k}={v}" for k, v in kwargs.items()]
        parts.append(f"{name}={':'.join(values)}" if values else name)
    return ",".join(parts)


def fit_short_side(width: int, height: int, limit: int | None) -> tuple[int, int]:
    """Scale so the shorter side is at most ``limit`` (never up), both sides even.

    Even because H.264 in yuv420p needs it; a clip and its still are both
    sized by this, so the two always agree.
    """
    scale = 1.0
    if limit is not None and min(width, height) > limit:
        scale = limit / min(width, height)
    return _even(width * scale), _even(height * scale)


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode encoded image bytes fully and :func:`preprocess` them.

    ``Image.open`` only reads the header, so a truncated download would pass it
    and fail (or be silently padded) later; ``load()`` forces the whole decode
    here, where the error can be reported against the seed or the sample.
    Raises :class:`MediaError` when the bytes are not a decodable image.
    """
    if size <= 0:  # checked first, so a bad argument is not reported as a bad image
        raise ValueError(f"size must be positive, got {size}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return preprocess(image, size)
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image too large to decode: {exc}") from exc
    # PIL's plugins raise many types on corrupt input (OSError, SyntaxError,
    # struct.error, IndexError, ...); all of them mean the bytes are bad.
    except Exception as exc:
        # PIL names the in-memory buffer by its address; that says nothing to a user
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
        raise MediaError(f"not a decodable image: {why}") from exc
