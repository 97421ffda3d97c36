"""Defaults that depend on the machine: videos scanned at once and their decoder threads."""

from __future__ import annotations

import pytest

import flows.params
from flows.mine import _decode_threads
from flows.params import MineParams

BASE = {"seeds": "s.tsv", "videos": "v.txt", "out": "out"}


@pytest.mark.parametrize(("cores", "want"), [(1, 2), (2, 2), (16, 16)])
def test_a_video_is_scanned_a_core_at_least_two(monkeypatch, cores, want) -> None:
    monkeypatch.setattr(flows.params, "default_threads", lambda n: cores // n)
    assert MineParams(**BASE).scan_workers == want
    assert MineParams(**BASE, scan_workers=3).scan_workers == 3  # given wins


def test_decoder_threads_share_the_cores_unless_given(monkeypatch) -> None:
    import flows.threads

    monkeypatch.setattr(flows.threads, "default_threads", lambda n: max(1, 16 // n))
    assert _decode_threads(MineParams(**BASE, scan_workers=16)) == 1
    assert _decode_threads(MineParams(**BASE, scan_workers=4)) == 4
    assert _decode_threads(MineParams(**BASE, scan_workers=4, threads=2)) == 2
    assert _decode_threads(MineParams(**BASE, scan_workers=4, threads=2, decode_threads=3)) == 3


def test_decoder_threads_reach_ffmpeg(tmp_path, monkeypatch) -> None:
    import miners.frames
    from miners.videos import VideoInput
    from runs.folder import RunFolder
    from runs.stages import scan_video_into
    from synth.testmedia import write_image, write_video
    from tests.runs.test_stages import EMBEDDER, _picture, embed_seeds

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    write_image(seeds / "A.png", _picture(1))
    (seeds / "A.txt").write_text("picture A")
    video = write_video(tmp_path / "v.mp4", lambda i, t: _picture(1), seconds=2.0,
                        width=64, height=64, tone_hz=None)  # fmt: skip
    folder = RunFolder(tmp_path / "out")
    embed_seeds(str(seeds), folder)
    commands = []
    real = miners.frames._sampling_command

    def spy(*args, **kwargs):
        commands.append(real(*args, **kwargs))
        return commands[-1]

    monkeypatch.setattr(miners.frames, "_sampling_command", spy)
    scan = scan_video_into(folder, VideoInput(url=str(video), video_id="v"), embedder=EMBEDDER,
                           device="cpu", threshold=0.6, decode_threads=3)  # fmt: skip
    assert scan.ok and scan.n_frames == 2
    (cmd,) = commands
    assert cmd[cmd.index("-threads") + 1] == "3" and cmd.index("-threads") < cmd.index("-i")
