"""Dedup across runs on one OUT: a nightly run drops repeats of earlier nights' kept clips.

The runs are driven stage by stage in this process, as the mine flow drives them
(seeds, scans, plan, stage, run-level filters, write, ledger), on a planted set.
The second run's list adds a re-encode of a first-run video under another name
(its clips repeat the first run's) and a video no run has seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from media.tars import iter_raw_samples
from miners.embedders import PixelEmbedder
from miners.videos import read_videos
from runs.embeddings import MadeWith, StoredVectors, load_earlier
from runs.folder import RunFolder
from runs.refilter import refilter
from runs.report import earlier_clips, finish_run, summary_lines
from runs.stages import (
    FilterSetup,
    filter_run,
    known_threshold,
    plan_run,
    scan_video_into,
    stage_shard,
)
from shards.keys import video_id_for
from synth.planted import make_synthetic_set
from tests.runs.test_stages import EMBEDDER, embed_seeds


def mine(root: Path, out: Path, videos: str, *, stop_after: int | None = None) -> dict:
    """One run of ``videos`` into ``out``, resumed from its plan when one is pending;
    ``stop_after`` shards written, it stops there, as a killed run would."""
    folder = RunFolder(out)
    folder.root.mkdir(parents=True, exist_ok=True)
    embed_seeds(str(root / "data" / "seeds"), folder)
    ledger, listed = folder.ledger(), read_videos(root / videos)
    plan = folder.pending_plan(ledger)
    if plan is None:
        todo = ledger.new_videos(listed)
        threshold = known_threshold(0.6, ledger, todo)
        scans = [scan_video_into(folder, v, embedder=EMBEDDER, device="cpu",
                                 threshold=threshold.value, clip_seconds=4.0) for v in todo]  # fmt: skip
        plan = plan_run(folder, scans, ledger=ledger, threshold=threshold, clip_seconds=4.0,
                        shard_size=1)  # fmt: skip
    scans = folder.scans(plan.videos)
    setup = FilterSetup(str(root / "dedup.yaml"), embedder=EMBEDDER, device="cpu")
    for shard in plan.shards:
        stage_shard(folder, shard, setup, cut_workers=1)
    stats = filter_run(folder, plan.shards, setup)
    for shard in plan.shards[:stop_after]:
        folder.write_staged(shard)
    if stop_after is None:
        finish_run(folder, plan=plan, ledger=ledger, scans=scans, videos=listed, report={})
    return stats


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 1 mined two videos into ``first``; night 2 (``second``, a copy of ``first``)
    added a re-encode of night 1's first video and a new video."""
    root = tmp_path_factory.mktemp("nights")
    make_synthetic_set(root / "data", n_seeds=4, n_unplanted=1, n_videos=3, seconds=14.0,
                       width=160, height=90, broken=False)  # fmt: skip
    videos = [v for v in (root / "data" / "videos.txt").read_text().splitlines() if v]
    again = root / "data" / "again.mp4"  # night 1's first video, re-encoded under another name
    subprocess.run(["ffmpeg", "-v", "error", "-i", videos[0], "-c:v", "libx264", "-crf", "28",
                    "-c:a", "copy", str(again)], check=True)  # fmt: skip
    (root / "night1.txt").write_text("\n".join(videos[:2]) + "\n")
    (root / "night2.txt").write_text("\n".join([*videos, str(again)]) + "\n")
    (root / "dedup.yaml").write_text("filters:\n  - name: dedup\n")
    mine(root, root / "first", "night1.txt")
    shutil.copytree(root / "first", root / "second")
    stats = mine(root, root / "second", "night2.txt")
    return root, videos, str(again), stats


def rows(out: Path) -> pd.DataFrame:
    frames = []
    for side in sorted((out / "shards").glob("*.parquet")):
        frames.append(pd.read_parquet(side).assign(shard=int(side.stem)))
    return pd.concat(frames, ignore_index=True)


def digests(folder: Path, pattern: str = "*") -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob(pattern)}


def written(out: Path) -> dict:
    """The shards as a reader sees them: parquet bytes, tar members, stats but timings (a
    tar's headers and the seconds differ between any two runs)."""
    shards = out / "shards"
    members = {p.name: [(s["__key__"], sorted((k, hashlib.sha256(v).hexdigest())
                         for k, v in s.items() if isinstance(v, bytes)))
                        for s in iter_raw_samples(p)] for p in shards.glob("*.tar")}  # fmt: skip
    stats = {p.name: _untimed(json.loads(p.read_text())) for p in shards.glob("*_stats.json")}
    return {"parquet": digests(shards, "*.parquet"), "tars": members, "stats": stats}


def _untimed(doc):
    if isinstance(doc, dict):
        return {k: _untimed(v) for k, v in doc.items() if k != "seconds"}
    return doc


def test_night_two_drops_repeats_of_night_one_and_keeps_new_clips(nights):
    root, videos, again, stats = nights
    first, second = rows(root / "first"), rows(root / "second")
    new = second[~second["key"].isin(first["key"])]
    repeats = new[new["video_id"] == video_id_for(again)]
    fresh = new[new["video_id"] == video_id_for(videos[2])]
    assert len(repeats) and len(fresh) and min(new["shard"]) > max(first["shard"])
    assert set(repeats["reason"]) == {"duplicate"}
    assert all(json.loads(s)["dup_similarity"] >= 0.95 for s in repeats["scores"])
    of = stats["filters"]["dedup"]["duplicate_of"]
    night1 = first[(first["video_id"] == video_id_for(videos[0])) & (first["status"] == "ok")]
    assert {of[k] for k in repeats["key"]} <= set(night1["key"])  # named by night 1's keys
    # the repeat of a night-1 clip has the same span (same footage, same seed)
    spans = {(r.start, r.end): r.key for r in night1.itertuples()}
    assert all(spans.get((r.start, r.end)) == of[r.key] for r in repeats.itertuples())
    assert (fresh["status"] == "ok").any()  # new footage is kept
    assert stats["filters"]["dedup"]["earlier_clips"] == (first["status"] == "ok").sum()
    assert stats["filters"]["dedup"]["earlier_not_compared"] == 0


def test_night_one_files_are_untouched_and_every_shard_has_its_vectors(nights):
    root, *_ = nights
    for name in ("shards", "embeddings"):
        before, after = digests(root / "first" / name), digests(root / "second" / name)
        before.pop("sizes.json", None)  # the folder's index of sizes grows with each run
        assert before and {k: v for k, v in after.items() if k in before} == before, name
        assert len(after) > len(before), name
    second = rows(root / "second")
    for shard, group in second.groupby("shard"):
        stored = StoredVectors.read(RunFolder(root / "second").embedding_file(shard))
        assert stored.keys == list(group.loc[group["status"] == "ok", "key"])
        assert stored.made.embedder == EMBEDDER and stored.made.frames == 4
        assert np.allclose(np.linalg.norm(stored.vectors, axis=1), 1.0, atol=1e-5)


def _other_frames(folder: RunFolder) -> None:
    """Night 1's vectors made with 8 frames a clip (this dedup uses 4): they do not count."""
    for path in folder.embeddings_dir.glob("*.npz"):
        stored = StoredVectors.read(path)
        made = dataclasses.replace(stored.made, frames=8)
        path.write_bytes(StoredVectors(stored.keys, stored.vectors[:, ::-1], made).to_bytes())


@pytest.mark.parametrize("case", ["missing", "other frames"])
def test_earlier_clips_without_usable_vectors_are_embedded_from_their_shards(nights, case):
    root, _, _, stats = nights
    old = root / f"old-{case.replace(' ', '-')}"
    shutil.copytree(root / "first", old)
    if case == "missing":
        shutil.rmtree(old / "embeddings")  # night 1 ran before capmine stored vectors
    else:
        _other_frames(RunFolder(old))
    again = mine(root, old, "night2.txt")
    assert again["filters"]["dedup"]["duplicate_of"] == stats["filters"]["dedup"]["duplicate_of"]
    assert again["filters"]["dedup"]["earlier_clips"] == stats["filters"]["dedup"]["earlier_clips"]
    assert rows(old).drop(columns="shard").equals(rows(root / "second").drop(columns="shard"))
    # paid once: night 1's vectors are stored now, the same a night-1 run stores
    assert digests(old / "embeddings") == digests(root / "second" / "embeddings")
    folder, made = RunFolder(old), MadeWith(EMBEDDER, stored_made(old), 4)
    earlier = load_earlier(
        folder, folder.earlier_shards(), _no_decoding, made, dim=PixelEmbedder().dim
    )
    assert earlier.not_compared == 0 and len(earlier.keys) == (rows(old)["status"] == "ok").sum()


def stored_made(out: Path) -> str:
    return StoredVectors.read(RunFolder(out).embedding_file(0)).made.fingerprint


def _no_decoding(record):
    raise AssertionError(f"{record.key} was embedded again")


def test_a_killed_night_two_ends_as_a_clean_one(nights):
    root, *_ = nights
    out = root / "killed"
    shutil.copytree(root / "first", out)
    mine(root, out, "night2.txt", stop_after=1)  # killed after its first shard was written
    mine(root, out, "night2.txt")
    assert written(out) == written(root / "second")
    assert digests(out / "embeddings") == digests(root / "second" / "embeddings")
    ledger = json.loads((out / "runs.json").read_text())
    assert [r["run"] for r in ledger["runs"]] == [0, 1]


def test_refilter_never_compares_a_clip_with_itself(nights):
    root, *_ = nights
    report = refilter(root / "second", root / "refiltered",
                      FilterSetup(str(root / "dedup.yaml"), device="cpu"))  # fmt: skip
    before, after = rows(root / "second"), rows(root / "refiltered")
    assert list(after["status"]) == list(before["status"])
    assert report["clips"]["ok"] == (before["status"] == "ok").sum()
    run_stats = json.loads((root / "refiltered" / "shards" / "00000_stats.json").read_text())
    assert run_stats["run_filters"]["filters"]["dedup"]["earlier_clips"] == 0


def test_start_over_removes_the_vectors_and_nothing_else(nights):
    root, *_ = nights
    out = root / "over"
    shutil.copytree(root / "first", out)
    (out / "embeddings" / "notes.txt").write_text("mine")
    (out / "embeddings" / ".00000.npz.abc123.tmp").write_text("a killed write")
    RunFolder(out).start_over()
    assert [p.name for p in (out / "embeddings").iterdir()] == ["notes.txt"]


def test_earlier_clips_whose_media_cannot_be_read_are_counted_not_compared(nights, caplog):
    root, *_ = nights
    folder = RunFolder(root / "first")
    kept = rows(root / "first").query("status == 'ok'")
    bad = kept["key"].iloc[0]

    def embed(record):
        if record.key == bad:
            raise ValueError("cannot decode")
        return np.array([1.0, 0.0], np.float32)

    made = MadeWith(EMBEDDER, "another embedder", 4)  # nothing stored counts: all embedded
    earlier = load_earlier(folder, folder.earlier_shards(), embed, made, dim=2, store=False)
    assert earlier.keys == list(kept["key"].iloc[1:]) and earlier.not_compared == 1
    assert earlier.vectors.shape == (len(kept) - 1, 2)
    assert f"{len(kept) - 1} kept clips of earlier runs" in caplog.text
    assert "1 could not be compared" in caplog.text
    assert StoredVectors.read(folder.embedding_file(0)).made.fingerprint != "another embedder"


def test_the_run_report_counts_the_earlier_clips_compared(nights):
    root, *_ = nights
    first, second = rows(root / "first"), rows(root / "second")
    new_shards = sorted(set(second["shard"]) - set(first["shard"]))
    shard_stats = [json.loads((root / "second" / "shards" / f"{i:05d}_stats.json").read_text())
                   for i in new_shards]  # fmt: skip
    figures = earlier_clips(shard_stats)
    assert figures == {"earlier_clips": {"compared": int((first["status"] == "ok").sum()),
                                         "not_compared": 0}}  # fmt: skip
    report = {"videos": {"ok": 1, "failed": 0, "frames": 1, "matches": 1},
              "clips": {"ok": 1, "failed": 0, "dropped": 1},
              "seeds": {"n_ok": 1, "n_failed": 0}, "threshold": None, "shards": 1,
              "filters": {"dropped": {"duplicate": 1}, **figures}}  # fmt: skip
    compared = figures["earlier_clips"]["compared"]
    assert f"  dedup against earlier runs: {compared} kept clips compared" in summary_lines(
        report, "out"
    )
    first_stats = [
        json.loads(p.read_text()) for p in (root / "first" / "shards").glob("*_stats.json")
    ]
    assert earlier_clips(first_stats)["earlier_clips"]["compared"] == 0  # night 1 had none
