"""The mining stages driven directly (no Prefect): reuse, downloads and cut failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from miners.videos import read_videos
from runs.folder import RunFolder
from runs.records import Ledger, Threshold
from runs.seeds import embed_seed_chunk, merge_seed_chunks, plan_seeds
from runs.stages import FilterSetup, plan_run, scan_video_into, stage_shard
from synth.testmedia import write_image, write_video

EMBEDDER = "miners.embedders:pixel_embedder"
NO_FILTERS = FilterSetup("none")


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 255, (4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8)


def embed_seeds(seeds: str, folder: RunFolder, chunk: int = 10000):
    """The seed stage as the flow runs it, chunk after chunk in this process."""
    plan = plan_seeds(folder, seeds, embedder=EMBEDDER, device="cpu", chunk=chunk)
    if plan.reuse is not None:
        return plan.reuse
    files = [embed_seed_chunk(folder, seeds, plan.fingerprint, a, b, embedder=EMBEDDER,
                              device="cpu") for a, b in plan.chunks]  # fmt: skip
    return merge_seed_chunks(folder, plan, files, embedder=EMBEDDER)


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
    folder = RunFolder(tmp_path / "out")
    embed_seeds(str(seeds), folder)
    return folder, read_videos(lst)


def _scan_all(folder, videos, threshold=0.6):
    return [
        scan_video_into(folder, v, embedder=EMBEDDER, device="cpu", threshold=threshold)
        for v in videos
    ]


def test_scan_finds_the_planted_span_and_manages_downloads(tiny_set):
    folder, videos = tiny_set
    local, remote, blank = _scan_all(folder, videos)
    for scan in (local, remote):
        (c,) = scan.candidates
        assert 4.0 <= c.peak_time < 8.0 and c.seg_start >= 4.0 and c.seg_end < 8.0
        # the shot holding the match: the picture's 4 s between two hard cuts
        assert c.shot == pytest.approx((4.0, 8.0), abs=0.21)
    assert remote.downloaded and remote.local_path  # kept: it has a clip to cut
    assert blank.candidates == [] and blank.local_path is None  # removed at once
    assert not list(folder.downloads.glob("blank*"))
    assert folder.remove_downloads([local, remote, blank]) == 1
    assert not list(folder.downloads.glob("*.mp4"))


def test_scans_are_reused_only_with_the_same_settings(tiny_set):
    folder, videos = tiny_set
    first = _scan_all(folder, videos[:1])[0]
    path = folder.scan_file(videos[0].video_id)
    stamp = path.stat().st_mtime_ns
    assert _scan_all(folder, videos[:1])[0] == first and path.stat().st_mtime_ns == stamp
    assert folder.load_scan(videos[0].video_id) == first  # the file holds the whole record
    strict = _scan_all(folder, videos[:1], threshold=0.999)[0]
    assert strict.settings["threshold"] == 0.999 and path.stat().st_mtime_ns != stamp


def test_a_scan_with_another_sampler_is_redone(tiny_set):
    """The video has one key frame (at 0 s): a keyframes scan sees one frame, not twelve."""
    folder, videos = tiny_set
    exact = _scan_all(folder, videos[:1])[0]
    assert "sampler" not in exact.settings  # exact scans made before the option still count
    keyed = scan_video_into(folder, videos[0], embedder=EMBEDDER, device="cpu", threshold=0.6,
                            sampler="keyframes")  # fmt: skip
    assert keyed.settings["sampler"] == "keyframes" and keyed.n_frames == 1
    assert _scan_all(folder, videos[:1])[0].n_frames == exact.n_frames == 12


def test_shards_after_downloads_are_gone_refetch_and_a_lost_source_fails_one_clip(
    tiny_set, tmp_path
):
    folder, videos = tiny_set
    scans = _scan_all(folder, videos)
    folder.remove_downloads(scans)  # the HTTP source must be fetched again to cut it
    local = videos[0].url
    shutil.move(local, tmp_path / "moved.mp4")  # the local source disappears before cutting
    plan = plan_run(folder, scans, ledger=Ledger(), threshold=Threshold(0.6, "given"),
                    clip_seconds=4.0, shard_size=10)  # fmt: skip
    (shard,) = plan.shards
    assert stage_shard(folder, shard, NO_FILTERS)["skipped"] is False
    stats = folder.write_staged(shard)
    assert stats["status"] == {"failed": 1, "ok": 1}
    side = pd.read_parquet(folder.shard_file(0, ".parquet")).set_index("video")
    assert side.loc[local, "status"] == "failed" and "not_found" in side.loc[local, "error"]
    ok = side[side["status"] == "ok"].iloc[0]
    assert ok["caption"] == "picture A" and 4.0 <= ok["match_time"] < 8.0
    assert not folder.staging(0).exists()  # the staging goes once the shard is written
    # rerun: the complete shard is neither staged nor written again
    assert stage_shard(folder, shard, NO_FILTERS)["skipped"] is True
    assert folder.write_staged(shard)["skipped"] is True
    saved = json.loads(folder.path("plan.json").read_text())
    assert {c["key"] for c in saved["clips"]} == set(shard.keys)
    assert saved["threshold"] == {"threshold": 0.6, "basis": "given"}


def test_a_plan_numbers_its_shards_after_the_ledger_and_keeps_seed_quotas(tiny_set):
    folder, videos = tiny_set
    scans = _scan_all(folder, videos[:2])
    ledger = Ledger(next_shard=7, clips_per_seed={"A": 1})
    plan = plan_run(folder, scans, ledger=ledger, threshold=Threshold(0.6, "given"),
                    clip_seconds=4.0, max_clips_per_seed=2, shard_size=1)  # fmt: skip
    assert [s.index for s in plan.shards] == [7]  # one clip left in A's quota of two
    assert folder.pending_plan(ledger) == plan  # saved, with its threshold: resumable
    done = ledger.with_run(plan, scans, kept_per_seed={"A": 1})
    assert folder.pending_plan(done) is None and done.next_shard == 8
    assert done.clips_per_seed == {"A": 2} and ledger.clips_per_seed == {"A": 1}
    assert Ledger.from_dict(json.loads(json.dumps(done.to_dict()))) == done


def test_seeds_embedded_in_chunks_equal_one_pass(tiny_set, tmp_path):
    folder, _ = tiny_set  # made in one chunk
    seeds = folder.root.parent / "seeds"
    (seeds / "C.jpg").write_bytes(b"not a picture")  # undecodable: a failed row between chunks
    (seeds / "C.txt").write_text("picture C")
    chunked, one = RunFolder(tmp_path / "chunked"), RunFolder(tmp_path / "one")
    embed_seeds(str(seeds), chunked, chunk=1)
    embed_seeds(str(seeds), one, chunk=100)
    np.testing.assert_array_equal(
        np.load(chunked.path("seeds.npy")), np.load(one.path("seeds.npy"))
    )
    a, b = (
        pd.read_parquet(chunked.path("seeds.parquet")),
        pd.read_parquet(one.path("seeds.parquet")),
    )
    pd.testing.assert_frame_equal(a, b)
    assert list(a["row"]) == [0, 1, -1] and list(a["status"]) == ["ok", "ok", "failed"]
    assert not chunked.seed_chunk_dir.exists()  # chunks removed once merged
    assert plan_seeds(chunked, str(seeds), embedder=EMBEDDER, device="cpu").reuse is not None


def test_a_filter_that_raises_fails_the_clip_and_keeps_it_out_of_the_tar(
    tiny_set, tmp_path, monkeypatch
):
    from filters.motion import MotionFilter
    from shards.reader import iter_samples

    def broken(self, record, context):
        raise RuntimeError("no frames today")

    monkeypatch.setattr(MotionFilter, "compute", broken)
    spec = tmp_path / "motion.yaml"
    spec.write_text("filters:\n  - name: motion\n")
    folder, videos = tiny_set
    scans = _scan_all(folder, videos[:1])
    plan = plan_run(folder, scans, ledger=Ledger(), threshold=Threshold(0.6, "given"),
                    clip_seconds=4.0, shard_size=10)  # fmt: skip
    (shard,) = plan.shards
    stage_shard(folder, shard, FilterSetup(str(spec)))
    stats = folder.write_staged(shard)
    assert stats["status"] == {"failed": 1}
    assert stats["filters"]["filters"]["motion"]["errors"] == 1
    row = pd.read_parquet(folder.shard_file(0, ".parquet")).iloc[0]
    assert row["status"] == "failed" and pd.isna(row["reason"])
    assert row["error"] == "filter motion: RuntimeError: no frames today"
    assert list(iter_samples(folder.shard_file(0, ".tar"))) == []  # nothing unjudged in the tar


def test_a_video_whose_shots_cannot_be_read_fails_closed(tiny_set, monkeypatch):
    import miners.scan
    from media import MediaError

    def unreadable(path, start=0.0, end=None, **kw):
        raise MediaError(f"{path}: moov atom not found")

    monkeypatch.setattr(miners.scan, "detect_cuts", unreadable)
    folder, videos = tiny_set
    (scan,) = _scan_all(folder, videos[:1])
    assert scan.status == "failed" and scan.error.startswith("shots: ")
    assert "moov atom not found" in scan.error and scan.candidates == []
