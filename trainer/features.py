"""Frozen-tower features, computed once per clip and cached beside the shards.

The CLIP image and text towers never change during training, so the video
frames, the matched ``jpg`` and every caption are embedded once, here, and
training epochs read small float16 arrays instead of decoding video and
running CLIP again. Each clip's whole mel is cached beside them too
(:func:`precompute_audio`, :mod:`trainer.melcache`), so epochs read no tar at all.

Cache layout, one folder per (embedder, frames a clip)::

    <shard_dir>/features/<sha1(embedder_id|n_frames)[:12]>/
        meta.json        embedder_id, n_frames, dim, image_size
        00000.npz        keys (N,) str, video (N,T,D) f16, image (N,D) f16,
                         text (sum C,D) f16, text_offsets (N+1,) int64,
                         captions (sum C,) str, has_flac (N,) bool,
                         failed_keys, failed_errors (str)

A shard's ``.npz`` is written atomically and last, so it marks the shard done;
a rerun skips shards whose file exists. A sample that does not decode is
skipped, logged and listed in ``failed_keys`` with its error, never a crash.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import tarfile
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from media.ffmpeg import FFMPEG, MediaError, file_arg, run
from media.images import SQUARE_PIXELS, centre_square, decode_image, filter_string
from media.tars import iter_raw_samples
from shards.writer import atomic_write_bytes
from trainer import melcache
from trainer.streams import chunks, ordered_map

log = logging.getLogger(__name__)


DECODE_CHUNK = 16  # clips a single ffmpeg process decodes


def expand_shards(shards: str | list[str]) -> list[str]:
    """A brace pattern (``dir/{00000..00009}.tar``), a ``::``-separated string or a list."""
    import braceexpand

    items = [shards] if isinstance(shards, str) else list(shards)
    out: list[str] = []
    for item in items:
        for part in str(item).split("::"):
            out.extend(braceexpand.braceexpand(part))
    return out


def shard_stem(shard: str | Path) -> str:
    """``.../00003.tar`` -> ``00003``: the name a shard's cache file takes."""
    name = Path(str(shard)).name
    return name[:-4] if name.endswith(".tar") else name


# --------------------------------------------------------------------------- decoding


def _video_filter(size: int) -> str:
    """The mining preprocessing (:mod:`media.images`): square pixels, shorter side to
    ``size`` (bicubic), centre crop."""
    return filter_string(SQUARE_PIXELS + centre_square(size))


def _to_raw(size: int) -> list[str]:
    return ["-vf", _video_filter(size), "-f", "rawvideo", "-pix_fmt", "rgb24"]


def decode_frames(mp4: bytes | str | Path, n_frames: int, size: int) -> np.ndarray:
    """``n_frames`` frames uniformly spaced over the clip -> uint8 (n_frames, size, size, 3).

    ffmpeg decodes every frame, scaled and cropped, and frame ``floor((i + 0.5) *
    N / n_frames)`` of the ``N`` decoded ones is kept: the centres of equal time
    slices. A clip with fewer than ``n_frames`` frames is padded by repeating its
    last frame. Bytes go through a temp file (an mp4 whose index sits at the end
    cannot be read from a pipe). Raises :class:`MediaError`.
    """
    if isinstance(mp4, bytes | bytearray):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(mp4)
            f.flush()
            return _decode_frames_file(f.name, n_frames, size)
    return _decode_frames_file(str(mp4), n_frames, size)


def _decode_frames_file(path: str, n_frames: int, size: int) -> np.ndarray:
    cmd = [
        FFMPEG,
        "-nostdin",
        "-v",
        "error",
        "-threads",
        "1",
        "-i",
        file_arg(path),
        "-map",
        "0:v:0",
    ]
    out = run([*cmd, *_to_raw(size), "pipe:1"], what="video")
    return _pick_frames(out, n_frames, size)


def _pick_frames(raw: bytes, n_frames: int, size: int) -> np.ndarray:
    """The centres of ``n_frames`` equal slices of the decoded frames; the last repeated
    when there are fewer."""
    frame_bytes = size * size * 3
    n = len(raw) // frame_bytes
    if n == 0:
        raise MediaError("video: no frame decoded")
    frames = np.frombuffer(raw[: n * frame_bytes], np.uint8).reshape(n, size, size, 3)
    if n >= n_frames:
        idx = np.floor((np.arange(n_frames) + 0.5) * n / n_frames).astype(int)
    else:
        idx = np.concatenate([np.arange(n), np.full(n_frames - n, n - 1)])
    return frames[idx].copy()


def decode_frames_many(
    mp4s: list[bytes], n_frames: int, size: int
) -> list[np.ndarray | MediaError]:
    """:func:`decode_frames` of several clips with one ffmpeg process (N inputs, N raw
    outputs): starting ffmpeg costs more than decoding a short tiny clip. When the
    run fails it is split in halves until each bad clip is alone and gets its own
    :class:`MediaError` in its place."""
    if not mp4s:
        return []
    if len(mp4s) == 1:
        try:
            return [decode_frames(mp4s[0], n_frames, size)]
        except MediaError as e:
            return [e]
    with tempfile.TemporaryDirectory(prefix="capmine-frames-") as tmp:
        cmd = [FFMPEG, "-nostdin", "-v", "error", "-y", "-threads", "1"]
        for i, data in enumerate(mp4s):
            src = Path(tmp) / f"{i}.mp4"
            src.write_bytes(data)
            cmd += ["-i", file_arg(src)]
        for i in range(len(mp4s)):
            cmd += ["-map", f"{i}:v:0", *_to_raw(size), str(Path(tmp) / f"{i}.raw")]
        try:
            run(cmd, what=f"{len(mp4s)} videos")
        except MediaError:
            half = len(mp4s) // 2
            return decode_frames_many(mp4s[:half], n_frames, size) + decode_frames_many(
                mp4s[half:], n_frames, size
            )
        out: list[np.ndarray | MediaError] = []
        for i in range(len(mp4s)):
            try:
                out.append(_pick_frames((Path(tmp) / f"{i}.raw").read_bytes(), n_frames, size))
            except MediaError as e:
                out.append(e)
        return out


def sample_captions(sample: dict[str, Any]) -> list[str]:
    """The caption texts, best first: the json's ``captions``, else the ``txt``."""
    captions: list[str] = []
    if "json" in sample:
        meta = sample["json"]
        if isinstance(meta, bytes | str):
            meta = json.loads(meta)
        captions = [c["caption"] for c in meta.get("captions", []) if c.get("caption")]
    if not captions and sample.get("txt"):
        txt = sample["txt"]
        captions = [txt.decode("utf-8") if isinstance(txt, bytes) else txt]
    return captions


# --------------------------------------------------------------------------- the cache


def recorded_embedder(shard: str | Path) -> str | None:
    """The ``embedder`` the mining run recorded in ``OUT/seeds.json`` for shards in
    ``OUT/shards/`` (``shard`` is a tar or that folder); None when there is none."""
    path = Path(str(shard))
    folder = path.parent if path.suffix == ".tar" else path
    seeds = folder.parent / "seeds.json"
    if not seeds.exists():
        return None
    return json.loads(seeds.read_text()).get("embedder")


def cache_dir_for(shard_dir: str | Path, embedder_id: str, n_frames: int) -> Path:
    """``<shard_dir>/features/<sha1(embedder_id|n_frames)[:12]>``: a new embedder or
    frame count gets a new folder, never stale features."""
    digest = hashlib.sha1(f"{embedder_id}|{n_frames}".encode()).hexdigest()[:12]
    return Path(shard_dir) / "features" / digest


def _check_sample(sample: dict[str, Any], size: int):
    """(key, image, captions, has_flac) or (key, error string); the video comes later."""
    key = sample["__key__"]
    try:
        if "mp4" not in sample:
            raise MediaError("no mp4")
        if "jpg" not in sample:
            raise MediaError("no jpg")
        try:
            captions = sample_captions(sample)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MediaError(f"bad json: {e}") from e
        if not captions:
            raise MediaError("no caption")
        image = decode_image(sample["jpg"], size)
    except MediaError as e:
        return key, str(e)
    return key, image, captions, "flac" in sample


def _decode_chunk(samples: list[dict[str, Any]], n_frames: int, size: int) -> list[tuple]:
    """Per sample, in order: (key, frames, image, captions, has_flac) or (key, error)."""
    checked = [_check_sample(s, size) for s in samples]
    ok = [i for i, c in enumerate(checked) if len(c) == 4]
    videos = decode_frames_many([samples[i]["mp4"] for i in ok], n_frames, size)
    out: list[tuple] = list(checked)
    for i, frames in zip(ok, videos, strict=True):
        key, image, captions, has_flac = checked[i]
        out[i] = (
            (key, str(frames))
            if isinstance(frames, MediaError)
            else (key, frames, image, captions, has_flac)
        )
    return out


def _embed_in_batches(fn, items, batch_size: int) -> np.ndarray:
    return np.concatenate([fn(items[i : i + batch_size]) for i in range(0, len(items), batch_size)])


class _ShardArrays:
    """The arrays of one shard's cache file, filled in tar order.

    Decoded clips wait in ``pending`` until they make a batch of frames for the
    embedder (:meth:`add` flushes then), so CLIP runs on full batches however
    short the clips; :meth:`arrays` flushes the rest and stacks everything.
    """

    def __init__(self, embedder, n_frames: int, batch_size: int):
        self.embedder, self.n_frames, self.batch_size = embedder, n_frames, batch_size
        self.dim = int(embedder.dim)
        self.keys: list[str] = []
        self.videos: list[np.ndarray] = []
        self.images: list[np.ndarray] = []
        self.texts: list[np.ndarray] = []
        self.offsets: list[int] = [0]
        self.captions: list[str] = []
        self.flacs: list[bool] = []
        self.failed: list[tuple[str, str]] = []
        self.pending: list[tuple[str, np.ndarray, np.ndarray, list[str], bool]] = []

    def add(self, result: tuple) -> None:
        """One :func:`_decode_chunk` result: a decoded clip, or ``(key, error)``."""
        if len(result) == 2:
            self.failed.append(result)
            return
        self.pending.append(result)
        if len(self.pending) * self.n_frames >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Embed the pending clips' frames, jpgs and captions, and append them."""
        if not self.pending:
            return
        embed_images, embed_texts = self.embedder.embed_images, self.embedder.embed_texts
        frames = np.concatenate([p[1] for p in self.pending])
        vid = _embed_in_batches(embed_images, frames, self.batch_size)
        img = _embed_in_batches(
            embed_images, np.stack([p[2] for p in self.pending]), self.batch_size
        )
        caps = [c for p in self.pending for c in p[3]]
        txt = _embed_in_batches(embed_texts, caps, self.batch_size)
        t = self.n_frames
        for i, (key, _, _, cs, has_flac) in enumerate(self.pending):
            self.keys.append(key)
            self.flacs.append(has_flac)
            self.videos.append(vid[i * t : (i + 1) * t])
            self.images.append(img[i])
            self.offsets.append(self.offsets[-1] + len(cs))
            self.captions.extend(cs)
        self.texts.append(txt)
        self.pending.clear()

    def arrays(self) -> dict[str, np.ndarray]:
        """The cache file's arrays (see the module doc); empty ones keep their shapes."""
        self.flush()
        n, dim = len(self.keys), self.dim
        return {
            "keys": np.array(self.keys, dtype=str),
            "video": np.stack(self.videos).astype(np.float16)
            if n
            else np.zeros((0, self.n_frames, dim), np.float16),
            "image": np.stack(self.images).astype(np.float16)
            if n
            else np.zeros((0, dim), np.float16),
            "text": np.concatenate(self.texts).astype(np.float16)
            if self.texts
            else np.zeros((0, dim), np.float16),
            "text_offsets": np.array(self.offsets, dtype=np.int64),
            "has_flac": np.array(self.flacs, dtype=bool),
            "captions": np.array(self.captions, dtype=str),
            "failed_keys": np.array([k for k, _ in self.failed], dtype=str),
            "failed_errors": np.array([e for _, e in self.failed], dtype=str),
        }


def _shard_features(
    tar: str, embedder, n_frames: int, batch_size: int, workers: int
) -> dict[str, np.ndarray]:
    """One shard's cache arrays; a sample that does not decode is listed, not fatal."""
    out = _ShardArrays(embedder, n_frames, batch_size)
    decode = functools.partial(_decode_chunk, n_frames=n_frames, size=int(embedder.image_size))
    try:
        parts = chunks(iter_raw_samples(tar), DECODE_CHUNK)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            # ffmpeg runs in subprocesses, so threads decode in parallel; the map keeps tar order
            for results in ordered_map(pool, decode, parts, ahead=max(1, workers)):
                for result in results:
                    if len(result) == 2:
                        log.warning("features: skipping %s in %s: %s", result[0], tar, result[1])
                    out.add(result)
    except (tarfile.TarError, OSError) as e:  # a truncated tar keeps what was read
        out.failed.append(("__tar__", f"tar unreadable: {e}"))
        log.warning("features: %s is unreadable after %d samples: %s", tar, len(out.keys), e)
    return out.arrays()


def _savez_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def read_cache_meta(cache_dir: str | Path) -> dict[str, Any]:
    """The cache's ``meta.json``: ``embedder_id``, ``n_frames``, ``dim`` (the CLIP width
    of every cached feature) and ``image_size``."""
    path = Path(cache_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {cache_dir} is not a feature cache written by precompute_features"
        )
    return json.loads(path.read_text())


def precompute_features(
    shards: str | list[str],
    embedder,
    *,
    embedder_id: str,
    n_frames: int = 8,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    progress: bool = False,
    workers: int = 4,
    audio: bool = True,
) -> Path:
    """Embed every clip's frames, jpg and captions once; one ``.npz`` a shard; then,
    with ``audio``, cache every clip's mel beside them (:func:`precompute_audio`).

    ``embedder`` is the frozen tower (``dim``, ``image_size``, ``embed_images``,
    ``embed_texts``); ``embedder_id`` names it in the cache path (e.g. the
    ``embedder`` of ``OUT/seeds.json``). ``cache_dir`` defaults to
    :func:`cache_dir_for` the first shard's folder. Shards whose file exists are
    skipped. ``workers`` threads run ffmpeg. Returns the cache folder.
    """
    tars = expand_shards(shards)
    if not tars:
        raise ValueError("precompute_features: no shards given")
    missing = [t for t in tars if not Path(t).is_file()]
    if missing:  # a wrong path is a bad run, not an empty shard
        raise FileNotFoundError(f"precompute_features: no such shard(s): {missing[:3]}")
    cache = (
        Path(cache_dir) if cache_dir else cache_dir_for(Path(tars[0]).parent, embedder_id, n_frames)
    )
    cache.mkdir(parents=True, exist_ok=True)
    meta = {
        "embedder_id": embedder_id,
        "n_frames": n_frames,
        "dim": int(embedder.dim),
        "image_size": int(embedder.image_size),
    }
    meta_path = cache / "meta.json"
    if not meta_path.exists():
        atomic_write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    todo = [t for t in tars if not (cache / f"{shard_stem(t)}.npz").exists()]
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc="features", unit="shard")
    for tar in todo:
        arrays = _shard_features(tar, embedder, n_frames, batch_size, workers)
        atomic_write_bytes(cache / f"{shard_stem(tar)}.npz", _savez_bytes(arrays))
        log.info(
            "features: %s: %d clips, %d skipped",
            tar,
            len(arrays["keys"]),
            len(arrays["failed_keys"]),
        )
    if audio:
        precompute_audio(tars, cache, workers=workers, progress=progress)
    return cache


def precompute_audio(
    shards: str | list[str], cache_dir: str | Path, *, workers: int = 4, progress: bool = False
) -> dict[str, int]:
    """Cache the whole-clip mel of every clip the features list (:mod:`trainer.melcache`),
    for shards whose mels are missing or stale; ``workers`` threads run ffmpeg. A rerun
    reuses what is there. Returns the clips by status (``ok``, ``no_flac``,
    ``missing_in_tar``, ``bad_flac``) over the shards built now."""
    todo = []
    for tar in expand_shards(shards):
        digest = melcache.mel_digest(tar)
        if digest is None:  # not a local file: streamed and decoded, never cached
            continue
        if melcache.cache_paths(cache_dir, shard_stem(tar), digest)[0].exists():
            continue
        arrays = load_shard_arrays(cache_dir, shard_stem(tar))
        flags = arrays.get("has_flac")
        keys = arrays["keys"].tolist()
        todo.append((tar, keys, np.ones(len(keys), bool) if flags is None else flags.astype(bool)))
    from tqdm import tqdm  # lazy, as in precompute_features

    totals: Counter = Counter()
    clips = sum(int(flags.sum()) for _, _, flags in todo)
    with tqdm(total=clips, desc="audio", unit="clip", disable=not (progress and todo)) as bar:
        for tar, keys, has_flac in todo:
            t0 = time.perf_counter()
            counts = melcache.build_shard(
                tar, cache_dir, keys, has_flac, workers=workers, advance=bar.update
            )
            totals.update(counts)
            log.info("audio: %s: %s in %.1f s", tar, counts, time.perf_counter() - t0)
    return dict(totals)


def load_shard_arrays(cache_dir: str | Path, shard_name: str) -> dict[str, np.ndarray]:
    """The raw arrays of one shard's cache file; raises FileNotFoundError when not computed."""
    path = Path(cache_dir) / f"{shard_stem(shard_name)}.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"no cached features for shard {shard_name} in {cache_dir}: run precompute_features first"
        )
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_shard_features(cache_dir: str | Path, shard_name: str) -> dict[str, dict[str, Any]]:
    """``{key: {"video": (T,D) f32, "image": (D,) f32, "texts": (C,D) f32, "captions": [str]}}``."""
    a = load_shard_arrays(cache_dir, shard_name)
    off = a["text_offsets"]
    out = {}
    for i, key in enumerate(a["keys"].tolist()):
        out[key] = {
            "video": a["video"][i].astype(np.float32),
            "image": a["image"][i].astype(np.float32),
            "texts": a["text"][off[i] : off[i + 1]].astype(np.float32),
            "captions": a["captions"][off[i] : off[i + 1]].tolist(),
        }
    return out
