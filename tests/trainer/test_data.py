"""The training stream: shapes, one ordered eval pass, exact resume, rank slices, bad samples."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from miners.embedders import PixelEmbedder
from shards.reader import iter_samples
from synth.shardgen import corrupt_copy, make_class_shards
from trainer.data import count_bad_samples, make_loader
from trainer.features import load_shard_features, precompute_features


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """24 clips (4 classes x 6) in 3 shards; 2 clips a class have no audio."""
    info = make_class_shards(
        tmp_path_factory.mktemp("data"), n_classes=4, per_class=6, n_shards=3,
        with_audio_fraction=4 / 6,
    )  # fmt: skip
    info["cache"] = precompute_features(info["pattern"], PixelEmbedder(), embedder_id="pixel")
    info["tar_keys"] = [s["__key__"] for t in info["shards"] for s in iter_samples(t)]
    info["has_flac"] = {s["__key__"]: "flac" in s for t in info["shards"] for s in iter_samples(t)}
    return info


def take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


def train_loader(data, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "seed": 3, "shuffle_buffer": 10, **kw}
    return make_loader(data["pattern"], cache_dir=data["cache"], train=True, **kw)


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["key"] == y["key"] and x["caption"] == y["caption"]
        for f in ("audio", "has_audio", "video", "text", "image"):
            assert torch.equal(x[f], y[f]), f


def test_batch_contract(data):
    batch = take(train_loader(data, audio_seconds=1.5), 1)[0]
    assert batch["audio"].shape == (4, 1, 128, 150) and batch["audio"].dtype == torch.float32
    assert batch["has_audio"].shape == (4,) and batch["has_audio"].dtype == torch.bool
    assert batch["video"].shape == (4, 8, 192) and batch["video"].dtype == torch.float32
    assert batch["text"].shape == (4, 192) and batch["image"].shape == (4, 192)
    assert batch["text"].dtype == batch["image"].dtype == torch.float32
    assert len(batch["key"]) == len(batch["caption"]) == 4
    assert all(isinstance(k, str) for k in batch["key"] + batch["caption"])


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_pass_sees_every_clip_once_in_order(data, workers):
    loader = make_loader(
        data["pattern"], cache_dir=data["cache"], batch_size=5, train=False, num_workers=workers
    )
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [5, 5, 5, 5, 4]  # the partial batch is kept
    keys = [k for b in batches for k in b["key"]]
    assert keys == data["tar_keys"]
    feats = {}
    for tar in data["shards"]:
        feats.update(load_shard_features(data["cache"], tar))
    for b in batches:
        for i, key in enumerate(b["key"]):
            assert b["caption"][i] == feats[key]["captions"][0]  # eval: the best caption
            assert torch.allclose(b["text"][i], torch.from_numpy(feats[key]["texts"][0]))
            assert torch.allclose(b["video"][i], torch.from_numpy(feats[key]["video"]))
            assert bool(b["has_audio"][i]) == data["has_flac"][key]
            if not data["has_flac"][key]:
                assert b["audio"][i].abs().sum() == 0  # no flac: zeros
            else:
                assert b["audio"][i].abs().sum() > 0


def test_training_is_shuffled_and_each_epoch_covers_every_clip(data):
    batches = take(train_loader(data), 12)  # 48 samples = 2 epochs of 24
    keys = [k for b in batches for k in b["key"]]
    first, second = keys[:24], keys[24:]
    assert sorted(first) == sorted(second) == sorted(data["tar_keys"])
    assert first != data["tar_keys"] and first != second
    captions = {c for b in batches for c in b["caption"]}
    assert any("hum" in c for c in captions) and any("tone" in c for c in captions)
    assert take(train_loader(data, seed=4), 1)[0]["key"] != batches[0]["key"]


def test_audio_carries_the_class_tone(data):
    """The crop is the clip's own tone: class k peaks near 300 * 1.25**k Hz."""
    from trainer.audio import MEL_MEAN, MEL_STD, mel_centres

    batch = take(train_loader(data, batch_size=12), 1)[0]
    for i, key in enumerate(batch["key"]):
        if batch["has_audio"][i]:
            k = data["labels"][key]
            peak = int((batch["audio"][i, 0] * MEL_STD + MEL_MEAN).mean(dim=1).argmax())
            assert abs(mel_centres()[peak] - 300 * 1.25**k) < 60


@pytest.fixture(scope="module")
def uninterrupted(data) -> list[dict]:
    return take(train_loader(data, num_workers=0), 9)  # 36 samples: crosses the epoch boundary


@pytest.mark.parametrize("workers", [0, 2])
def test_start_batch_resumes_exactly(data, uninterrupted, workers):
    resumed = take(train_loader(data, num_workers=workers, start_batch=5), 4)
    assert_same(resumed, uninterrupted[5:9])


def test_workers_do_not_change_the_stream(data, uninterrupted):
    assert_same(take(train_loader(data, num_workers=2), 9), uninterrupted)


def test_two_ranks_split_the_global_batch(data):
    whole = take(train_loader(data, batch_size=4, start_batch=2), 5)
    ranks = [
        take(train_loader(data, batch_size=2, rank=r, world_size=2, start_batch=2), 5)
        for r in range(2)
    ]
    for b, (r0, r1) in enumerate(zip(*ranks, strict=True)):
        assert r0["key"] + r1["key"] == whole[b]["key"]
        assert torch.equal(torch.cat([r0["audio"], r1["audio"]]), whole[b]["audio"])
        assert torch.equal(torch.cat([r0["text"], r1["text"]]), whole[b]["text"])
        assert not set(r0["key"]) & set(r1["key"])


def test_bad_samples_are_counted_not_fatal(data, tmp_path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    damaged = corrupt_copy(data["shards"][0], shard_dir / "00000.tar", bad_mp4=1, bad_flac=1)
    cache = precompute_features(str(shard_dir / "00000.tar"), PixelEmbedder(), embedder_id="p")
    before = count_bad_samples()
    loader = make_loader(
        str(shard_dir / "00000.tar"), cache_dir=cache, batch_size=3, train=False, num_workers=0
    )
    batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    assert damaged["mp4"][0] not in keys  # no features: left out
    assert damaged["flac"][0] in keys  # bad audio: kept, silent
    i = keys.index(damaged["flac"][0])
    b = batches[i // 3]
    assert not b["has_audio"][i % 3] and b["audio"][i % 3].abs().sum() == 0
    assert loader.count_bad_samples() == {"no_features": 1, "bad_flac": 1}
    after = count_bad_samples()
    assert after["bad_flac"] - before.get("bad_flac", 0) == 1


def test_missing_features_is_an_error(data, tmp_path):
    with pytest.raises(FileNotFoundError):
        make_loader(data["pattern"], cache_dir=tmp_path, batch_size=2, train=True)


def test_the_class_layout_separates_in_the_cached_features(data):
    """What the learning test relies on: PixelEmbedder features of a class cluster."""
    feats = {}
    for tar in data["shards"]:
        feats.update(load_shard_features(data["cache"], tar))
    keys = list(feats)
    labels = np.array([data["labels"][k] for k in keys])
    image = np.stack([feats[k]["image"] for k in keys])
    sim = image @ image.T
    np.fill_diagonal(sim, -np.inf)
    assert (labels[sim.argmax(axis=1)] == labels).all()
    assert Path(data["shards"][0]).parent.parent.joinpath("seeds.json").exists()
