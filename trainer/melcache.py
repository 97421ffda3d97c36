"""The audio encoder's input, computed once per clip and cached beside the frozen features.

What is cached: each clip's normalised log-mel over the whole clip
(:func:`trainer.audio.clip_mel`), not its PCM. The loader crops in mel space
(:func:`trainer.audio.fix_length` takes a window of the whole clip's frames),
so a slice of the cached mel is exactly what decoding and transforming the
clip again would give, bit for bit: same wave, same function, one thread. PCM
would be a third smaller (int16) but costs an STFT and a mel product per
sample per step, on the cores the training step needs, and with centred
frames (reflect padding) the mel of a cropped wave differs from the slice in
its edge frames. The price is disk: 128 mels x 100 frames x 4 bytes = 51.2 KB
per second of audio.

Layout, in the feature cache's folder, per shard (``<stem>`` as the features'
``.npz``, ``<digest>`` from :func:`mel_digest`)::

    <stem>.mel-<digest>.f32   float32 little-endian, raw: every decoded clip's
                              (n_mels, T) mel, one after the other, in tar order
    <stem>.mel-<digest>.idx   an ``.npz`` archive: keys (N,) str (the features' keys, in order),
                              start (N,) int64 (first value in the .f32), frames (N,)
                              int64, status (N,) int8, errors (N,) str, tar_errors str

The ``.f32`` is renamed into place first, the ``.idx`` last, so the ``.idx``
marks the shard done (not named ``.npz``: the folder's ``*.npz`` are the
features, one a shard). The digest covers what would make the mels stale: the
mel settings (mels, rate, window, hop, normalisation) and the tar's size and
mtime. ``audio_seconds`` is not in it: the whole clip is stored, and the crop
length is chosen when the loader reads it. A clip without a flac, whose flac is
missing from the tar or does not decode keeps its status (and its error), so
the loader counts it as it would have counted it decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from media.audio import decode_audio_many
from media.ffmpeg import MediaError
from shards.writer import atomic_file, atomic_write_bytes
from trainer.audio import (
    HOP_LENGTH,
    MEL_MEAN,
    MEL_STD,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
    clip_mel,
)
from trainer.streams import chunks, ordered_map

log = logging.getLogger(__name__)

OK, NO_FLAC, MISSING, BAD_FLAC = 0, 1, 2, 3  # a clip's status
STATUS_NAMES = ("ok", "no_flac", "missing_in_tar", "bad_flac")
CHUNK = 32  # flacs one ffmpeg process decodes (media.audio.decode_audio_many's chunk)


def mel_digest(tar: str | Path, n_mels: int = N_MELS) -> str | None:
    """What the cached mels of ``tar`` depend on, hashed; None for a tar that is not a
    local file (a URL is streamed, never cached)."""
    try:
        st = os.stat(tar)
    except (OSError, ValueError):
        return None
    settings = {
        "n_mels": n_mels,
        "rate": SAMPLE_RATE,
        "win": WIN_LENGTH,
        "hop": HOP_LENGTH,
        "mean": MEL_MEAN,
        "std": MEL_STD,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def cache_paths(cache_dir: str | Path, stem: str, digest: str) -> tuple[Path, Path]:
    """(index ``.idx``, frames ``.f32``) of one shard's cached mels."""
    base = Path(cache_dir) / f"{stem}.mel-{digest}"
    return base.with_name(base.name + ".idx"), base.with_name(base.name + ".f32")


# --------------------------------------------------------------------------- reading tars


class CountTarErrors:
    """webdataset's error handler for one tar: count and log the error, then go on with
    the rest of the tar (the clips it cost keep their place, without audio)."""

    def __init__(self, url: str, bad: Counter):
        self.url, self.bad = url, bad

    def __call__(self, exn: Exception) -> bool:
        self.bad[f"tar_error:{type(exn).__name__}"] += 1
        log.warning("data: %s: %s", self.url, exn)
        return True


def _is_flac(name: str) -> bool:
    """Only the audio is read from the tars; everything else comes from the feature cache."""
    return name.endswith(".flac")


def iter_flacs(url: str, bad: Counter) -> Iterator[tuple[str, bytes]]:
    """(key, flac bytes) of a tar in tar order, read by webdataset; tar errors counted in ``bad``."""
    import webdataset as wds  # lazy: only the first pass and uncached shards read tars

    pipeline = wds.DataPipeline(
        wds.SimpleShardList([url]),
        wds.tarfile_to_samples(handler=CountTarErrors(url, bad), select_files=_is_flac),
    )
    for sample in pipeline:
        if "flac" in sample:
            yield sample["__key__"], sample["flac"]


# --------------------------------------------------------------------------- building


def _mels_of(chunk: list[tuple[int, bytes]]) -> list[tuple[int, np.ndarray | MediaError]]:
    """Decode a chunk of flacs with one ffmpeg and take their mels, on one torch thread
    (as the loader does, so the numbers are the loader's)."""
    torch.set_num_threads(1)
    waves = decode_audio_many([data for _, data in chunk], chunk=CHUNK)
    out: list[tuple[int, np.ndarray | MediaError]] = []
    for (i, _), wave in zip(chunk, waves, strict=True):
        if isinstance(wave, MediaError):
            out.append((i, wave))
        else:
            out.append((i, clip_mel(wave).numpy().astype("<f4")))  # (n_mels, T)
    return out


@dataclass
class _Index:
    """The ``.idx`` arrays of one shard, filled as its clips come back."""

    keys: list[str]
    start: np.ndarray
    frames: np.ndarray
    status: np.ndarray
    errors: list[str]

    @classmethod
    def empty(cls, keys: list[str], has_flac: np.ndarray) -> _Index:
        n = len(keys)
        status = np.where(has_flac, MISSING, NO_FLAC).astype(np.int8)  # until found in the tar
        return cls(keys, np.zeros(n, np.int64), np.zeros(n, np.int64), status, [""] * n)

    def arrays(self, tar_errors: Counter) -> dict[str, np.ndarray]:
        return {
            "keys": np.array(self.keys, dtype=str),
            "start": self.start,
            "frames": self.frames,
            "status": self.status,
            "errors": np.array(self.errors, dtype=str),
            "tar_errors": np.array(list(tar_errors.elements()), dtype=str),
        }


def build_shard(
    tar: str,
    cache_dir: str | Path,
    keys: list[str],
    has_flac: np.ndarray,
    *,
    workers: int = 4,
    advance: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Decode every flac of ``tar`` that the features list (``keys``, ``has_flac``), in
    ``workers`` threads each running ffmpeg on a chunk, and write the shard's cached mels.
    ``advance(n)`` is told of every ``n`` clips done. Returns counts by status."""
    digest = mel_digest(tar)
    if digest is None:
        raise FileNotFoundError(f"mel cache: {tar} is not a local file")
    index_path, data_path = cache_paths(cache_dir, _stem(tar), digest)
    index = _Index.empty(keys, np.asarray(has_flac, bool))
    wanted = {k: i for i, k in enumerate(keys) if index.status[i] == MISSING}
    tar_errors: Counter = Counter()
    pairs = ((wanted[k], data) for k, data in iter_flacs(tar, tar_errors) if k in wanted)
    threads = torch.get_num_threads()  # _mels_of sets 1 in its threads; some backends share it
    try:
        with (
            atomic_file(data_path) as f,
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        ):
            at = 0
            for results in ordered_map(pool, _mels_of, chunks(pairs, CHUNK), 2 * workers):
                for i, mel in results:
                    at = _record(index, i, mel, f, at, tar, keys)
                if advance:
                    advance(len(results))
    finally:
        torch.set_num_threads(threads)
    atomic_write_bytes(index_path, _npz_bytes(index.arrays(tar_errors)))
    _remove_stale(cache_dir, _stem(tar), keep=(index_path, data_path))
    return {name: int((index.status == code).sum()) for code, name in enumerate(STATUS_NAMES)}


def _record(index: _Index, i: int, mel, f, at: int, tar: str, keys: list[str]) -> int:
    """One clip's result into the index (and its values into ``f`` at ``at``); where the
    next clip's go."""
    if isinstance(mel, MediaError):
        index.status[i], index.errors[i] = BAD_FLAC, str(mel)
        log.warning("mel cache: %s in %s: %s", keys[i], tar, mel)
        return at
    f.write(mel.tobytes())
    index.status[i], index.start[i], index.frames[i] = OK, at, mel.shape[1]
    return at + mel.size


def _remove_stale(cache_dir: str | Path, stem: str, keep: tuple[Path, ...]) -> None:
    """Mels of an earlier version of the shard (or other settings): never read again."""
    for path in Path(cache_dir).glob(f"{stem}.mel-*"):
        if path not in keep:
            path.unlink(missing_ok=True)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _stem(tar: str | Path) -> str:
    name = Path(str(tar)).name
    return name[:-4] if name.endswith(".tar") else name


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ShardMels:
    """One shard's cached mels, as the loader reads them (small and picklable: the frames
    are mapped from disk when a worker asks, never sent to it)."""

    data_path: Path
    start: np.ndarray
    frames: np.ndarray
    status: np.ndarray
    errors: np.ndarray
    tar_errors: tuple[str, ...]
    n_mels: int = N_MELS

    def frames_map(self) -> np.ndarray:
        """All values, flat, mapped copy-on-write (writable for torch, never written back)."""
        size = os.path.getsize(self.data_path) // 4
        if size == 0:
            return np.zeros(0, np.float32)
        return np.memmap(self.data_path, dtype="<f4", mode="c", shape=(size,))

    def mel(self, frames_map: np.ndarray, i: int) -> torch.Tensor:
        """Clip ``i``'s whole normalised log-mel, (n_mels, T): a view, nothing read yet."""
        a, n = int(self.start[i]), int(self.frames[i])
        # (n_mels, T) rows, as clip_mel gives it: a crop is a view whose rows are runs
        # of contiguous frames, and stacking crops yields a contiguous batch
        return torch.from_numpy(frames_map[a : a + self.n_mels * n]).view(self.n_mels, n)


def open_shard(cache_dir: str | Path, tar: str, keys: list[str]) -> ShardMels | None:
    """The cached mels of ``tar`` when they are there, current and for these ``keys``;
    None otherwise (the loader then decodes the shard's flacs as it reads them)."""
    digest = mel_digest(tar)
    if digest is None:
        return None
    index_path, data_path = cache_paths(cache_dir, _stem(tar), digest)
    if not index_path.is_file() or not data_path.is_file():
        return None
    with np.load(index_path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    if a["keys"].tolist() != list(keys):
        log.warning("mel cache: %s lists other clips than the features; not used", index_path)
        return None
    return ShardMels(
        data_path,
        a["start"],
        a["frames"],
        a["status"],
        a["errors"],
        tuple(a["tar_errors"].tolist()),
    )
