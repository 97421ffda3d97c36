"""The mining stages driven directly (no Prefect): reuse, downloads and cut failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from miners import pipeline
from miners.videos import read_videos
from synth.testmedia import write_image, write_video

EMBEDDER = "miners.embedders:pixel_embedder"


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 255, (4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8)


@pytest.fixture
def tiny_set(tmp_path, http_root):
    """Seed A shown from 4 s to 8 s of a 12 s video (local and over HTTP); seed B nowhere."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, k in (("A", 1), ("B", 2)):
        write_image(seeds / f"{name}.png", _picture(k))
        (seeds / f"{name}.txt").write_text(f"picture {name}")
    noise = np.random.default_rng(9)

    def frame(i, t):
        if 4.0 <= t < 8.0:
            return _picture(1)
        return noise.integers(100, 140, (64, 64, 3)).astype(np.uint8)

    src = write_video(tmp_path / "a.mp4", frame, seconds=12.0, fps=5.0, width=64, height=64)
    blank = write_video(tmp_path / "blank.mp4", lambda i, t: np.full((64, 64, 3), 128, np.uint8),
                        seconds=4.0, fps=5.0, width=64, height=64, tone_hz=None)  # fmt: skip
    shutil.copy(src, http_root.root / "remote.mp4")
    shutil.copy(blank, http_root.root / "blank_remote.mp4")
    lst = tmp_path / "videos.txt"
    lst.write_text(f"{src}\n{http_root.url('remote.mp4')}\n{http_root.url('blank_remote.mp4')}\n")
    out = tmp_path / "out"
    pipeline.prepare_seeds(str(seeds), out, embedder=EMBEDDER, device="cpu")
    videos = [{"url": v.url, "video_id": v.video_id, "meta": v.meta} for v in read_videos(lst)]
    return out, videos


def _scan_all(out, videos, threshold=0.6):
    return [
        pipeline.scan_video(v, out, embedder=EMBEDDER, device="cpu", threshold=threshold)
        for v in videos
    ]


def test_scan_finds_the_planted_span_and_manages_downloads(tiny_set):
    out, videos = tiny_set
    local, remote, blank = _scan_all(out, videos)
    for scan in (local, remote):
        (c,) = scan["candidates"]
        assert 4.0 <= c["peak_time"] < 8.0 and c["seg_start"] >= 4.0 and c["seg_end"] < 8.0
    assert remote["downloaded"] and remote["local_path"]  # kept: it has a clip to cut
    assert blank["candidates"] == [] and blank["local_path"] is None  # removed at once
    assert not list((out / "downloads").glob("blank*"))
    assert pipeline.remove_downloads([local, remote, blank]) == 1
    assert not list((out / "downloads").glob("*.mp4"))


def test_scans_are_reused_only_with_the_same_settings(tiny_set):
    out, videos = tiny_set
    first = _scan_all(out, videos[:1])[0]
    path = pipeline.scan_path(out, videos[0]["video_id"])
    stamp = path.stat().st_mtime_ns
    assert _scan_all(out, videos[:1])[0] == first and path.stat().st_mtime_ns == stamp
    strict = _scan_all(out, videos[:1], threshold=0.999)[0]
    assert strict["settings"]["threshold"] == 0.999 and path.stat().st_mtime_ns != stamp


def test_shards_after_downloads_are_gone_refetch_and_a_lost_source_fails_one_clip(
    tiny_set, tmp_path
):
    out, videos = tiny_set
    scans = _scan_all(out, videos)
    pipeline.remove_downloads(scans)  # the HTTP source must be fetched again to cut it
    local = videos[0]["url"]
    moved = tmp_path / "moved.mp4"
    shutil.move(local, moved)  # the local source disappears before cutting
    (shard,) = pipeline.plan_clips(out, scans, clip_seconds=4.0, shard_size=10)
    stats = pipeline.build_shard(out, shard, cache_dir=out / "downloads")
    assert stats["status"] == {"failed": 1, "ok": 1}
    side = pd.read_parquet(out / "shards" / "00000.parquet").set_index("video")
    assert side.loc[local, "status"] == "failed" and "not_found" in side.loc[local, "error"]
    ok = side[side["status"] == "ok"].iloc[0]
    assert ok["caption"] == "picture A" and 4.0 <= ok["match_time"] < 8.0
    # rerun: the complete shard is skipped
    again = pipeline.build_shard(out, shard)
    assert again["skipped"] is True
    plan = json.loads((out / "plan.json").read_text())
    assert {c["key"] for c in plan["clips"]} == set(shard["keys"])


def test_seeds_embedded_in_chunks_equal_one_pass(tiny_set, tmp_path):
    out, _ = tiny_set  # made in one chunk
    seeds = out.parent / "seeds"
    (seeds / "C.jpg").write_bytes(b"not a picture")  # undecodable: a failed row between chunks
    (seeds / "C.txt").write_text("picture C")
    chunked = tmp_path / "chunked"
    one = tmp_path / "one"
    pipeline.prepare_seeds(str(seeds), chunked, embedder=EMBEDDER, device="cpu", chunk=1)
    pipeline.prepare_seeds(str(seeds), one, embedder=EMBEDDER, device="cpu", chunk=100)
    np.testing.assert_array_equal(np.load(chunked / "seeds.npy"), np.load(one / "seeds.npy"))
    a, b = pd.read_parquet(chunked / "seeds.parquet"), pd.read_parquet(one / "seeds.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert list(a["row"]) == [0, 1, -1] and list(a["status"]) == ["ok", "ok", "failed"]
    assert not (chunked / "seed_chunks").exists()  # chunks removed once merged
