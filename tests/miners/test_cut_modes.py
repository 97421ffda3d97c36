"""Cut modes: keyframe copies start at a true key frame inside the shot, auto falls back
to the exact cut, audio stays in sync, and the jpg comes without a second seek.

The source paints its frame number into the pixels (eight black or white
stripes, one bit each) and its audio is silence with clicks at known frames,
so a test reads *which* frame a clip starts with and *when* its sound happens.
It is H.264 with B-frames (decode order differs from display order) and a key
frame every 2 s.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media.keyframes import CopyRefused, Packet, plan_copy
from miners.cut import cut_clip, cut_records, shot_of
from miners.fetch import SourceCache
from miners.frames import frame_at
from miners.matching import Candidate
from miners.scan import ScanResult
from shards.record import STATUS_FAILED, STATUS_OK, ClipRecord

W, H, FPS, SECONDS, GOP = 64, 48, 10, 20, 20  # a key frame every 2 s
CLICKS = (55, 123)  # frames whose instant carries a click
RATE = 16000


def _paint(i: int) -> np.ndarray:
    frame = np.zeros((H, W, 3), np.uint8)
    for bit in range(8):
        if (i >> bit) & 1:
            frame[:, bit * 8 : (bit + 1) * 8] = 255
    return frame


def _write_source(path: Path, *, codec: list[str] | None = None) -> Path:
    """The painted, clicking source; ``codec`` replaces H.264 with B-frames."""
    raw = b"".join(_paint(i).tobytes() for i in range(SECONDS * FPS))
    audio = np.zeros(SECONDS * 48000, np.float32)
    for frame in CLICKS:
        at = frame * 48000 // FPS
        audio[at : at + 48] = 0.9
    wav = path.with_suffix(".f32")
    wav.write_bytes(audio.tobytes())
    video = codec or ["-c:v", "libx264", "-preset", "medium", "-bf", "3", "-g", str(GOP),
                      "-keyint_min", str(GOP), "-sc_threshold", "0", "-crf", "18"]  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{W}x{H}", "-r", str(FPS), "-i", "pipe:0",
         "-f", "f32le", "-ar", "48000", "-ac", "1", "-i", str(wav),
         *video, "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", str(path)],
        input=raw, check=True, capture_output=True,
    )  # fmt: skip
    return path


def _painted(path: Path) -> list[int]:
    """The frame number painted in every decoded frame of ``path``."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "gray", "pipe:"], capture_output=True, check=True).stdout  # fmt: skip
    frames = np.frombuffer(raw, np.uint8).reshape(-1, H, W)
    return [sum(int(f[:, b * 8 : (b + 1) * 8].mean() > 128) << b for b in range(8)) for f in frames]


def _click_times(path: Path) -> list[float]:
    """Seconds into ``path``'s audio at which each click starts."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
                          "-ar", str(RATE), "pipe:"], capture_output=True, check=True).stdout  # fmt: skip
    loud = np.flatnonzero(np.abs(np.frombuffer(raw, np.float32)) > 0.3)
    starts = [i for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > RATE // 10]
    return [i / RATE for i in starts]


def _probe(path: Path, entries: str, *extra: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", *extra, "-show_entries", entries, "-of",
                          "json", str(path)], capture_output=True, check=True).stdout  # fmt: skip
    return json.loads(out)


def _key_frames(path: Path) -> list[float]:
    """Key frame times by ffprobe's own account (every packet flagged K)."""
    data = _probe(path, "packet=pts_time,flags", "-select_streams", "v:0")
    return [round(float(p["pts_time"]), 6) for p in data["packets"] if "K" in p["flags"]]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_source(tmp_path_factory.mktemp("modes") / "painted.mp4")


def _cut(src: Path, out: Path, start: float, end: float, **kw):
    kw.setdefault("match_time", 6.0)
    kw.setdefault("has_audio", True)
    return cut_clip(src, start, end, out, kw.pop("key", "k"), **kw)


def test_source_is_what_the_tests_assume(src: Path) -> None:
    assert _key_frames(src) == [float(t) for t in range(0, SECONDS, GOP // FPS)]
    assert (
        _probe(src, "stream=has_b_frames", "-select_streams", "v:0")["streams"][0]["has_b_frames"]
        > 0
    )
    assert _painted(src)[:3] == [0, 1, 2]


def test_keyframe_starts_at_the_key_frame_and_keeps_sync(src: Path, tmp_path: Path) -> None:
    res = _cut(src, tmp_path, 4.3, 10.3, mode="keyframe", shot=(3.0, 15.0))
    assert res.cut == "keyframe"
    assert res.start in _key_frames(src) and abs(res.start - 4.3) <= 1.0
    assert (res.start, res.end) == (4.0, 10.0)  # the planned length from the key frame
    (video,) = _probe(res.mp4, "stream=codec_name,width,height,duration", "-select_streams", "v")[
        "streams"
    ]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", W, H)
    assert float(video["duration"]) == pytest.approx(res.end - res.start, abs=1e-3)
    painted = _painted(res.mp4)
    assert painted == list(range(40, 100))  # every frame of [4.0, 10.0), no more, no gap
    # the click at frame 55 (5.5 s) is 1.5 s in, in the mp4's sound and in the flac
    for audio in (res.mp4, res.flac):
        (click,) = _click_times(audio)
        assert click == pytest.approx(5.5 - res.start, abs=0.01)
    assert painted[round((5.5 - res.start) * FPS)] == 55
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.flac", "k.jpg", "k.mp4"]
    jpg = np.asarray(Image.open(res.jpg).convert("RGB"))
    assert np.abs(jpg.astype(int) - _paint(60)).mean() < 8  # the match at 6.0 s is frame 60


def test_keyframe_ends_where_b_frames_allow_without_a_gap(src: Path, tmp_path: Path) -> None:
    """The end 9.35 s falls mid-GOP: the copy keeps a gapless prefix, never a frame at or after it."""
    res = _cut(src, tmp_path, 4.3, 9.65, mode="keyframe", shot=(0.0, 9.35))
    painted = _painted(res.mp4)
    assert painted[0] == 40 and painted == list(range(40, 40 + len(painted)))
    assert painted[-1] <= 93  # 9.3 s starts before the end; 9.4 s does not
    assert res.end == pytest.approx((painted[-1] + 1) / FPS, abs=1e-6)
    assert res.end > 9.35 - 0.4  # B-frames cost at most a few frames
    for audio in (res.mp4, res.flac):
        assert _duration(audio) == pytest.approx(res.end - res.start, abs=0.03)


def _duration(path: Path) -> float:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
                          "-ar", str(RATE), "pipe:"], capture_output=True, check=True).stdout  # fmt: skip
    return len(raw) / 4 / RATE


@pytest.mark.parametrize(
    ("start", "shot", "slack", "match", "why"),
    [
        (5.0, (0.0, 20.0), 0.5, 6.0, "no key frame within 0.5 s of 5.000 s inside the shot"),
        (4.3, (4.2, 15.0), 1.0, 6.0, "no key frame within 1 s of 4.300 s inside the shot"),
        (5.2, (0.0, 20.0), 1.0, 5.5, "comes after the match at 5.500 s"),
    ],
)
def test_keyframe_refuses_and_auto_reencodes(
    src: Path, tmp_path: Path, start: float, shot, slack: float, match: float, why: str
) -> None:
    """A key frame beyond the slack, outside the shot or after the match: keyframe fails
    the clip (leaving nothing), auto cuts it exactly where it was planned."""
    with pytest.raises(CopyRefused, match=why):
        _cut(src, tmp_path, start, start + 3.0, mode="keyframe", shot=shot,
             keyframe_slack=slack, match_time=match)  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    res = _cut(src, tmp_path, start, start + 3.0, mode="auto", shot=shot,
               keyframe_slack=slack, match_time=match)  # fmt: skip
    assert (res.cut, res.start, res.end) == ("exact", start, start + 3.0)
    painted = _painted(res.mp4)
    assert painted == list(range(round(start * FPS), round(start * FPS) + 30))
    (video,) = _probe(res.mp4, "stream=codec_name", "-select_streams", "v")["streams"]
    assert video["codec_name"] == "h264"


def test_other_codec_or_too_tall_is_reencoded(src: Path, tmp_path: Path) -> None:
    mpeg4 = _write_source(tmp_path / "mpeg4.mp4", codec=["-c:v", "mpeg4", "-q:v", "2", "-g", "20"])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CopyRefused, match="needs H.264 video.*mpeg4"):
        _cut(mpeg4, out, 4.3, 7.3, mode="keyframe")
    res = _cut(mpeg4, out, 4.3, 7.3, mode="auto")
    assert (res.cut, res.start) == ("exact", 4.3)
    assert _painted(res.mp4)[0] == 43
    with pytest.raises(CopyRefused, match="over 32 px"):
        _cut(src, out, 4.3, 7.3, mode="keyframe", height=32, key="tall")
    res = _cut(src, out, 4.3, 7.3, mode="auto", height=32, key="tall")
    (video,) = _probe(res.mp4, "stream=width,height", "-select_streams", "v")["streams"]
    assert (res.cut, video["height"], video["width"]) == ("exact", 32, 42)


def test_exact_jpg_from_the_same_pass_is_the_frame_at_frame(src: Path, tmp_path: Path) -> None:
    res = _cut(src, tmp_path, 4.3, 10.3, match_time=7.2)
    assert res.cut == "exact"
    old = tmp_path / "old.jpg"
    Image.fromarray(frame_at(src, 7.2, height=360)).save(old, format="JPEG", quality=90)
    got, want = (np.asarray(Image.open(p).convert("RGB")).astype(int) for p in (res.jpg, old))
    assert np.abs(got - want).mean() < 1.0
    assert np.abs(got - _paint(72)).mean() < 8


def test_a_copied_clip_takes_the_given_still_a_re_encoded_one_its_own_frame(
    src: Path, tmp_path: Path
) -> None:
    still = tmp_path / "still.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(still, quality=75)
    out = tmp_path / "out"
    out.mkdir()
    copied = _cut(src, out, 4.3, 10.3, mode="keyframe", still=still, key="copied")
    assert copied.jpg.read_bytes() == still.read_bytes()
    # re-encoding decodes the window anyway: its jpg is the matched frame at the clip's size
    exact = _cut(src, out, 4.3, 10.3, match_time=7.2, mode="exact", still=still, key="exact")
    got = np.asarray(Image.open(exact.jpg).convert("RGB")).astype(int)
    assert got.shape == (H, W, 3)
    assert np.abs(got - _paint(72)).mean() < 8


def test_a_failure_after_the_copy_leaves_nothing(src: Path, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        _cut(src, tmp_path, 4.3, 10.3, mode="keyframe", still=tmp_path / "missing.jpg")
    assert list(tmp_path.iterdir()) == []


def test_unknown_mode(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cut mode"):
        _cut(src, tmp_path, 4.3, 10.3, mode="fast")


# ---------------------------------------------------------------- the plan, from packets


def _packets(order: list[int], keys: set[int], fps: float = 10.0) -> list[Packet]:
    """Packets in decode order ``order`` (display indices); dts run in decode order,
    two frames early as a muxer with B-frames writes them."""
    return [
        Packet(pts=i / fps, dts=(n - 2) / fps, duration=1 / fps, key=i in keys)
        for n, i in enumerate(order)
    ]


def test_plan_leaves_out_an_open_gop_key_frame() -> None:
    # frame 10 is a key frame whose B-frames 8 and 9 are decoded after it (open GOP)
    packets = _packets([0, 3, 1, 2, 6, 4, 5, 7, 10, 8, 9, 13, 11, 12, 14, 15], {0, 10})
    with pytest.raises(CopyRefused, match="shown before it"):
        plan_copy(packets, start=1.0, length=0.4, shot=(0.0, 2.0), slack=0.2, match_time=1.1)


def test_plan_prefix_has_no_gap_and_no_late_frame() -> None:
    packets = _packets([0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 10], {0, 10})
    plan = plan_copy(packets, start=0.0, length=0.75, shot=(0.0, 5.0), slack=0.5, match_time=0.2)
    # frame 7 starts before 0.75 s but needs frame 9 (after the end): the copy stops at 6
    assert (plan.start, plan.end) == (0.0, 0.7)
    # the decode-time limit keeps the 7 packets up to frame 5 and drops frame 9 (dts 0.5)
    assert packets[6].dts < plan.video_seconds < packets[7].dts


# ---------------------------------------------------------------- records


def _scan(src: Path, shot: tuple[float, float] | None) -> ScanResult:
    cand = Candidate(seed_row=0, video_id="v", peak_time=6.0, similarity=0.9, seg_start=5.0,
                     seg_end=7.0, n_frames=3, shot_start=shot and shot[0],
                     shot_end=shot and shot[1])  # fmt: skip
    return ScanResult(video=str(src), video_id="v", duration=20.0, candidates=[cand],
                      local_path=str(src), source={"has_audio": True})  # fmt: skip


def _record(key: str, start: float) -> ClipRecord:
    return ClipRecord(key=key, video="v.mp4", video_id="v", start=start, end=start + 6.0,
                      match_time=6.0, similarity=0.9)  # fmt: skip


def test_shot_of_finds_the_candidate_shot() -> None:
    scan = _scan(Path("x.mp4"), (3.0, 15.0))
    assert shot_of(_record("a", 4.3), scan) == (3.0, 15.0)
    assert shot_of(_record("a", 2.0), scan) == (2.0, 8.0)  # outside it: the window alone
    assert shot_of(_record("a", 4.3), _scan(Path("x.mp4"), None)) == (0.0, float("inf"))


def test_cut_records_records_the_true_window_and_how(src: Path, tmp_path: Path) -> None:
    cache = SourceCache(tmp_path / "cache")
    scans = {"v": _scan(src, (4.2, 15.0))}
    auto = [_record("a1", 4.3), _record("a2", 6.2)]
    cut_records(auto, tmp_path, scans=scans, sources=cache, mode="auto")
    # 4.0 lies outside the shot: re-encoded as planned; 6.0 is a key frame in it: copied
    assert [(r.status, r.cut, r.start, r.end) for r in auto] == [
        (STATUS_OK, "exact", 4.3, 10.3), (STATUS_OK, "keyframe", 6.0, 12.0),
    ]  # fmt: skip
    assert auto[1].sample_json()["cut"] == "keyframe"
    assert auto[1].row()["start"] == 6.0
    assert ClipRecord.from_row(auto[1].row()).cut == "keyframe"
    kf = [_record("k1", 4.3)]
    cut_records(kf, tmp_path, scans=scans, sources=cache, mode="keyframe")
    assert kf[0].status == STATUS_FAILED
    assert "cut: " in kf[0].error and "no key frame within 1 s of 4.300 s" in kf[0].error
    exact = [_record("e1", 4.3)]
    cut_records(exact, tmp_path, scans=scans, sources=cache)
    assert exact[0].cut is None and "cut" not in exact[0].sample_json()
    assert "cut" not in exact[0].row()


@pytest.mark.parametrize("offset", [1.0, 3.0])  # inside and beyond START_ALLOWANCE
def test_keyframe_times_count_from_the_video_stream_start(
    src: Path, tmp_path: Path, offset: float
) -> None:
    """A file whose video starts ``offset`` seconds into its own clock: video time
    4.0 s is still frame 40, and the copy starts there."""
    late = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy",
                    "-output_ts_offset", str(offset), str(late)], check=True)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    res = _cut(late, out, 4.3, 10.3, mode="keyframe")
    assert (res.start, res.end) == (4.0, 10.0)
    assert _painted(res.mp4)[:2] == [40, 41]
    (click,) = _click_times(res.flac)
    assert click == pytest.approx(5.5 - res.start, abs=0.01)


def test_keyframe_without_sound_writes_no_audio(src: Path, tmp_path: Path) -> None:
    res = _cut(src, tmp_path, 4.3, 10.3, mode="keyframe", has_audio=False)
    assert res.flac is None and res.cut == "keyframe"
    streams = _probe(res.mp4, "stream=codec_type")["streams"]
    assert [s["codec_type"] for s in streams] == ["video"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.jpg", "k.mp4"]


def test_mine_params_cut_options() -> None:
    from pydantic import ValidationError

    from flows.params import MineParams

    base = {"seeds": "s", "videos": "v", "out": "o"}
    params = MineParams(**base)
    assert (params.cut, params.keyframe_slack) == ("exact", 1.0)  # a run changes only when asked
    assert MineParams(**base, cut="auto", keyframe_slack=0.5).cut == "auto"
    for bad in ({"cut": "fast"}, {"keyframe_slack": -1.0}):
        with pytest.raises(ValidationError):
            MineParams(**base, **bad)


# ---------------------------------------------------------------- batches


def _window(key: str, start: float, match: float, video_id: str = "v") -> ClipRecord:
    return ClipRecord(key=key, video=f"{video_id}.mp4", video_id=video_id, start=start,
                      end=start + 4.0, match_time=match, similarity=0.9)  # fmt: skip


def _scan_of(path: Path, video_id: str, shot: tuple[float, float] | None = None) -> ScanResult:
    cands = [Candidate(seed_row=0, video_id=video_id, peak_time=t, similarity=0.9,
                       seg_start=t, seg_end=t, n_frames=1, shot_start=shot and shot[0],
                       shot_end=shot and shot[1]) for t in (3.0, 5.0, 7.0, 9.0, 13.0)]  # fmt: skip
    return ScanResult(video=str(path), video_id=video_id, duration=20.0, candidates=cands,
                      local_path=str(path), source={"has_audio": True})  # fmt: skip


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """How many ffprobe runs the cut made, and how many outputs each ffmpeg run wrote."""
    import miners.cut as cut

    calls: dict[str, list[int]] = {"probes": [], "runs": []}
    probe, run_outputs = cut.probe_with_packets_over, cut._run_outputs

    def probe_spy(path, spans, **kw):
        calls["probes"].append(len(spans))
        return probe(path, spans, **kw)

    def run_spy(outputs, what, timeout):
        calls["runs"].append(len(outputs))
        return run_outputs(outputs, what, timeout)

    monkeypatch.setattr(cut, "probe_with_packets_over", probe_spy)
    monkeypatch.setattr(cut, "_run_outputs", run_spy)
    return calls


def test_a_batch_copies_each_clip_as_a_single_copy_would(
    src: Path, tmp_path: Path, spy: dict[str, list[int]]
) -> None:
    """Several clips of one video, overlapping ones too: one ffprobe, one ffmpeg, and
    each clip's files are those a copy of it alone gives, byte for byte."""
    records = [_window("a", 2.2, 3.0), _window("b", 4.0, 5.0), _window("c", 6.1, 7.0),
               _window("d", 11.8, 13.0)]  # fmt: skip
    out, alone = tmp_path / "batch", tmp_path / "alone"
    out.mkdir(), alone.mkdir()
    scans = {"v": _scan_of(src, "v")}
    cut_records(records, out, scans=scans, sources=SourceCache(tmp_path / "c"),
                mode="keyframe", workers=1)  # fmt: skip
    assert spy == {"probes": [4], "runs": [8]}  # mp4 and flac of four clips in one run
    assert [(r.status, r.cut, r.start, r.end) for r in records] == [
        (STATUS_OK, "keyframe", s, s + 4.0) for s in (2.0, 4.0, 6.0, 12.0)
    ]
    for r in records:
        single = _cut(src, alone, r.start, r.end, key=r.key, mode="keyframe",
                      match_time=r.match_time)  # fmt: skip
        assert (single.start, single.end) == (r.start, r.end)
        for ext in ("mp4", "flac", "jpg"):
            assert Path(getattr(r, ext)).read_bytes() == (alone / f"{r.key}.{ext}").read_bytes()
        frames = _painted(Path(r.mp4))
        assert frames == list(range(round(r.start * FPS), round(r.end * FPS)))
        clicks = [c / FPS - r.start for c in CLICKS if r.start <= c / FPS < r.end]
        assert _click_times(Path(r.flac)) == pytest.approx(clicks, abs=0.01)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_batches_per_video_and_across_workers(
    src: Path, tmp_path: Path, spy: dict[str, list[int]]
) -> None:
    """Clips of two videos, interleaved: one ffprobe each, and the copies split into
    runs that keep both workers busy, never mixing videos."""
    late = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy",
                    "-output_ts_offset", "1.0", str(late)], check=True)  # fmt: skip
    scans = {"v": _scan_of(src, "v"), "w": _scan_of(late, "w")}
    records = [_window("v1", 2.2, 3.0), _window("w1", 4.1, 5.0, "w"), _window("v2", 8.0, 9.0),
               _window("w2", 12.2, 13.0, "w"), _window("v3", 6.1, 7.0),
               _window("v4", 12.0, 13.0)]  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    cut_records(records, out, scans=scans, sources=SourceCache(tmp_path / "c"),
                mode="keyframe", workers=2)  # fmt: skip
    assert sorted(spy["probes"]) == [2, 4]
    # six copies on two workers: three a run; v: 3 + 1 clips, w: 2 (mp4 and flac each)
    assert sorted(spy["runs"]) == [2, 4, 6]
    assert [r.status for r in records] == [STATUS_OK] * 6
    for r in records:
        assert _painted(Path(r.mp4))[:2] == [round(r.start * FPS), round(r.start * FPS) + 1]
        assert r.start in (2.0, 4.0, 6.0, 8.0, 12.0) and r.end == r.start + 4.0


def test_auto_batches_the_copies_and_re_encodes_the_rest(
    src: Path, tmp_path: Path, spy: dict[str, list[int]]
) -> None:
    scans = {"v": _scan_of(src, "v", shot=(4.2, 15.0))}
    # 4.3: its key frame 4.0 lies outside the shot; 6.2 and 12.0 copy from 6.0 and 12.0
    records = [_window("e", 4.3, 5.0), _window("k1", 6.2, 7.0), _window("k2", 12.0, 13.0)]
    cut_records(records, tmp_path, scans=scans, sources=SourceCache(tmp_path / "c"),
                mode="auto", workers=1)  # fmt: skip
    assert [(r.status, r.cut, r.start, r.end) for r in records] == [
        (STATUS_OK, "exact", 4.3, 8.3), (STATUS_OK, "keyframe", 6.0, 10.0),
        (STATUS_OK, "keyframe", 12.0, 16.0),
    ]  # fmt: skip
    assert spy["runs"] == [4]  # the two copies in one run; the exact cut on its own
    assert _painted(Path(records[0].mp4))[0] == 43
    assert _painted(Path(records[2].mp4))[0] == 120
    (click,) = _click_times(Path(records[0].flac))
    assert click == pytest.approx(5.5 - 4.3, abs=0.01)


def test_a_failed_batch_falls_back_to_one_by_one(
    src: Path, tmp_path: Path, spy: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clip's output cannot be written: the batch fails, its clips are cut alone,
    and only that clip fails, with its reason; a window past the end fails alone too."""
    import miners.cut as cut

    monkeypatch.setattr(cut.secrets, "token_hex", lambda n: "deadbeef")
    blocked = tmp_path / ".b.mp4.deadbeef.part"
    blocked.mkdir()
    (blocked / "x").write_bytes(b"")
    records = [_window("a", 2.2, 3.0), _window("b", 6.1, 7.0), _window("c", 12.0, 13.0),
               _window("d", 19.5, 19.6)]  # fmt: skip
    scans = {"v": _scan_of(src, "v")}
    cut_records(records, tmp_path, scans=scans, sources=SourceCache(tmp_path / "c"),
                mode="keyframe", workers=1)  # fmt: skip
    assert [r.status for r in records] == [STATUS_OK, STATUS_FAILED, STATUS_OK, STATUS_FAILED]
    assert records[1].error.startswith("cut: ") and ".b.mp4.deadbeef.part" in records[1].error
    assert "no key frame within 1 s of 19.500 s" in records[3].error
    assert spy["runs"] == [6, 2, 2, 2]  # the batch of three, then each alone
    assert _painted(Path(records[0].mp4))[0] == 20 and _painted(Path(records[2].mp4))[0] == 120
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert left == ["a.flac", "a.jpg", "a.mp4", "c.flac", "c.jpg", "c.mp4"]


def test_a_window_copied_twice_in_a_batch(
    src: Path, tmp_path: Path, spy: dict[str, list[int]]
) -> None:
    """Two clips whose copies are the same packets: written once, both published."""
    records = [_window("a", 6.1, 7.0), _window("b", 5.9, 7.0), _window("c", 12.0, 13.0)]
    cut_records(records, tmp_path, scans={"v": _scan_of(src, "v")},
                sources=SourceCache(tmp_path / "c"), mode="keyframe", workers=1)  # fmt: skip
    assert [(r.status, r.start, r.end) for r in records] == [
        (STATUS_OK, 6.0, 10.0), (STATUS_OK, 6.0, 10.0), (STATUS_OK, 12.0, 16.0),
    ]  # fmt: skip
    assert spy["runs"] == [4]
    for ext in ("mp4", "flac"):
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes()
    assert _painted(Path(records[1].mp4))[:2] == [60, 61]
