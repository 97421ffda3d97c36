"""The mel cache: built once beside the features, the same batches as decoding, no ffmpeg after."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from miners.embedders import PixelEmbedder
from synth.shardgen import corrupt_copy, make_class_shards
from tests.trainer.test_data import assert_same
from trainer import data as data_module
from trainer import melcache
from trainer.audio import clip_mel
from trainer.data import make_loader
from trainer.features import precompute_audio, precompute_features


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """24 clips (4 classes x 6, 3 s long) in 3 shards; 2 clips a class have no audio."""
    info = make_class_shards(
        tmp_path_factory.mktemp("mel"), n_classes=4, per_class=6, n_shards=3,
        with_audio_fraction=4 / 6, seconds=3.0,
    )  # fmt: skip
    info["cache"] = precompute_features(info["pattern"], PixelEmbedder(), embedder_id="pixel")
    return info


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def loader(data, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "seed": 5, "shuffle_buffer": 10, "train": True, **kw}
    return make_loader(data["pattern"], cache_dir=data["cache"], **kw)


def forbid_decoding(monkeypatch) -> None:
    """Reading a tar or starting ffmpeg for audio is an error from here on."""

    def forbidden(*args, **kwargs):
        raise AssertionError("decoded audio although the mel cache is warm")

    for module in (data_module, melcache):
        monkeypatch.setattr(module, "decode_audio_many", forbidden)
        monkeypatch.setattr(module, "iter_flacs", forbidden)


def test_the_first_pass_writes_one_index_and_frames_per_shard(data):
    for tar in data["shards"]:
        stem = Path(tar).name[:-4]
        index, frames = melcache.cache_paths(data["cache"], stem, melcache.mel_digest(tar))
        assert index.is_file() and frames.is_file()
        assert index.parent == Path(data["cache"])  # beside the features
        with np.load(index) as z:
            ok = z["status"] == melcache.OK
            assert ok.sum() == (z["status"] != melcache.NO_FLAC).sum() > 0
            assert (z["frames"][ok] == 301).all()  # 3 s, centred frames: 1 + 48000 // 160
        assert frames.stat().st_size == 4 * 128 * 301 * ok.sum()


def test_a_cached_mel_is_the_decoded_clips_mel(data):
    from media.audio import decode_audio
    from shards.reader import iter_samples

    tar = data["shards"][0]
    sample = next(s for s in iter_samples(tar) if "flac" in s)
    keys = [s["__key__"] for s in iter_samples(tar)]
    mels = melcache.open_shard(data["cache"], tar, keys)
    cached = mels.mel(mels.frames_map(), keys.index(sample["__key__"]))
    torch.set_num_threads(1)  # as the loader and the first pass
    assert torch.equal(cached, clip_mel(decode_audio(sample["flac"])))


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_and_decoded_batches_are_identical(data, workers):
    """Bit for bit: the cache holds the whole clip's mel and crops are taken in mel space,
    so the crop is the same slice of the same numbers (9 batches: past the epoch's end)."""
    decoded = take(loader(data, audio_cache=False, start_batch=2), 9)
    cached = take(loader(data, num_workers=workers, start_batch=2), 9)
    assert_same(cached, decoded)
    assert any(not b["has_audio"].all() for b in cached)  # clips without audio: zeros
    assert all(b["audio"][b["has_audio"]].abs().sum() > 0 for b in cached)


def test_eval_pass_is_identical_with_the_cache(data):
    kw = {"train": False, "batch_size": 5}
    assert_same(list(loader(data, **kw)), list(loader(data, audio_cache=False, **kw)))


def test_a_warm_cache_never_decodes(data, monkeypatch):
    forbid_decoding(monkeypatch)
    whole = loader(data)
    epoch = take(whole, 6)  # 24 clips: one whole epoch
    assert sorted(k for b in epoch for k in b["key"]) == sorted(data["labels"])
    resumed = take(loader(data, start_batch=4), 2)  # a resumed run reads arrays too
    assert_same(resumed, epoch[4:6])
    assert whole.count_bad_samples() == {"no_features": 0}


def test_a_rerun_reuses_the_cache(data, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("rebuilt a current mel cache")

    monkeypatch.setattr(melcache, "build_shard", forbidden)
    precompute_features(data["pattern"], PixelEmbedder(), embedder_id="pixel")
    assert precompute_audio(data["pattern"], data["cache"]) == {}


def test_a_changed_shard_makes_its_mels_stale(data, tmp_path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    tar = shutil.copy(data["shards"][1], shard_dir / "00000.tar")
    cache = precompute_features(str(tar), PixelEmbedder(), embedder_id="p")
    before = sorted(p.name for p in cache.glob("00000.mel-*"))
    st = os.stat(tar)
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert make_loader(str(tar), cache_dir=cache, batch_size=2, train=False).stream.mels == [None]
    assert precompute_audio(str(tar), cache)["ok"] > 0
    after = sorted(p.name for p in cache.glob("00000.mel-*"))
    assert len(after) == 2 and not set(before) & set(after)  # the old pair is gone


def eval_pass(tar: str, cache: Path, audio_cache: bool) -> tuple[list[dict], dict]:
    ld = make_loader(
        tar, cache_dir=cache, batch_size=3, train=False, num_workers=0, audio_cache=audio_cache
    )
    return list(ld), ld.count_bad_samples()


def test_bad_audio_counts_the_same_with_the_cache(data, tmp_path, monkeypatch):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    tar = shard_dir / "00000.tar"
    damaged = corrupt_copy(data["shards"][0], tar, bad_flac=1)
    cache = precompute_features(str(tar), PixelEmbedder(), embedder_id="p")
    forbid_decoding(monkeypatch)  # the bad flac's failure is cached too
    batches, bad = eval_pass(str(tar), cache, True)
    assert bad == {"no_features": 0, "bad_flac": 1}
    keys = [k for b in batches for k in b["key"]]
    i = keys.index(damaged["flac"][0])
    assert not batches[i // 3]["has_audio"][i % 3]


def test_a_truncated_tar_counts_the_same_with_the_cache(data, tmp_path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    tar = Path(shutil.copy(data["shards"][2], shard_dir / "00000.tar"))
    cache = precompute_features(str(tar), PixelEmbedder(), embedder_id="p", audio=False)
    with tar.open("r+b") as f:  # the features saw it whole; the audio pass sees it cut
        f.truncate(tar.stat().st_size * 2 // 3)
    precompute_audio(str(tar), cache)
    cached, bad_cached = eval_pass(str(tar), cache, True)
    decoded, bad_decoded = eval_pass(str(tar), cache, False)
    assert_same(cached, decoded)
    assert bad_cached == bad_decoded
    assert bad_cached["missing_in_tar"] > 0
    assert any(k.startswith("tar_error:") for k in bad_cached)
