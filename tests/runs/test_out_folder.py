"""OUT belongs to one run at a time and to capmine alone; its outputs honour the umask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miners.scan import ScanResult
from runs.folder import RunFolder
from runs.lock import LOCK, MARKER, OutFolderError, claim_out
from runs.records import ShardPlan
from shards.record import Caption, ClipRecord
from shards.writer import atomic_write_bytes, atomic_write_json, write_shard

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- the lock

HOLD = """
import sys, time
from runs.lock import claim_out
with claim_out(sys.argv[1], "mine"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        with pytest.raises(OutFolderError) as err, claim_out(out):
            pass
        assert f"pid {proc.pid}" in str(err.value) and "started" in str(err.value)
        holder = json.loads((out / LOCK).read_text())
        assert holder["pid"] == proc.pid and holder["command"] == "mine"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_dead_runs_lock_is_taken_over(tmp_path, sig):
    out = tmp_path / "out"
    proc = _holder(out)
    proc.send_signal(sig)
    proc.wait()
    with claim_out(out) as root:  # the kernel dropped the flock with the process
        assert json.loads((root / LOCK).read_text())["pid"] == os.getpid()


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    out = tmp_path / "out"
    with claim_out(out), claim_out(out):  # the CLI, then the flow it runs
        assert (out / MARKER).is_file()
    proc = _holder(out)  # released: another process may take it
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------- ownership


def test_a_folder_that_is_not_capmines_is_refused_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.json").write_text("my report")
    (out / "shards").mkdir()
    (out / "shards" / "00000.tar").write_text("my tar")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(OutFolderError, match="not a capmine output folder"), claim_out(out):
        pass
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / "report.json").read_text() == "my report"


def test_an_empty_folder_is_taken_and_an_old_capmine_run_adopted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with claim_out(empty):
        pass
    assert (empty / MARKER).is_file()
    old = tmp_path / "old"
    old.mkdir()
    (old / "runs.json").write_text(json.dumps({"runs": []}))
    (old / "notes.txt").write_text("a user's note beside an old run")
    with claim_out(old):
        pass
    assert (old / MARKER).is_file() and (old / "notes.txt").exists()


def test_a_symlinked_subfolder_is_refused_with_a_clear_error(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "00000.tar").write_text("somebody's")
    out = tmp_path / "out"
    with claim_out(out):
        pass
    (out / "shards").symlink_to(elsewhere)
    with pytest.raises(OutFolderError, match="symbolic link"), claim_out(out):
        pass
    with pytest.raises(OutFolderError, match="symbolic link"):
        RunFolder(out).start_over()  # --overwrite: no OSError, nothing deleted
    assert (elsewhere / "00000.tar").exists()


# ---------------------------------------------------------------- clean-ups


def _owned(tmp_path) -> RunFolder:
    out = tmp_path / "out"
    with claim_out(out):
        pass
    return RunFolder(out)


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_clean_ups_delete_only_capmines_files(tmp_path):
    folder = _owned(tmp_path)
    out = folder.root
    users = [
        _touch(out / "seed_chunks" / "mine.npz"),
        _touch(out / "staging" / "00000" / "important.txt"),
        _touch(out / "staging" / "notes.txt"),
        _touch(out / "shards" / ".00000-mine.tmp"),
        _touch(out / "shards" / "my_webdataset-000.tar"),
        _touch(out / "scans" / "receipt.pdf"),
        _touch(out / "my_plan.json"),
    ]
    capmines = [
        _touch(folder.seed_chunk("0123456789abcdef", 0)),
        _touch(out / "seed_chunks" / ".0123456789ab-0000000000.npz.k2j_x9ab.tmp"),
        _touch(out / "staging" / "00000" / "v-1_000000000.mp4"),
        _touch(out / "staging" / "00000" / ".v-1_000000000.mp4.0a1b2c3d.part"),
        _touch(out / "staging" / "00000" / "records.json"),
        _touch(out / "shards" / ".00000.tar.abc_123.tmp"),
        _touch(out / "shards" / "00001.tar"),
        _touch(out / "shards" / "00001.parquet"),
        _touch(out / "shards" / "00001_stats.json"),
        _touch(out / "scans" / "v-0123456789.json"),
        _touch(out / "plan.json"),
        _touch(out / "runs.json"),
        _touch(out / "report.json"),
    ]
    folder.clear_seed_chunks()
    shard = ShardPlan(0, [])
    assert folder.fresh_staging(shard).is_dir()
    assert not (out / "staging" / "00000" / "v-1_000000000.mp4").exists()
    folder.save_staged(shard, [])
    folder.write_staged(shard)  # clears the shard's temp files and its staging
    folder.start_over()
    assert [p for p in capmines if p.exists()] == []
    assert [p for p in users if not p.exists()] == []
    assert (out / MARKER).exists()  # the folder stays capmine's


def test_downloads_outside_the_cache_are_never_deleted(tmp_path):
    folder = _owned(tmp_path)
    cache = _touch(folder.downloads / "v.mp4")
    outside = _touch(tmp_path / "precious.mp4")
    link_target = _touch(tmp_path / "linked.mp4")
    (folder.downloads / "link.mp4").symlink_to(link_target)
    scans = [
        ScanResult(video=str(p), video_id=f"v{i}", local_path=str(p), downloaded=True)
        for i, p in enumerate([cache, outside, folder.downloads / "link.mp4",
                               folder.downloads / ".." / ".." / "precious.mp4"])
    ]  # fmt: skip
    assert folder.remove_downloads(scans) == 1
    assert not cache.exists() and outside.exists() and link_target.exists()
    other = _touch(tmp_path / "cache" / "w.mp4")  # --cache-dir
    scan = ScanResult(video="w", video_id="w", local_path=str(other), downloaded=True)
    assert folder.remove_downloads([scan]) == 0 and other.exists()
    assert folder.remove_downloads([scan], cache_dir=tmp_path / "cache") == 1


# ---------------------------------------------------------------- permissions


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_outputs_honour_the_umask(tmp_path, umask022):
    atomic_write_json(tmp_path / "runs.json", {})
    assert _mode(tmp_path / "runs.json") == 0o644
    mp4 = _touch(tmp_path / "c.mp4")
    rec = ClipRecord(key="v-0_000000000", video="v.mp4", video_id="v", start=0.0, end=1.0,
                     match_time=0.5, similarity=0.9, captions=[Caption("s", "c", 0.9, 0.5)],
                     mp4=str(mp4))  # fmt: skip
    write_shard(tmp_path / "shards", 0, [rec])
    modes = {p.name: _mode(p) for p in (tmp_path / "shards").iterdir()}
    assert modes == {"00000.tar": 0o644, "00000.parquet": 0o644, "00000_stats.json": 0o644}
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "private.bin", b"x")
    assert _mode(tmp_path / "private.bin") == 0o600


def test_claiming_does_not_wait(tmp_path):
    out = tmp_path / "out"
    proc = _holder(out)
    try:
        t0 = time.monotonic()
        with pytest.raises(OutFolderError), claim_out(out):
            pass
        assert time.monotonic() - t0 < 1.0
    finally:
        proc.kill()
        proc.wait()
