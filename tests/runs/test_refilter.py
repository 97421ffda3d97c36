"""Re-filtering a run from its shards: stored scores reused, media copied, nothing re-encoded."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import webdataset as wds

from filters.registry import FILTERS
from runs.refilter import refilter
from runs.stages import FilterSetup
from shards.record import Caption, ClipRecord
from shards.writer import write_shard


def _run(tmp_path, loudness, shards: int = 1):
    """A finished run: clips whose audio score is given, dealt over ``shards`` shards; the
    quietest already dropped."""
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
    for i in range(shards):
        write_shard(run / "shards", i, records[i::shards])
    (run / "seeds.json").write_text(json.dumps({"embedder": "miners.embedders:pixel_embedder"}))
    return run


def _setup(tmp_path, min_rms_db) -> FilterSetup:
    spec = tmp_path / f"f{min_rms_db}.yaml"
    spec.write_text(f"filters:\n  - name: audio\n    min_rms_db: {min_rms_db}\n")
    return FilterSetup(str(spec))


def test_stricter_bounds_drop_more_without_rescoring_or_reencoding(tmp_path, monkeypatch):
    run = _run(tmp_path, [-10.0, -30.0, -45.0, -70.0])
    calls = []
    monkeypatch.setattr(FILTERS["audio"], "compute", lambda self, r, ctx: calls.append(r.key) or {})
    report = refilter(run, tmp_path / "strict", _setup(tmp_path, -35))
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
    report = refilter(run, tmp_path / "loose", _setup(tmp_path, -90))
    side = pd.read_parquet(tmp_path / "loose" / "shards" / "00000.parquet")
    assert list(side["status"]) == ["ok", "dropped"] and side["reason"].iloc[1] == "silent"
    assert report["clips"]["ok"] == 1


def test_refilter_needs_a_finished_run_and_a_new_folder(tmp_path):
    setup = _setup(tmp_path, -35)
    with pytest.raises(ValueError, match="no complete shard"):
        refilter(tmp_path, tmp_path / "x", setup)
    run = _run(tmp_path, [-10.0])
    with pytest.raises(ValueError, match="must differ"):
        refilter(run, run, setup)


def test_a_killed_refilter_resumes_shard_by_shard(tmp_path, monkeypatch):
    """The staging path of a mining run: written shards are kept, the rest are redone."""
    run = _run(tmp_path, [-10.0, -30.0, -45.0, -20.0], shards=2)
    dst = tmp_path / "strict"
    first = refilter(run, dst, _setup(tmp_path, -35))
    done = dst / "shards" / "00000_stats.json"
    stamp = done.stat().st_mtime_ns
    (dst / "shards" / "00001_stats.json").unlink()  # killed before shard 1 was complete
    calls = []
    drop_all = lambda self, scores: calls.append(1) or "silent"  # noqa: E731
    monkeypatch.setattr(FILTERS["audio"], "drop_reason", drop_all)
    again = refilter(run, dst, _setup(tmp_path, -35))
    assert done.stat().st_mtime_ns == stamp  # shard 0 was not touched
    assert len(calls) == 2  # only shard 1's two clips were judged again, and dropped
    assert first["clips"]["ok"] == 3 and again["clips"]["ok"] == 1
    assert not (dst / "staging").exists()


def test_an_unknown_filter_is_an_error_before_any_work(tmp_path):
    run = _run(tmp_path, [-10.0])
    (tmp_path / "typo.yaml").write_text("filters:\n  - name: audoi\n")
    with pytest.raises(ValueError, match="unknown filter 'audoi'"):
        refilter(run, tmp_path / "x", FilterSetup(str(tmp_path / "typo.yaml")))
    assert not (tmp_path / "x").exists()
