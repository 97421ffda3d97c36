"""Embedders: turn frames (and captions) into unit vectors.

Two spellings select one (clip-retrieval's):

* ``open_clip:MODEL[/PRETRAINED]``: an open_clip model; PRETRAINED is an
  open_clip tag, a local checkpoint path, or absent for random weights;
* ``some.module:factory``: ``factory()`` returns any object with ``dim``,
  ``image_size``, ``embed_images`` and ``embed_texts`` (see :class:`Embedder`).

Frames arrive already scaled and centre-cropped to ``image_size`` (ffmpeg does
that for videos, :mod:`media.images` for seed pictures), as uint8 RGB.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import logging
import re
import threading
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    dim: int
    image_size: int

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """(N, image_size, image_size, 3) uint8 RGB -> (N, dim) float32 unit rows."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """N captions -> (N, dim) float32 unit rows."""
        ...


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit rows in float32; an all-zero row stays zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class PixelEmbedder:
    """A weight-free embedder that matches pictures by their coarse colour layout.

    The frame is averaged down to ``grid`` x ``grid`` cells of RGB, the image's
    mean is removed and the vector scaled to unit length: the same picture, a
    little zoomed or panned, stays close (cosine well above 0.6), while other
    pictures and noise land near 0. It knows nothing of meaning, so captions
    are embedded by hashing their words; it exists for demos and tests on
    machines without CLIP weights, and as the model of the plug-in protocol.
    """

    def __init__(self, grid: int = 8, image_size: int = 64):
        if image_size % grid:
            raise ValueError(f"image_size {image_size} must be a multiple of grid {grid}")
        self.grid = grid
        self.image_size = image_size
        self.dim = grid * grid * 3

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"expected (N, {self.image_size}, {self.image_size}, 3) images, got {images.shape}"
            )
        n, g, cell = len(images), self.grid, self.image_size // self.grid
        x = images.astype(np.float32).reshape(n, g, cell, g, cell, 3).mean(axis=(2, 4))
        x = x.reshape(n, -1)
        x -= x.mean(axis=1, keepdims=True)
        return normalize(x)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return normalize(out)


def pixel_embedder() -> PixelEmbedder:
    """Factory for ``--embedder miners.embedders:pixel_embedder``."""
    return PixelEmbedder()


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a config error, said at once."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], not {device!r}")
    return device


class OpenClipEmbedder:
    """An open_clip model's image and text towers, batched, on CPU or CUDA.

    ``pretrained`` is an open_clip tag (weights come from its cache or hub), a
    local checkpoint path, or None for random weights (shapes and code paths
    only: random towers match nothing meaningfully).
    """

    def __init__(
        self,
        model: str,
        pretrained: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 64,
        threads: int | None = None,
    ):
        import open_clip
        import torch

        if threads:
            torch.set_num_threads(threads)
        if model not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model!r}; see open_clip.list_models()")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model_name, self.pretrained = model, pretrained
        with torch.random.fork_rng(devices=[]):
            # random towers (no PRETRAINED) are the same in every process: Dask workers
            # and the flow must embed frames and seeds with one model
            torch.manual_seed(0)
            self.model = open_clip.create_model(model, pretrained=pretrained, device=self.device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"]
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        self.dim = int(
            self.model.text_projection.shape[1]
            if getattr(self.model, "text_projection", None) is not None
            else self.model.visual.output_dim
        )
        self._mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    def _autocast(self):
        import contextlib

        import torch

        if self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"expected (N, {self.image_size}, {self.image_size}, 3) uint8 images, got {images.shape}"
            )
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size]))
            out.append(self._encode(x).cpu().numpy())
        return normalize(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))

    def encode_uint8(self, images):
        """(N, S, S, 3) uint8 torch tensor (on the host, best pinned, or on the device) ->
        (N, dim) float32 unit rows, left on the device (:mod:`miners.embedservice`).

        The copy to the device does not block; normalisation happens there.
        """
        import torch

        out = [self._encode(images[i : i + self.batch_size], non_blocking=True)
               for i in range(0, len(images), self.batch_size)]  # fmt: skip
        if not out:
            return torch.zeros((0, self.dim), device=self.device)
        return torch.nn.functional.normalize(torch.cat(out), dim=1)

    def _encode(self, x, non_blocking: bool = False):
        """One batch of uint8 NHWC pixels through the image tower: float32 features, unnormalised."""
        import torch

        with torch.inference_mode(), self._autocast():
            x = x.to(self.device, non_blocking=non_blocking).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self._mean) / self._std
            return self.model.encode_image(x).float()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(self.device)
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return normalize(np.concatenate(out) if out else np.zeros((0, self.dim), np.float32))


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """Split an ``--embedder`` value into (kind, target, pretrained).

    ``open_clip:ViT-B-32/laion2b_s34b_b79k`` -> ("open_clip", "ViT-B-32", "laion2b_s34b_b79k");
    ``open_clip:ViT-B-32//ckpt/model.pt`` -> a local checkpoint;
    ``pkg.mod:factory`` -> ("factory", "pkg.mod:factory", None).
    """
    if ":" not in spec:
        raise ValueError(
            f"--embedder {spec!r}: expected open_clip:MODEL[/PRETRAINED] or some.module:factory"
        )
    head, rest = spec.split(":", 1)
    if head == "open_clip":
        model, _, pretrained = rest.partition("/")
        if not model:
            raise ValueError(f"--embedder {spec!r}: no open_clip model named")
        return "open_clip", model, pretrained or None
    if not re.fullmatch(r"[A-Za-z_][\w.]*", head) or not re.fullmatch(r"[A-Za-z_]\w*", rest):
        raise ValueError(f"--embedder {spec!r}: expected some.module:factory")
    return "factory", spec, None


def load_embedder(spec: str, *, device: str = "auto", batch_size: int = 64) -> Embedder:
    """Build the embedder an ``--embedder`` value names, checking it keeps the protocol."""
    kind, target, pretrained = parse_spec(spec)
    if kind == "open_clip":
        if pretrained is None:
            log.warning(
                "embedder %s has no pretrained weights: random towers, matches mean nothing", spec
            )
        return OpenClipEmbedder(target, pretrained, device=device, batch_size=batch_size)
    module_name, factory_name = target.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"--embedder {spec!r}: cannot import {factory_name} from {module_name}: {e}"
        ) from e
    try:
        embedder = factory()
    except TypeError as e:
        raise ValueError(
            f"--embedder {spec!r}: {factory_name}() cannot be called without arguments: {e}"
        ) from e
    missing = [
        a for a in ("dim", "image_size", "embed_images", "embed_texts") if not hasattr(embedder, a)
    ]
    if missing:
        raise ValueError(
            f"--embedder {spec!r}: the object {factory_name}() returned lacks {missing}"
        )
    return embedder


@functools.lru_cache(maxsize=4)
def _cached_embedder(spec: str, device: str) -> Embedder:
    return load_embedder(spec, device=device)


_cache_lock = threading.Lock()


def get_embedder(spec: str, device: str = "auto", batch_size: int = 64) -> Embedder:
    """One model per process, spec and device: it loads once, not once per video, task or
    batch size (the mining stages, the filters and the trainer all ask here).

    ``auto`` is resolved first, so ``auto`` and the device it means share one load. An
    embedder with a ``batch_size`` of its own comes back as a shallow copy at the
    asked-for size, sharing the model.
    """
    if parse_spec(spec)[0] == "open_clip":
        device = resolve_device(device)
    with _cache_lock:
        return _sized_embedder(spec, device, batch_size)


@functools.lru_cache(maxsize=8)
def _sized_embedder(spec: str, device: str, batch_size: int) -> Embedder:
    """The same object for the same size, so what keys on it (the embedding service) is shared."""
    embedder = _cached_embedder(spec, device)
    if getattr(embedder, "batch_size", batch_size) == batch_size:
        return embedder
    sized = copy.copy(embedder)
    sized.batch_size = batch_size
    return sized


def fingerprint(spec: str, embedder: Embedder) -> str:
    """What must not change for saved seed embeddings to be reused: the spec, the shape,
    and for a local checkpoint its size and modification time."""
    import os

    parts = [spec, str(embedder.dim), str(embedder.image_size)]
    _, _, pretrained = parse_spec(spec)
    if pretrained and os.path.exists(pretrained):
        st = os.stat(pretrained)
        parts += [str(st.st_size), str(int(st.st_mtime))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()
