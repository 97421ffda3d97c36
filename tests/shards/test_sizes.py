"""``sizes.json``: every complete shard's tar and its kept samples, as open_clip's trainer reads it."""

import json

from runs.folder import RunFolder
from runs.refilter import refilter
from shards.reader import iter_samples
from shards.writer import write_shard, write_sizes
from tests.runs.test_refilter import _run, _setup
from tests.shards.test_writer import _record


def _write(tmp_path, index, statuses):
    recs = [_record(tmp_path, index * 10 + i, status=s) for i, s in enumerate(statuses)]
    return write_shard(tmp_path / "shards", index, recs)


def test_sizes_count_each_complete_shards_samples(tmp_path):
    _write(tmp_path, 0, ["ok", "ok", "dropped"])
    _write(tmp_path, 1, ["dropped", "dropped"])  # kept nothing: listed with 0
    _write(tmp_path, 2, ["ok"])
    shard_dir = tmp_path / "shards"
    (shard_dir / "00003.tar").write_bytes(b"")  # no stats: not complete, not listed
    (shard_dir / "notes_stats.json").write_text("{}")  # not a shard of capmine's
    sizes = write_sizes(shard_dir)
    assert sizes == {"00000.tar": 2, "00001.tar": 0, "00002.tar": 1}
    assert json.loads((shard_dir / "sizes.json").read_text()) == sizes
    assert not [p.name for p in shard_dir.iterdir() if p.name.endswith(".tmp")]
    for tar, n in sizes.items():
        assert len(list(iter_samples(shard_dir / tar))) == n
    assert not [p.name for p in shard_dir.iterdir() if p.name.endswith(".tmp")]
    stamp = (shard_dir / "sizes.json").stat().st_mtime_ns
    assert write_sizes(shard_dir) == sizes  # the same sizes: the file is not rewritten
    assert (shard_dir / "sizes.json").stat().st_mtime_ns == stamp
    (shard_dir / "sizes.json").write_text("{broken")
    (shard_dir / ".sizes.json.k1ll3d_x.tmp").write_text("{")  # a killed run's temp
    write_sizes(shard_dir)  # a damaged file is rewritten
    assert json.loads((shard_dir / "sizes.json").read_text()) == sizes
    assert not [p.name for p in shard_dir.iterdir() if p.name.endswith(".tmp")]


def test_sizes_fall_back_to_the_parquet(tmp_path):
    _write(tmp_path, 4, ["ok", "dropped", "ok", "ok"])
    (tmp_path / "shards" / "00004_stats.json").write_text("{not json")
    assert write_sizes(tmp_path / "shards") == {"00004.tar": 3}


def test_sizes_of_a_run_without_shards(tmp_path):
    assert write_sizes(tmp_path / "out" / "shards") == {}
    assert (tmp_path / "out" / "shards" / "sizes.json").read_text().strip() == "{}"


def test_start_over_removes_sizes_and_keeps_a_users_file(tmp_path):
    _write(tmp_path, 0, ["ok"])
    write_sizes(tmp_path / "shards")
    (tmp_path / "shards" / ".sizes.json.abc123_x.tmp").write_text("")  # a killed write's temp
    (tmp_path / "shards" / "my_sizes.json").write_text("{}")
    RunFolder(tmp_path).start_over()
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["my_sizes.json"]


def test_a_refilter_writes_sizes_zeros_when_it_keeps_nothing(tmp_path):
    run = _run(tmp_path, [-10.0, -30.0, -45.0, -70.0], shards=2)
    refilter(run, tmp_path / "some", _setup(tmp_path, -35))
    sizes = json.loads((tmp_path / "some" / "shards" / "sizes.json").read_text())
    assert sizes == {"00000.tar": 1, "00001.tar": 1}
    refilter(run, tmp_path / "none", _setup(tmp_path, 0))
    sizes = json.loads((tmp_path / "none" / "shards" / "sizes.json").read_text())
    assert sizes == {"00000.tar": 0, "00001.tar": 0}
