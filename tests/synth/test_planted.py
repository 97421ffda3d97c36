"""The synthetic mining set: its manifest tells the truth about its pixels."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miners.embedders import PixelEmbedder
from synth.planted import main, make_synthetic_set

SMALL = dict(n_seeds=6, n_unplanted=2, n_videos=3, seconds=20.0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, make_synthetic_set(root, **SMALL, seed=3)


def ffprobe(path: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def frame_at(video: str, t: float, size: int = 64) -> np.ndarray:
    """One frame at ``t`` s, scaled and centre-cropped the way the miner samples frames."""
    vf = f"scale={size}:{size}:force_original_aspect_ratio=increase,crop={size}:{size}"
    cmd = ["ffmpeg", "-v", "error", "-ss", str(t), "-i", video, "-frames:v", "1"]
    cmd += ["-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype=np.uint8).reshape(size, size, 3)


def seed_pixels(path: Path, size: int = 64) -> np.ndarray:
    """Shorter side to ``size``, centre crop: the same framing as a sampled frame."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    k = size / min(w, h)
    image = image.resize((max(size, round(w * k)), max(size, round(h * k))), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


@pytest.fixture(scope="module")
def seed_vectors(synth) -> tuple[list[str], np.ndarray]:
    root, m = synth
    ids = [s for s in m["seeds"] if s not in m["broken_seeds"]]
    pixels = np.stack([seed_pixels(root / "seeds" / f"{s}.jpg") for s in ids])
    return ids, PixelEmbedder().embed_images(pixels)


def test_manifest_matches_the_files(synth):
    root, m = synth
    assert json.loads((root / "manifest.json").read_text()) == m
    ids = [f"seed_{i:02d}" for i in range(6)]
    assert sorted(m["seeds"]) == [*ids, "zz_broken"]
    assert m["unplanted"] == ids[4:]
    assert m["broken_seeds"] == ["zz_broken"]
    for sid, caption in m["seeds"].items():
        assert (root / "seeds" / f"{sid}.txt").read_text().strip() == caption
    assert len(set(m["seeds"].values())) == len(m["seeds"]), "captions are unique"
    for sid in ids:
        with Image.open(root / "seeds" / f"{sid}.jpg") as image:
            assert image.format == "JPEG" and image.size in {(256, 256), (320, 240)}
    with pytest.raises(OSError):
        Image.open(root / "seeds" / "zz_broken.jpg").load()

    listed = (root / "videos.txt").read_text().split()
    good = [row["video"] for row in m["videos"]]
    assert sorted(listed) == sorted(good + m["broken_videos"])
    assert all(Path(p).is_absolute() for p in listed)
    names = {Path(p).name: p for p in m["broken_videos"]}
    assert set(names) == {"broken_truncated.mp4", "broken_empty.mp4", "missing.mp4"}
    assert Path(names["broken_truncated.mp4"]).stat().st_size > 0
    assert Path(names["broken_empty.mp4"]).stat().st_size == 0
    assert not Path(names["missing.mp4"]).exists()
    probe = subprocess.run(["ffprobe", "-v", "error", names["broken_truncated.mp4"]])
    assert probe.returncode != 0, "the truncated video must not decode"


def test_planted_intervals_are_sound(synth):
    _, m = synth
    planted = {p["seed_id"] for p in m["planted"]}
    assert planted == {f"seed_{i:02d}" for i in range(4)}, "every planted seed appears"
    assert not planted & set(m["unplanted"])
    pairs = [(p["seed_id"], p["video"]) for p in m["planted"]]
    assert len(pairs) == len(set(pairs)), "a seed is planted at most once per video"
    durations = {
        row["video"]: float(ffprobe(row["video"])["format"]["duration"]) for row in m["videos"]
    }
    for p in m["planted"]:
        assert p["video"] in durations
        assert 5.0 <= p["end"] - p["start"] <= 10.0
        assert 2.0 <= p["start"] and p["end"] <= durations[p["video"]] - 2.0 + 0.1
    for video in durations:
        spans = sorted((p["start"], p["end"]) for p in m["planted"] if p["video"] == video)
        assert 1 <= len(spans) <= 3
        assert all(b[0] - a[1] >= 2.0 for a, b in zip(spans, spans[1:], strict=False))


def test_audio_as_promised(synth):
    _, m = synth
    has_audio = [
        any(s["codec_type"] == "audio" for s in ffprobe(row["video"])["streams"])
        for row in m["videos"]
    ]
    assert has_audio == [row["audio"] for row in m["videos"]]
    assert 1 <= has_audio.count(False) < len(has_audio)
    for row in m["videos"]:
        video = [s for s in ffprobe(row["video"])["streams"] if s["codec_type"] == "video"][0]
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 180)


def test_planted_frames_match_their_seed_best(synth, seed_vectors):
    _, m = synth
    ids, seeds = seed_vectors
    embedder = PixelEmbedder()
    for p in m["planted"]:
        for t in (p["start"] + 0.5, (p["start"] + p["end"]) / 2, p["end"] - 0.5):
            sims = embedder.embed_images(frame_at(p["video"], t)[None])[0] @ seeds.T
            own = sims[ids.index(p["seed_id"])]
            others = np.delete(sims, ids.index(p["seed_id"]))
            assert own > 0.7, (p, t, own)
            assert own > others.max() + 0.2, (p, t, own, others.max())


def test_filler_and_distractors_match_no_seed(synth, seed_vectors):
    _, m = synth
    _, seeds = seed_vectors
    embedder = PixelEmbedder()
    kinds = set()
    for row in m["videos"]:
        for seg in row["segments"]:
            if seg["kind"] == "seed" or seg["end"] - seg["start"] < 1.0:
                continue
            kinds.add(seg["kind"])
            frame = frame_at(row["video"], (seg["start"] + seg["end"]) / 2)
            best = float((embedder.embed_images(frame[None]) @ seeds.T).max())
            assert best < 0.5, (row["video"], seg, best)
    assert "filler" in kinds


def test_same_seed_same_set(synth, tmp_path):
    root, m = synth
    again = make_synthetic_set(tmp_path / "again", **SMALL, seed=3)
    as_text = json.dumps(again).replace(str((tmp_path / "again").resolve()), str(root.resolve()))
    assert json.loads(as_text) == m
    other = make_synthetic_set(tmp_path / "other", **SMALL, seed=4, broken=False)
    assert other["seeds"] != {k: v for k, v in m["seeds"].items() if k != "zz_broken"}
    assert other["broken_videos"] == [] and not (tmp_path / "other/videos/missing.mp4").exists()


def test_rerun_replaces_a_set_but_not_other_folders(tmp_path, capsys):
    args = ["--n-seeds", "2", "--n-unplanted", "1", "--n-videos", "1", "--seconds", "10"]
    main([str(tmp_path / "s"), *args, "--no-broken"])
    assert "1 planted intervals" in capsys.readouterr().out
    main([str(tmp_path / "s"), *args])  # over an earlier set: replaced
    assert (tmp_path / "s/seeds/zz_broken.jpg").exists()
    (tmp_path / "u/seeds").mkdir(parents=True)
    (tmp_path / "u/seeds/mine.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        make_synthetic_set(tmp_path / "u", n_seeds=2, n_unplanted=1, n_videos=1, seconds=10)


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_seeds=3, n_unplanted=3),
        dict(n_videos=0),
        dict(seconds=5.0),
        dict(n_seeds=20, n_unplanted=0, n_videos=2, seconds=20.0),  # 20 plants, room for 4
    ],
)
def test_bad_parameters_raise(tmp_path, kw):
    with pytest.raises(ValueError):
        make_synthetic_set(tmp_path, **kw)
