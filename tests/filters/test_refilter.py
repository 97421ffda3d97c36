"""Re-filtering a run from its shards: stored scores reused, media copied, nothing re-encoded."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import webdataset as wds

from filters.refilter import refilter
from filters.registry import split_chain
from shards.record import Caption, ClipRecord
from shards.writer import write_shard


def _run(tmp_path, loudness):
    """A finished run: one shard, clips whose audio score is given; the quietest already dropped."""
    media = tmp_path / "media"
    media.mkdir()
    records = []
    for i, db in enumerate(loudness):
        mp4, flac = media / f"c{i}.mp4", media / f"c{i}.flac"
        mp4.write_bytes(b"MP4-%d" % i)
        flac.write_bytes(b"FLAC-%d" % i)
        rec = ClipRecord(
            key=f"v-{i}_000000000", video="v.mp4", video_id="v", start=0.0, end=10.0, match_time=5.0,
            similarity=0.9, captions=[Caption("s", f"caption {i}", 0.9, 5.0)],
            scores={"has_audio": 1.0, "audio_rms_db": db}, mp4=str(mp4), flac=str(flac),
        )  # fmt: skip
        if db < -60:
            rec.status, rec.reason, rec.mp4, rec.flac = "dropped", "silent", None, None
        records.append(rec)
    run = tmp_path / "run"
    write_shard(run / "shards", 0, records)
    (run / "seeds.json").write_text(json.dumps({"embedder": "miners.embedders:pixel_embedder"}))
    return run


def _chain(tmp_path, min_rms_db):
    spec = tmp_path / f"f{min_rms_db}.yaml"
    spec.write_text(f"filters:\n  - name: audio\n    min_rms_db: {min_rms_db}\n")
    return split_chain(str(spec))


def test_stricter_bounds_drop_more_without_rescoring_or_reencoding(tmp_path, monkeypatch):
    run = _run(tmp_path, [-10.0, -30.0, -45.0, -70.0])
    per_clip, run_level = _chain(tmp_path, -35)
    calls = []
    for f in per_clip.filters:
        monkeypatch.setattr(f, "compute", lambda r, ctx, calls=calls: calls.append(r.key) or {})
    report = refilter(run, tmp_path / "strict", per_clip, run_level)
    assert calls == []  # every score was stored: nothing decoded
    assert report["clips"] == {"total": 4, "ok": 2} and report["dropped"] == {"silent": 2}
    side = pd.read_parquet(tmp_path / "strict" / "shards" / "00000.parquet")
    assert list(side["status"]) == ["ok", "ok", "dropped", "dropped"]
    samples = list(
        wds.WebDataset(str(tmp_path / "strict" / "shards" / "00000.tar"), shardshuffle=False)
    )
    assert [s["mp4"] for s in samples] == [b"MP4-0", b"MP4-1"]  # bytes copied, not re-encoded
    assert (tmp_path / "strict" / "seeds.json").exists()
    assert (tmp_path / "strict" / "shards" / "00000_stats.json").exists()


def test_looser_bounds_cannot_bring_back_media_that_was_never_written(tmp_path):
    run = _run(tmp_path, [-10.0, -70.0])
    per_clip, run_level = _chain(tmp_path, -90)
    report = refilter(run, tmp_path / "loose", per_clip, run_level)
    side = pd.read_parquet(tmp_path / "loose" / "shards" / "00000.parquet")
    assert list(side["status"]) == ["ok", "dropped"] and side["reason"].iloc[1] == "silent"
    assert report["clips"]["ok"] == 1


def test_refilter_needs_a_finished_run_and_a_new_folder(tmp_path):
    per_clip, run_level = _chain(tmp_path, -35)
    with pytest.raises(ValueError, match="no complete shard"):
        refilter(tmp_path, tmp_path / "x", per_clip, run_level)
    run = _run(tmp_path, [-10.0])
    with pytest.raises(ValueError, match="must differ"):
        refilter(run, run, per_clip, run_level)
