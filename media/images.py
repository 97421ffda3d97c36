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
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

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

# A picture over this many pixels is refused from its header, before any decoding:
# a 17 KB PNG can declare 12000 x 12000 pixels (1.4 GB decoded). 50 megapixels is
# more than any camera photo a seed list is likely to hold (8688 x 5792).
DEFAULT_MAX_PIXELS = 50_000_000
# Decoding stops this many times the output size above it (JPEG DCT scaling, or a box
# reduce after decoding), and the rule's bicubic resize does the rest.
_DECODE_MARGIN = 2
_REDUCIBLE_MODES = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"}


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


class PixelBudget:
    """Decoded pixels in flight across threads, at most ``capacity`` at once.

    Decoders sharing one budget wait for room before decoding, so the memory
    of many threads decoding large pictures is bounded by the budget, not by
    the number of threads. A picture larger than the whole budget decodes alone.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = max(1, min(pixels, self.capacity))
        with self._cond:
            self._cond.wait_for(lambda: self._used + pixels <= self.capacity)
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()


def decode_image(
    data: bytes,
    size: int,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    budget: PixelBudget | None = None,
) -> np.ndarray:
    """Decode encoded image bytes fully and :func:`preprocess` them.

    The header is read first: a picture over ``max_pixels`` (None: no cap but
    PIL's own) is refused before decoding, so a decompression bomb costs
    milliseconds, not gigabytes. A large picture is decoded no larger than the
    output needs (JPEG's DCT scaling) or reduced right after decoding, before
    the colour conversions copy it. With a ``budget``, decoding waits until the
    picture's pixels fit in it.

    ``Image.open`` only reads the header, so a truncated download would pass it
    and fail (or be silently padded) later; ``load()`` forces the whole decode
    here, where the error can be reported against the seed or the sample.
    Raises :class:`MediaError` when the bytes are not a decodable image or are
    too large.
    """
    if size <= 0:  # checked first, so a bad argument is not reported as a bad image
        raise ValueError(f"size must be positive, got {size}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise MediaError(
                    f"image is {width}x{height} ({width * height / 1e6:.1f} megapixels), over "
                    f"the limit of {max_pixels / 1e6:g} megapixels (max_image_pixels)"
                )
            _draft(image, size)
            with budget.hold(image.width * image.height) if budget else nullcontext():
                image.load()
                return preprocess(_reduce(image, size), size)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image too large to decode: {exc}") from exc
    # PIL's plugins raise many types on corrupt input (OSError, SyntaxError,
    # struct.error, IndexError, ...); all of them mean the bytes are bad.
    except Exception as exc:
        # PIL names the in-memory buffer by its address; that says nothing to a user
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
        raise MediaError(f"not a decodable image: {why}") from exc


def _needed(width: int, height: int, size: int) -> tuple[int, int] | None:
    """The size to decode at, keeping the shorter side at least a margin over ``size``; None: full."""
    short = min(width, height)
    target = _DECODE_MARGIN * size
    if short < 2 * target:
        return None
    return -(-width * target // short), -(-height * target // short)


def _draft(image: Image.Image, size: int) -> None:
    """JPEG: decode at 1/2, 1/4 or 1/8 scale when that still leaves enough pixels."""
    needed = _needed(image.width, image.height, size)
    if needed is not None and image.format == "JPEG":
        image.draft(None, needed)


def _reduce(image: Image.Image, size: int) -> Image.Image:
    """A decoded picture much larger than needed, box-reduced by a whole factor."""
    if _needed(image.width, image.height, size) is None:
        return image
    factor = min(image.size) // (_DECODE_MARGIN * size)
    exif = image.getexif()  # kept, so the rule's EXIF transpose still sees the orientation
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode not in _REDUCIBLE_MODES:
        image = to_rgb(image)
    reduced = image.reduce(factor)
    if exif:
        reduced.info["exif"] = exif.tobytes()
    return reduced
