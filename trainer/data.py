"""Batches for the trainer: audio mels and frozen features, both from the cache.

Each clip contributes a normalised log-mel crop (a window of its whole-clip mel)
and the cached CLIP features of its frames, its ``jpg`` and its captions
(:func:`trainer.features.precompute_features` must have run). The whole-clip
mels come from the mel cache its first pass wrote beside the features
(:mod:`trainer.melcache`), so epochs read arrays and never start ffmpeg; a shard
without a current mel cache has its ``flac`` read from the tar with webdataset
and decoded on every read, which gives the same numbers, bit for bit.

Exact resume. For given ``(shards, seed)`` the training stream is a pure function
of the global sample index ``g``, and batch ``b`` is samples
``g in [b*B*W, (b+1)*B*W)`` (``B`` = batch_size, ``W`` = world_size), so
``start_batch=k`` yields exactly the batches an uninterrupted loader yields from
``k`` on, whatever ``num_workers`` and however many ranks share the batch:

* **Order from metadata only.** The keys of every shard come from the feature
  cache (tar order), so the order is planned without reading a tar. Epoch ``e``
  permutes the shards with ``rng(seed, e)``; consecutive shards of that order are
  grouped into *units* of at least ``shuffle_buffer`` samples (whole shards), and
  the samples of a unit are permuted with ``rng(seed, e, unit)``: a shuffle buffer
  whose content is decided in advance. Epochs follow each other without a gap;
  a batch may straddle two epochs.
* **Per-sample randomness** (the caption drawn, the audio crop) comes from
  ``rng(seed, g)``, never from a shared stream.
* **Workers** take whole units in turn (unit ``u`` of the stream goes to worker
  ``u % num_workers``): a worker streams only its unit's tars. DataLoader hands
  back an IterableDataset's outputs round-robin over workers, i.e. in unit order,
  so the main process sees units in plan order and cuts them into batches.
* **Ranks**: sample ``g`` belongs to rank ``(g % (B*W)) // B``; a rank decodes
  only its own samples and gets the ``rank``-th slice of every global batch, so
  the ranks' batches concatenated are the 1-rank batch of size ``B*W``.
* **Nothing shifts the stream**: a clip whose flac is missing or does not decode
  still yields (``has_audio`` False, zeros) and is counted; clips that failed
  feature precomputation are left out of the plan up front (also counted).

Evaluation: one pass, shards in the given order, tar order inside, the first
(best) caption, centre crops, the last partial batch kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from media import MediaError
from media.audio import decode_audio_many
from trainer import melcache
from trainer.audio import N_MELS, clip_mel, fix_length
from trainer.features import expand_shards, load_shard_arrays, shard_stem
from trainer.melcache import ShardMels, iter_flacs, open_shard

log = logging.getLogger(__name__)

_PROCESS_BAD: Counter = Counter()  # all loaders of this process, see count_bad_samples()


def count_bad_samples() -> dict[str, int]:
    """Samples skipped or degraded by every loader of this process so far, by reason.

    Reasons: ``no_features`` (dropped at precompute, so never in the stream;
    counted once per loader), ``bad_flac`` (ffmpeg could not decode it),
    ``missing_in_tar`` (the cache says the clip has a flac, the tar has none),
    ``tar_error:<type>`` (webdataset could not read part of a tar). The last three
    keep the clip in the stream with ``has_audio`` False and zeros. Training counts occurrences: a bad
    clip is counted again every epoch.
    """
    return dict(_PROCESS_BAD)


@dataclass(frozen=True)
class _Unit:
    """A run of consecutive samples of the stream: some whole shards, in a fixed order."""

    epoch: int
    index: int  # within the epoch
    shards: tuple[int, ...]
    g0: int  # global index of its first sample
    size: int


class _Stream(torch.utils.data.IterableDataset):
    """Yields one dict of stacked tensors per unit for this rank (see the module doc)."""

    def __init__(
        self,
        urls: list[str],
        keys: list[list[str]],
        has_flac: list[np.ndarray],
        mels: list[ShardMels | None],
        *,
        cache_dir: Path,
        batch_size: int,
        train: bool,
        seed: int,
        frames: int,
        shuffle_buffer: int,
        start_g: int,
        rank: int,
        world_size: int,
    ):
        super().__init__()
        self.urls, self.keys, self.has_flac = urls, keys, has_flac
        self.mels = mels  # per shard: its cached mels, or None to decode its flacs
        self.cache_dir = cache_dir
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.frames, self.shuffle_buffer = frames, shuffle_buffer
        self.start_g, self.rank, self.world_size = start_g, rank, world_size
        self.sizes = [len(k) for k in keys]
        self.total = sum(self.sizes)

    # ---- the plan: pure functions of (seed, metadata)

    def units(self) -> Iterator[_Unit]:
        """Units whose samples reach ``start_g`` or later, in stream order."""
        if not self.train:
            g = 0
            for s, n in enumerate(self.sizes):
                if n and g + n > self.start_g:
                    yield _Unit(0, s, (s,), g, n)
                g += n
            return
        if self.total == 0:
            raise ValueError("no clips with cached features in these shards")
        epoch = self.start_g // self.total
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sizes))
            g, group, n = epoch * self.total, [], 0
            index = 0
            for s in order.tolist():
                group.append(s)
                n += self.sizes[s]
                if n >= self.shuffle_buffer or s == order[-1]:
                    if n and g + n > self.start_g:
                        yield _Unit(epoch, index, tuple(group), g, n)
                    g, group, n, index = g + n, [], 0, index + 1
            epoch += 1

    def unit_order(self, unit: _Unit) -> list[tuple[int, int]]:
        """(shard, position in shard) of the unit's samples, in stream order."""
        pairs = [(s, i) for s in unit.shards for i in range(self.sizes[s])]
        if self.train:
            perm = np.random.default_rng([self.seed, unit.epoch, unit.index, 1]).permutation(
                len(pairs)
            )
            pairs = [pairs[j] for j in perm.tolist()]
        return pairs

    def owns(self, g: int) -> bool:
        return (
            g >= self.start_g
            and (g % (self.batch_size * self.world_size)) // self.batch_size == self.rank
        )

    # ---- the work

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info else (0, 1)
        for u, unit in enumerate(self.units()):
            if u % n_workers == wid:
                yield self.load_unit(unit)

    def load_unit(self, unit: _Unit) -> dict[str, Any]:
        # Small STFTs run 10-30x faster on one thread than on a busy pool; restored
        # after, since with num_workers=0 this runs in the trainer's own process.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._load_unit(unit)
        finally:
            torch.set_num_threads(threads)

    def _load_unit(self, unit: _Unit) -> dict[str, Any]:
        bad: Counter = Counter()
        wanted: dict[tuple[int, int], int] = {}
        for j, pair in enumerate(self.unit_order(unit)):
            if self.owns(unit.g0 + j):
                wanted[pair] = unit.g0 + j
        items: dict[int, dict[str, Any]] = {}
        for s in unit.shards:
            need = {i: g for (s2, i), g in wanted.items() if s2 == s}
            if need:
                items.update(self._load_shard(s, need, bad))
        out = _stack([items[g] for g in sorted(items)], self.frames)
        out["bad"] = bad
        return out

    def _load_shard(self, s: int, need: dict[int, int], bad: Counter) -> dict[int, dict[str, Any]]:
        """The wanted samples (position -> g) of shard ``s``: features from the cache,
        each clip's whole mel from the mel cache or, without one, from its flac."""
        feats = load_shard_arrays(self.cache_dir, shard_stem(self.urls[s]))
        wanted_flac = {i for i in need if self.has_flac[s][i]}
        if not wanted_flac:
            mels: dict[int, torch.Tensor] = {}
        elif self.mels[s] is not None:
            mels = self._cached_mels(s, wanted_flac, bad)
        else:
            mels = self._decoded_mels(s, wanted_flac, bad)
        out = {}
        off = feats["text_offsets"]
        for i, g in need.items():
            rng = np.random.default_rng([self.seed, g])
            n_caps = int(off[i + 1] - off[i])
            c = int(rng.integers(n_caps)) if self.train and n_caps > 1 else 0
            audio, has_audio = None, False
            if i in mels:
                audio, has_audio = fix_length(mels[i], self.frames, train=self.train, rng=rng), True
            out[g] = {
                "key": self.keys[s][i],
                "caption": str(feats["captions"][off[i] + c]),
                "text": feats["text"][off[i] + c],
                "video": feats["video"][i],
                "image": feats["image"][i],
                "audio": audio,
                "has_audio": has_audio,
            }
        return out

    def _decoded_mels(self, s: int, wanted: set[int], bad: Counter) -> dict[int, torch.Tensor]:
        """Whole-clip mels of the ``wanted`` positions: flac bytes streamed from the tar by
        webdataset, decoded by ffmpeg; what is missing or does not decode is counted."""
        position = {k: i for i, k in enumerate(self.keys[s])}
        flacs: dict[int, bytes] = {}
        for key, data in iter_flacs(self.urls[s], bad):
            i = position.get(key)
            if i in wanted:
                flacs[i] = data
        bad["missing_in_tar"] += len(wanted - set(flacs))
        order = sorted(flacs)
        mels = {}
        for i, wave in zip(order, decode_audio_many([flacs[i] for i in order]), strict=True):
            if isinstance(wave, MediaError):
                bad["bad_flac"] += 1
                log.warning("data: %s in %s: %s", self.keys[s][i], self.urls[s], wave)
            else:
                mels[i] = clip_mel(wave)
        return mels

    def _cached_mels(self, s: int, wanted: set[int], bad: Counter) -> dict[int, torch.Tensor]:
        """The same from the mel cache: views of the mapped frames, nothing decoded. Clips
        the first pass could not read are counted again, as decoding them would count them."""
        cache = self.mels[s]
        bad.update(cache.tar_errors)  # what reading this tar would have met
        frames = cache.frames_map()
        mels = {}
        for i in sorted(wanted):
            status = int(cache.status[i])
            if status == melcache.OK:
                mels[i] = cache.mel(frames, i)
            elif status == melcache.BAD_FLAC:
                bad["bad_flac"] += 1
                log.warning("data: %s in %s: %s", self.keys[s][i], self.urls[s], cache.errors[i])
            else:
                bad["missing_in_tar"] += 1
        return mels


def _stack(items: list[dict[str, Any]], frames: int) -> dict[str, Any]:
    """Per-sample dicts -> one dict of stacked float32 tensors (workers send few, large tensors)."""
    zeros = torch.zeros(N_MELS, frames)
    if not items:
        return {"key": [], "caption": [], "n": 0}
    return {
        "audio": torch.stack([it["audio"] if it["has_audio"] else zeros for it in items])[:, None],
        "has_audio": torch.tensor([it["has_audio"] for it in items], dtype=torch.bool),
        "video": torch.from_numpy(np.stack([it["video"] for it in items]).astype(np.float32)),
        "text": torch.from_numpy(np.stack([it["text"] for it in items]).astype(np.float32)),
        "image": torch.from_numpy(np.stack([it["image"] for it in items]).astype(np.float32)),
        "key": [it["key"] for it in items],
        "caption": [it["caption"] for it in items],
        "n": len(items),
    }


_FIELDS = ("audio", "has_audio", "video", "text", "image", "key", "caption")


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _FIELDS:
        if f in ("key", "caption"):
            out[f] = [x for p in parts for x in p[f]]
        else:
            out[f] = torch.cat([p[f] for p in parts])
    return out


def _slice(unit: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {f: unit[f][a:b] for f in _FIELDS}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers run ffmpeg and small STFTs; threads would oversubscribe


class ShardLoader:
    """Iterable of batches (see :func:`make_loader`); ``bad`` counts skipped samples by reason."""

    def __init__(self, stream: _Stream, *, num_workers: int, bad: Counter):
        self.stream = stream
        self.num_workers = num_workers
        self.bad = bad

    @property
    def num_samples(self) -> int:
        """Clips in one epoch (all ranks)."""
        return self.stream.total

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch, rounded down (training batches straddle epochs)."""
        return self.stream.total // (self.stream.batch_size * self.stream.world_size)

    def count_bad_samples(self) -> dict[str, int]:
        return dict(self.bad)

    def _units(self) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0:
            yield from self.stream
            return
        loader = torch.utils.data.DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.num_workers,
            worker_init_fn=_worker_init,
            prefetch_factor=2,
        )
        yield from loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        b = self.stream.batch_size
        pending: list[dict[str, Any]] = []
        have = 0
        for unit in self._units():
            self.bad.update(unit["bad"])
            _PROCESS_BAD.update(unit["bad"])
            if unit["n"]:
                pending.append(unit)
                have += unit["n"]
            while have >= b:
                parts, need = [], b
                while need:
                    head = pending[0]
                    take = min(need, head["n"])
                    parts.append(_slice(head, 0, take))
                    if take == head["n"]:
                        pending.pop(0)
                    else:
                        pending[0] = {**_slice(head, take, head["n"]), "n": head["n"] - take}
                    need -= take
                have -= b
                # a batch inside one unit is a view of it: no copy in the trainer's process
                yield parts[0] if len(parts) == 1 else _cat(parts)
        if pending and not self.stream.train:
            yield _cat([_slice(p, 0, p["n"]) for p in pending])


def make_loader(
    shards: str | list[str],
    *,
    cache_dir: Path,
    batch_size: int,
    train: bool,
    num_workers: int = 2,
    seed: int = 0,
    audio_seconds: float = 2.0,
    shuffle_buffer: int = 1000,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    audio_cache: bool = True,
) -> ShardLoader:
    """Batches of ``{"audio": (B,1,128,F) f32, "has_audio": (B,) bool, "video": (B,T,D) f32,
    "text": (B,D) f32, "image": (B,D) f32, "key": [str], "caption": [str]}`` with
    ``F = round(audio_seconds * 100)``.

    ``train``: an endless stream, shuffled (see the module doc for how it stays
    exactly resumable from ``start_batch``); each rank gets ``batch_size`` of the
    global batch of ``batch_size * world_size``. Eval: one pass in order, the last
    batch may be short (or, on some ranks, absent). ``cache_dir`` holds the
    features of :func:`trainer.features.precompute_features`; a shard without
    them is an error. ``audio_cache``: read each clip's mel from the mel cache
    (:func:`trainer.features.precompute_audio`) where it is current; a shard
    without one, or ``audio_cache=False``, decodes its flacs as it reads them.
    Either way the batches are the same, bit for bit.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batch_size/rank/world_size: {batch_size}, {rank}, {world_size}")
    if start_batch < 0 or num_workers < 0:
        raise ValueError("start_batch and num_workers must be >= 0")
    urls = expand_shards(shards)
    if not urls:
        raise ValueError("make_loader: no shards given")
    bad: Counter = Counter()
    keys, has_flac, mels = [], [], []
    for url in urls:
        arrays = load_shard_arrays(cache_dir, shard_stem(url))
        keys.append(arrays["keys"].tolist())
        flags = arrays.get("has_flac")
        has_flac.append(np.ones(len(keys[-1]), bool) if flags is None else flags.astype(bool))
        bad["no_features"] += len(arrays["failed_keys"])
        mels.append(open_shard(cache_dir, url, keys[-1]) if audio_cache else None)
    _PROCESS_BAD.update(bad)
    cached = sum(m is not None for m in mels)
    if cached < len(urls) and audio_cache:
        log.info(
            "data: %d of %d shard(s) have no mel cache; their flacs are decoded",
            len(urls) - cached,
            len(urls),
        )
    if train and not any(keys):
        raise ValueError(f"no clips with cached features in {len(urls)} shard(s) under {cache_dir}")
    stream = _Stream(
        urls,
        keys,
        has_flac,
        mels,
        cache_dir=Path(cache_dir),
        batch_size=batch_size,
        train=train,
        seed=seed,
        frames=int(round(audio_seconds * 100)),
        shuffle_buffer=max(1, shuffle_buffer),
        start_g=start_batch * batch_size * world_size,
        rank=rank,
        world_size=world_size,
    )
    return ShardLoader(stream, num_workers=num_workers, bad=bad)
