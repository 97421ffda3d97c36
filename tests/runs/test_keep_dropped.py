"""``--keep-dropped``: dropped clips keep their media in ``OUT/dropped/``, so a re-filter
with looser bounds can bring them back, byte for byte.

One small planted set is mined stage by stage (pixel embedder, no Prefect server) with a
strict chain: the text filter drops the longest captions (before the audio filter scores
them), the per-video cap all but one clip of each video; its shards are written by the
mining flow's own write task.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from filters.registry import FILTERS
from flows.params import MineParams
from miners.videos import read_videos
from runs.folder import RunFolder
from runs.records import Ledger, ShardPlan, Threshold
from runs.refilter import refilter
from runs.stages import FilterSetup, filter_run, plan_run, scan_video_into, stage_shard
from shards.reader import iter_samples
from shards.record import Caption, ClipRecord
from synth.planted import make_synthetic_set
from tests.runs.test_stages import EMBEDDER, embed_seeds
from trainer.inputs import shard_spec

MEDIA = ("mp4", "flac", "jpg")


def _chain(root: Path, name: str, max_words: int, max_per_video: int) -> str:
    spec = root / f"{name}.yaml"
    spec.write_text(f"filters:\n  - name: text\n    max_words: {max_words}\n"
                    "  - name: audio\n    min_rms_db: -90\n"
                    f"  - name: caps\n    max_per_video: {max_per_video}\n")  # fmt: skip
    return str(spec)


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """A run mined with keep_dropped and a strict chain: (run folder, chain root)."""
    from flows.mine import write_shard_task

    root = tmp_path_factory.mktemp("keepdropped")
    data = root / "data"
    make_synthetic_set(data, n_seeds=5, n_unplanted=1, n_videos=2, seconds=24.0,
                       broken=False, width=160, height=90)  # fmt: skip
    folder = RunFolder(root / "out")
    embed_seeds(str(data / "seeds"), folder)
    scans = [scan_video_into(folder, v, embedder=EMBEDDER, device="cpu", threshold=0.6)
             for v in read_videos(data / "videos.txt")]  # fmt: skip
    plan = plan_run(folder, scans, ledger=Ledger(), threshold=Threshold(0.6, "given"),
                    shard_size=3)  # fmt: skip
    strict = _chain(root, "strict", max_words=19, max_per_video=1)
    setup = FilterSetup(strict)
    for shard in plan.shards:
        stage_shard(folder, shard, setup)
    filter_run(folder, plan.shards, setup)
    params = MineParams(seeds=str(data / "seeds"), videos=str(data / "videos.txt"),
                        out=str(folder.root), embedder=EMBEDDER, filters=strict,
                        keep_dropped=True)  # fmt: skip
    for shard in plan.shards:
        write_shard_task.fn(shard, params)
    return folder.root, root


def _rows(run: Path) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((run / "shards").glob("*.parquet")))


def _media(tar: Path) -> dict[str, dict[str, bytes]]:
    return {s["__key__"]: {e: s[e] for e in MEDIA if e in s} for s in iter_samples(tar)}


def _all_media(folder: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted(folder.glob("*.tar")):
        out.update(_media(tar))
    return out


def test_dropped_tars_hold_exactly_the_dropped_clips_with_their_media(mined):
    run, _ = mined
    rows = _rows(run)
    assert set(rows["reason"].dropna()) == {"long_caption", "video_cap"}
    assert (rows["status"] == "ok").sum() >= 1
    for parquet in sorted((run / "shards").glob("*.parquet")):
        side = pd.read_parquet(parquet)
        dropped = side[side["status"] == "dropped"].set_index("key")
        samples = list(iter_samples(run / "dropped" / f"{parquet.stem}.tar"))
        assert sorted(s["__key__"] for s in samples) == sorted(dropped.index)
        for s in samples:
            row = dropped.loc[s["__key__"]]
            assert s["mp4"][4:8] == b"ftyp" and s["jpg"][:2] == b"\xff\xd8"
            assert ("flac" in s) == bool(row["has_audio"])
            assert s["txt"] == row["caption"]
            assert s["json"]["reason"] == row["reason"] and s["json"]["key"] == s["__key__"]
        kept = {s["__key__"] for s in iter_samples(parquet.with_suffix(".tar"))}
        assert kept == set(side.loc[side["status"] == "ok", "key"])  # the shard is as before
    assert not any((run / "staging").rglob("*"))  # the staged media went with each shard


def test_looser_bounds_bring_dropped_clips_back_byte_for_byte(mined, monkeypatch):
    run, root = mined
    was = _all_media(run / "dropped")
    kept_before = _all_media(run / "shards")
    calls = []
    compute = FILTERS["audio"].compute
    monkeypatch.setattr(FILTERS["audio"], "compute",
                        lambda self, r, ctx: calls.append(r.key) or compute(self, r, ctx))  # fmt: skip
    loose = root / "loose"
    report = refilter(run, loose, FilterSetup(_chain(root, "loose", 60, 20)))
    rows = _rows(loose)
    assert report["dropped"] == {} and set(rows["status"]) == {"ok"}
    assert len(rows) == len(was) + len(kept_before) and was
    assert _all_media(loose / "shards") == {**kept_before, **was}  # every byte as it was
    assert not (loose / "dropped").exists()  # not asked to keep drops: none to keep
    # stored scores are reused: audio is computed only for the clips the text filter had
    # dropped before it scored them, from the media kept in dropped/
    source = _rows(run).set_index("key")
    assert sorted(calls) == sorted(source.index[source["reason"] == "long_caption"])
    scores = {r["key"]: json.loads(r["scores"]) for _, r in rows.iterrows()}
    for key, stored in source["scores"].items():  # a rank is relative: ranked anew
        stored = {k: v for k, v in json.loads(stored).items() if k != "video_rank"}
        assert stored.items() <= scores[key].items()
    assert all(scores[k]["audio_rms_db"] > -90 for k in calls)


def test_tighter_bounds_still_drop_and_keep_their_own_drops(mined):
    run, root = mined
    out = root / "tighter"
    refilter(run, out, FilterSetup(_chain(root, "tight", 17, 1)), keep_dropped=True)
    rows = _rows(out)
    source = _rows(run).set_index("key")
    assert (rows["status"] == "ok").sum() < (source["status"] == "ok").sum()
    dropped = set(rows.loc[rows["status"] == "dropped", "key"])
    assert dropped > set(source.index[source["status"] == "dropped"])
    assert set(_all_media(out / "dropped")) == dropped
    # a new run's dropped/ is a source too: loosening it brings everything back
    again = refilter(out, root / "again", FilterSetup(_chain(root, "loose2", 60, 20)))
    assert again["clips"]["ok"] == again["clips"]["total"] == len(source)


def test_without_dropped_tars_a_looser_chain_cannot_loosen(mined):
    run, root = mined
    bare = root / "bare"
    shutil.copytree(run, bare)
    shutil.rmtree(bare / "dropped")
    report = refilter(bare, root / "bare-loose", FilterSetup(_chain(root, "loose3", 60, 20)))
    source = _rows(run)
    assert report["clips"]["ok"] == (source["status"] == "ok").sum()
    assert sorted(report["dropped"]) == ["long_caption", "video_cap"]


def test_the_trainer_reads_shards_only(mined):
    run, _ = mined
    listed = shard_spec(str(run / "shards")).split("::")
    assert listed and all(Path(p).parent == run / "shards" for p in listed)
    with pytest.raises(ValueError, match="no complete shard"):
        shard_spec(str(run))  # OUT itself is no shard folder: dropped/ is never reached
    with pytest.raises(ValueError, match="no complete shard"):
        shard_spec(str(run / "dropped"))  # no stats files: never trusted as shards


def test_the_filter_command_takes_keep_dropped():
    from flows.cli import build_parser

    argv = ["filter", "RUN", "--filters", "none", "--out", "NEW"]
    assert build_parser(argv).parse_args(argv).keep_dropped is False
    assert build_parser(argv).parse_args([*argv, "--keep-dropped"]).keep_dropped is True
    mine = ["mine", "--seeds", "s", "--videos", "v", "--out", "o", "--keep-dropped"]
    assert build_parser(mine).parse_args(mine).keep_dropped is True


# ------------------------------------------------------------ writing, killed and cleaned


def _staged(folder: RunFolder) -> ShardPlan:
    """Shard 0 staged: clip 0 kept, clip 1 dropped (with media), clip 2 failed."""
    shard = ShardPlan(0, [f"v-{i}_000000000" for i in range(3)])
    stage = folder.fresh_staging(shard)
    records = []
    for i, status in enumerate(("ok", "dropped", "failed")):
        mp4 = stage / f"v-{i}_000000000.mp4"
        mp4.write_bytes(b"MP4-%d" % i)
        records.append(ClipRecord(
            key=shard.keys[i], video="v.mp4", video_id="v", start=0.0, end=10.0, match_time=5.0,
            similarity=0.9, captions=[Caption("s", f"caption {i}", 0.9, 5.0)], mp4=str(mp4),
            status=status, reason="silent" if status == "dropped" else None,
        ))  # fmt: skip
    folder.save_staged(shard, records)
    return shard


def test_a_killed_write_leaves_no_complete_shard_without_its_dropped_tar(tmp_path, monkeypatch):
    import runs.folder

    folder = RunFolder(tmp_path / "out")
    shard = _staged(folder)

    def killed(dropped_dir, index, records):
        (Path(dropped_dir) / ".00000.tar.abcd1234.tmp").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.folder, "write_dropped", killed)
    folder.dropped_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        folder.write_staged(shard, keep_dropped=True)
    assert not folder.shard_is_done(shard)  # the shard's stats come after its dropped tar
    assert not folder.shard_file(0, ".tar").exists()
    monkeypatch.undo()
    folder.write_staged(shard, keep_dropped=True)  # the rerun writes both
    assert folder.shard_is_done(shard)
    assert list(_media(folder.dropped_file(0))) == ["v-1_000000000"]  # not the failed one
    assert sorted(p.name for p in folder.dropped_dir.iterdir()) == ["00000.tar"]  # temp gone


def test_start_over_removes_dropped_tars_and_only_them(tmp_path):
    folder = RunFolder(tmp_path / "out")
    shard = _staged(folder)
    folder.write_staged(shard, keep_dropped=True)
    (folder.dropped_dir / "notes.txt").write_text("mine")
    (folder.dropped_dir / ".00001.tar.abcd1234.tmp").write_bytes(b"half")
    folder.start_over()
    assert sorted(p.name for p in folder.dropped_dir.iterdir()) == ["notes.txt"]
    assert not folder.shard_dir.exists()


def test_a_shard_rewritten_without_keep_dropped_loses_its_old_dropped_tar(tmp_path):
    folder = RunFolder(tmp_path / "out")
    shard = _staged(folder)
    folder.write_staged(shard, keep_dropped=True)
    assert folder.dropped_file(0).exists()
    folder.shard_file(0, "_stats.json").unlink()  # this shard written again, as a rerun would
    shard = _staged(folder)
    folder.write_staged(shard)
    assert folder.shard_is_done(shard) and not folder.dropped_file(0).exists()
