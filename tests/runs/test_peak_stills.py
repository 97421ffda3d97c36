"""The stills of the candidates' peaks: written at scan time from the frame the scan
decoded, whole (not the embedder's square), found again by ``RunFolder.peak_still``.

The video is 128x64: a seed picture fills its centre square, and the left
quarter is painted red at level 25 times the second, so a still shows which
second it came from and that it is the whole frame (the square has no red).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miners.videos import VideoInput
from runs.folder import RunFolder
from runs.records import Ledger, Threshold
from runs.stages import FilterSetup, plan_run, scan_video_into, stage_shard
from synth.testmedia import write_image, write_video
from tests.runs.test_stages import EMBEDDER, _picture, embed_seeds

JPEG_TOL = 12  # grey levels a JPEG at quality 90 (and H.264 before it) may move a flat area


def _frame(t: float) -> np.ndarray:
    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, 32:96] = _picture(1) if 2.0 <= t < 5.0 else _picture(2) if 7.0 <= t < 9.0 else 60
    frame[:, :32, 0] = 25 * int(t)
    frame[:, 96:, 2] = 200
    return frame


@pytest.fixture
def scanned(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, k in (("A", 1), ("B", 2), ("C", 3)):
        write_image(seeds / f"{name}.png", _picture(k))
        (seeds / f"{name}.txt").write_text(f"picture {name}")
    path = write_video(tmp_path / "v.mp4", lambda i, t: _frame(t), seconds=10.0, fps=5.0,
                       width=128, height=64, tone_hz=None)  # fmt: skip
    folder = RunFolder(tmp_path / "out")
    embed_seeds(str(seeds), folder)
    video = VideoInput(url=str(path), video_id="v")
    scan = scan_video_into(folder, video, embedder=EMBEDDER, device="cpu", threshold=0.6)
    return folder, video, scan


def test_one_whole_still_per_peak_found_by_its_time(scanned) -> None:
    folder, _, scan = scanned
    assert scan.ok and len(scan.candidates) == 2 and scan.peak_frames == {}
    stills = sorted(folder.peak_dir("v").iterdir())
    assert [p.name for p in stills] == sorted(
        f"{round(c.peak_time * 1000):08d}.jpg" for c in scan.candidates
    )
    for c in scan.candidates:
        path = folder.peak_still("v", c.peak_time)
        assert path is not None and path.parent == folder.peak_dir("v")
        image = np.asarray(Image.open(path).convert("RGB"), dtype=int)
        assert image.shape == (64, 128, 3)  # the whole frame, shorter side at the embedder's 64
        assert abs(image[8:56, 4:28, 0].mean() - 25 * math.floor(c.peak_time)) < JPEG_TOL
        assert abs(image[8:56, 100:124, 2].mean() - 200) < JPEG_TOL
        want = _frame(c.peak_time)[:, 32:96].astype(int)
        assert np.abs(image[:, 40:88] - want[:, 8:56]).mean() < JPEG_TOL
    assert folder.peak_still("v", 0.123) is None
    assert folder.peak_still("v", float("nan")) is None
    assert folder.peak_still("other", scan.candidates[0].peak_time) is None


def test_a_rescan_replaces_the_stills_and_clean_ups_know_them(scanned) -> None:
    folder, video, scan = scanned
    stale = folder.peak_dir("v") / "99999999.jpg"
    stale.write_bytes(b"from an earlier scan")
    mine = folder.peak_dir("v") / "notes.txt"  # not a name capmine makes
    mine.write_text("the user's")
    again = scan_video_into(folder, video, embedder=EMBEDDER, device="cpu", threshold=0.61)
    assert not stale.exists() and mine.exists()
    assert all(folder.peak_still("v", c.peak_time) for c in again.candidates)
    nothing = scan_video_into(folder, video, embedder=EMBEDDER, device="cpu", threshold=2.0)
    assert nothing.ok and not nothing.candidates
    assert sorted(p.name for p in folder.peak_dir("v").iterdir()) == ["notes.txt"]
    scan_video_into(folder, video, embedder=EMBEDDER, device="cpu", threshold=0.6)
    assert len(list(folder.peak_dir("v").glob("*.jpg"))) == 2
    (folder.peak_dir("v") / ".00002000.jpg.abcd1234.tmp").write_bytes(b"killed mid-write")
    folder.start_over()
    assert not folder.scan_file("v").exists()
    assert sorted(p.name for p in folder.peak_dir("v").iterdir()) == ["notes.txt"]
    mine.unlink()
    folder.start_over()
    assert not folder.peak_dir("v").exists()


def test_names_are_whole_milliseconds() -> None:
    assert RunFolder.peak_name(0.0) == "00000000.jpg"
    assert RunFolder.peak_name(12.3456) == "00012346.jpg"
    assert RunFolder.peak_name(100_000.0) == "100000000.jpg"
    assert RunFolder.peak_name(-1.0) is None and RunFolder.peak_name(float("nan")) is None


@pytest.mark.parametrize("cut", ["keyframe", "exact"])
def test_a_copied_clip_s_jpg_is_the_scan_s_still_a_re_encoded_one_its_own_frame(
    tmp_path, cut
) -> None:
    """Key frames every second, so both clips can be copied: a copy decodes nothing and
    takes the scan's still; a re-encoded clip takes the matched frame from its own pass,
    at the clip's size (64x32 here, where the still is the scan's 128x64)."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, k in (("A", 1), ("B", 2)):
        write_image(seeds / f"{name}.png", _picture(k))
        (seeds / f"{name}.txt").write_text(f"picture {name}")
    path = write_video(tmp_path / "v.mp4", lambda i, t: _frame(t), seconds=10.0, fps=5.0,
                       width=128, height=64, gop=5)  # fmt: skip
    folder = RunFolder(tmp_path / "out")
    embed_seeds(str(seeds), folder)
    scan = scan_video_into(folder, VideoInput(url=str(path), video_id="v"), embedder=EMBEDDER,
                           device="cpu", threshold=0.6, clip_seconds=2.0)  # fmt: skip
    plan = plan_run(folder, [scan], ledger=Ledger(), threshold=Threshold(0.6, "given"),
                    clip_seconds=2.0)  # fmt: skip
    height = 64 if cut == "keyframe" else 32  # a copy keeps the source's size
    stage_shard(folder, plan.shards[0], FilterSetup("none"), cut=cut, clip_height=height)
    records, _ = folder.load_staged(plan.shards[0])
    assert len(records) == 2 and all(r.status == "ok" for r in records), records
    for r in records:
        still = folder.peak_still("v", r.match_time)
        jpg = Path(r.jpg).read_bytes()
        if cut == "keyframe":
            assert r.cut == "keyframe" and jpg == still.read_bytes()
        else:
            assert r.cut is None and Image.open(still).size == (128, 64)
            image = np.asarray(Image.open(r.jpg).convert("RGB"), dtype=int)
            assert image.shape == (32, 64, 3)
            assert abs(image[:, :16, 0].mean() - 25 * int(r.match_time)) < JPEG_TOL
