"""Frozen-tower features: frames picked in time order, cached once, equal to the embedder's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from media import MediaError
from media.images import decode_image
from miners.embedders import PixelEmbedder
from shards.reader import iter_samples
from synth.shardgen import corrupt_copy, make_class_shards
from synth.testmedia import grey_frame, write_grey_ramp_video, write_video
from trainer.features import (
    cache_dir_for,
    decode_frames,
    decode_frames_many,
    load_shard_arrays,
    load_shard_features,
    precompute_features,
    read_cache_meta,
    recorded_embedder,
)


def levels(frames: np.ndarray) -> list[int]:
    return [int(round(float(f.mean()))) for f in frames]


def test_decode_frames_picks_uniform_frames_in_time_order(tmp_path):
    # frame i is grey 16 * floor(t): 50 frames, 5 picks -> centres t = 1, 3, 5, 7, 9 s
    video = write_grey_ramp_video(tmp_path / "ramp.mp4", seconds=10.0, fps=5.0, tone_hz=None)
    frames = decode_frames(video, 5, 32)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert levels(frames) == pytest.approx([16, 48, 80, 112, 144], abs=3)
    assert np.array_equal(decode_frames(video.read_bytes(), 5, 32), frames)


def test_decode_frames_pads_a_short_clip_with_its_last_frame(tmp_path):
    video = write_video(
        tmp_path / "short.mp4", lambda i, t: grey_frame(40 * i), seconds=0.8, fps=5.0, tone_hz=None
    )
    assert levels(decode_frames(video, 6, 16)) == pytest.approx([0, 40, 80, 120, 120, 120], abs=3)


def test_decode_frames_many_matches_one_by_one_and_isolates_garbage(tmp_path):
    clips = [
        write_video(
            tmp_path / f"{k}.mp4", lambda i, t, k=k: grey_frame(30 * k + 10 * i), seconds=1.0
        )
        for k in range(3)
    ]
    data = [c.read_bytes() for c in clips]
    out = decode_frames_many([data[0], b"garbage" * 99, data[1], data[2]], 4, 16)
    assert isinstance(out[1], MediaError)
    for got, clip in zip([out[0], out[2], out[3]], clips, strict=True):
        assert np.array_equal(got, decode_frames(clip, 4, 16))
    with pytest.raises(MediaError):
        decode_frames(b"garbage" * 99, 4, 16)


def test_cache_dir_depends_on_embedder_and_frames(tmp_path):
    a = cache_dir_for(tmp_path, "open_clip:ViT-B-32/openai", 8)
    assert a.parent == tmp_path / "features" and len(a.name) == 12
    assert a == cache_dir_for(tmp_path, "open_clip:ViT-B-32/openai", 8)
    assert a != cache_dir_for(tmp_path, "open_clip:ViT-B-32/openai", 16)
    assert a != cache_dir_for(tmp_path, "miners.embedders:pixel_embedder", 8)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    return make_class_shards(tmp_path_factory.mktemp("feat"), n_classes=2, per_class=3, n_shards=2)


def test_precompute_matches_the_embedder_and_is_skipped_on_rerun(small):
    emb = PixelEmbedder()
    cache = precompute_features(small["pattern"], emb, embedder_id="pixel", n_frames=4)
    assert cache == cache_dir_for(Path(small["shards"][0]).parent, "pixel", 4)
    files = sorted(cache.glob("*.npz"))
    assert [f.name for f in files] == ["00000.npz", "00001.npz"]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    assert precompute_features(small["shards"], emb, embedder_id="pixel", n_frames=4) == cache
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes  # done shards are not redone

    arrays = load_shard_arrays(cache, "00000")
    assert arrays["video"].dtype == np.float16 and arrays["video"].shape[1:] == (4, emb.dim)
    assert len(arrays["failed_keys"]) == 0
    meta = read_cache_meta(cache)  # what the trainer sizes its model by
    assert meta == {
        "embedder_id": "pixel",
        "n_frames": 4,
        "dim": emb.dim,
        "image_size": emb.image_size,
    }
    feats = load_shard_features(cache, "00000.tar")
    samples = list(iter_samples(small["shards"][0]))
    assert list(feats) == [s["__key__"] for s in samples]  # tar order
    for s in samples:
        f = feats[s["__key__"]]
        video = emb.embed_images(decode_frames(s["mp4"], 4, emb.image_size))
        image = emb.embed_images(decode_image(s["jpg"], emb.image_size)[None])[0]
        captions = [c["caption"] for c in s["json"]["captions"]]
        assert f["captions"] == captions and len(captions) == 2
        np.testing.assert_allclose(f["video"], video, atol=2e-3)
        np.testing.assert_allclose(f["image"], image, atol=2e-3)
        np.testing.assert_allclose(f["texts"], emb.embed_texts(captions), atol=2e-3)
        assert f["video"].dtype == np.float32


def test_a_corrupt_sample_is_skipped_and_counted(small, tmp_path, caplog):
    bad_dir = tmp_path / "shards"
    bad_dir.mkdir()
    damaged = corrupt_copy(small["shards"][0], bad_dir / "00000.tar", bad_mp4=1)
    cache = precompute_features(
        [str(bad_dir / "00000.tar")], PixelEmbedder(), embedder_id="pixel", n_frames=4
    )
    arrays = load_shard_arrays(cache, "00000")
    assert arrays["failed_keys"].tolist() == damaged["mp4"]
    assert "video: ffmpeg failed" in arrays["failed_errors"][0]
    n_total = len(list(iter_samples(small["shards"][0])))
    assert len(arrays["keys"]) == n_total - 1 and damaged["mp4"][0] not in arrays["keys"]
    assert any("skipping" in r.message for r in caplog.records)


def test_missing_cache_or_shard_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such shard"):
        precompute_features(str(tmp_path / "nope.tar"), PixelEmbedder(), embedder_id="p")
    with pytest.raises(FileNotFoundError, match="precompute_features"):
        load_shard_arrays(tmp_path, "00000")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        read_cache_meta(tmp_path)


def test_recorded_embedder_reads_the_mining_runs_seeds_json(small, tmp_path):
    assert recorded_embedder(small["shards"][0]) == "miners.embedders:pixel_embedder"
    assert recorded_embedder(Path(small["shards"][0]).parent) == "miners.embedders:pixel_embedder"
    assert recorded_embedder(tmp_path / "shards" / "00000.tar") is None
