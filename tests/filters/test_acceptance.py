"""Acceptance check of the filters (issue 4), on a generated set whose bad clips are known.

Silent, static, cut, duplicated and caption-mismatched clips (four of each, each bad
in one way only) mixed with twenty good ones (see :mod:`synth.clipset`): at least 90 % of the
bad clips must be dropped with the right reason and at least 95 % of the good ones
kept; re-filtering the written run with a stricter YAML drops more, computes no
stored score again and copies the kept media byte for byte.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from filters.registry import split_chain
from media.probe import duration
from runs.refilter import refilter
from runs.stages import FilterSetup
from shards.reader import iter_samples
from synth.clipset import (
    EMBEDDER,
    GOOD_CUTS,
    STRICT,
    acceptance_spec,
    accuracy,
    mine,
    write_run,
)

STRICT_RMS_DB = STRICT["audio"]["min_rms_db"]
STRICT_MOTION = STRICT["motion"]["min_motion"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The set, generated and filtered once: records, specs, the chains, and the run on disk."""
    folder = tmp_path_factory.mktemp("acceptance")
    records, specs, per_clip, run_level = mine(folder)
    write_run(folder / "run", records)
    return SimpleNamespace(
        folder=folder, records=records, specs=specs, per_clip=per_clip, run_level=run_level
    )


def test_bad_clips_are_dropped_with_their_reason_and_good_clips_kept(run):
    acc = accuracy(run.records, run.specs)
    assert acc["counts"] == {"good": 20, "silent": 4, "static": 4, "cut": 4, "duplicate": 4,
                             "mismatch": 4}  # fmt: skip
    assert acc["bad_dropped_right_reason"] >= 0.9, acc
    assert acc["good_kept"] >= 0.95, acc


def test_a_long_matched_shot_is_recut_and_kept(run):
    for key in (f"good{i:02d}" for i in GOOD_CUTS):
        rec = next(r for r in run.records if r.key == key)
        assert rec.status == "ok" and rec.scores["n_cuts"] >= 1, (key, rec.reason, rec.scores)
        assert rec.end - rec.start == pytest.approx(4.5, abs=0.11)  # the 1.5 s shot cut away
        assert duration(rec.mp4) == pytest.approx(4.5, abs=0.15)


def test_each_duplicate_names_the_clip_it_copies(run):
    dedup = next(f for f in run.run_level.filters if f.name == "dedup")
    expected = {k: s.copy_of for k, s in run.specs.items() if s.copy_of}
    assert dedup.duplicate_of == expected


def _tar_media(shard_dir):
    """{key: {ext: bytes}} of the media in every tar of a run."""
    out = {}
    for tar in sorted(shard_dir.glob("*.tar")):
        for sample in iter_samples(tar):
            out[sample["__key__"]] = {e: sample[e] for e in ("mp4", "flac", "jpg") if e in sample}
    return out


def test_stricter_yaml_drops_more_without_rescoring_or_reencoding(run, tmp_path, monkeypatch):
    strict = tmp_path / "strict.yaml"
    spec = acceptance_spec(
        audio={"min_rms_db": STRICT_RMS_DB}, motion={"min_motion": STRICT_MOTION}
    )
    strict.write_text(json.dumps({"filters": spec}))  # JSON is YAML
    calls = []
    for f in split_chain(str(strict))[0].filters:
        if f.name != "text":  # a word count is always recomputed, by design
            monkeypatch.setattr(
                type(f), "compute", lambda self, r, ctx: calls.append((self.name, r.key)) or {}
            )
    setup = FilterSetup(str(strict), embedder=EMBEDDER, device="cpu")
    report = refilter(run.folder / "run", tmp_path / "strict", setup)
    assert calls == []  # every per-clip score was stored by the first run

    before = {r.key: r for r in run.records}
    kept_before = {k for k, r in before.items() if r.status == "ok"}
    expected = {
        k for k in kept_before
        if before[k].scores["audio_rms_db"] >= STRICT_RMS_DB
        and before[k].scores["motion"] >= STRICT_MOTION
    }  # fmt: skip
    side = pd.concat(
        pd.read_parquet(p) for p in sorted((tmp_path / "strict" / "shards").glob("*.parquet"))
    )
    kept_now = set(side.loc[side["status"] == "ok", "key"])
    assert kept_now == expected and len(kept_now) < len(kept_before)
    assert report["clips"]["total"] - report["clips"]["ok"] > len(before) - len(kept_before)
    newly = side[side["key"].isin(kept_before - kept_now)]
    assert set(newly["reason"]) <= {"silent", "static"} and len(newly) > 0

    src, dst = _tar_media(run.folder / "run" / "shards"), _tar_media(tmp_path / "strict" / "shards")
    assert set(dst) == kept_now
    assert all(dst[k] == src[k] for k in kept_now)  # mp4, flac and jpg copied, not re-encoded
