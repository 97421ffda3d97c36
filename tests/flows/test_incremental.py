"""Incremental and crash-safe mining: growing lists append, killed runs finish the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.params import MineParams
from synth.planted import make_synthetic_set

EMBEDDER = "miners.embedders:pixel_embedder"


@pytest.fixture(scope="module")
def growing(tmp_path_factory):
    root = tmp_path_factory.mktemp("growing")
    manifest = make_synthetic_set(
        root / "data", n_seeds=6, n_unplanted=1, n_videos=4, seconds=20.0, broken=False
    )
    videos = [line for line in (root / "data" / "videos.txt").read_text().splitlines() if line]
    (root / "first.txt").write_text("\n".join(videos[:2]) + "\n")
    (root / "all.txt").write_text("\n".join(videos) + "\n")
    return root, manifest


def _params(root: Path, videos: str, out: str, **kw) -> MineParams:
    return MineParams(seeds=str(root / "data" / "seeds"), videos=str(root / videos), out=str(root / out),
                      embedder=EMBEDDER, threshold=0.6, filters="none", shard_size=2, clip_seconds=4.0,
                      device="cpu", **kw)  # fmt: skip


def dataset(out: Path) -> list[tuple]:
    """What a trainer would see: every clip row (key, status, caption, span) and tar members."""
    rows = []
    for side in sorted((out / "shards").glob("*.parquet")):
        df = pd.read_parquet(side)
        rows += [(side.stem, r.key, r.status, r.caption, round(r.start, 3), round(r.end, 3))
                 for r in df.itertuples()]  # fmt: skip
    stats = sorted(p.name for p in (out / "shards").glob("*_stats.json"))
    tars = sorted(p.name for p in (out / "shards").glob("*.tar"))
    return [*sorted(rows), tuple(stats), tuple(tars)]


def test_a_longer_list_mines_only_new_videos_and_appends_shards(growing, prefect_harness):
    from flows.mine import run_mine

    root, _ = growing
    first = run_mine(_params(root, "first.txt", "inc"))
    shards_first = sorted((root / "inc" / "shards").glob("*.tar"))
    stamps = {p: p.stat().st_mtime_ns for p in shards_first}
    second = run_mine(_params(root, "all.txt", "inc"))
    assert first["run"] == 0 and second["run"] == 1
    assert second["skipped_videos"] == 2 and second["videos"]["total"] == 2
    new = sorted(set((root / "inc" / "shards").glob("*.tar")) - set(shards_first))
    assert new and min(int(p.stem) for p in new) == first["next_shard"]  # numbered after run 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # earlier shards untouched
    clean = run_mine(_params(root, "all.txt", "clean"))
    inc, ref = dataset(root / "inc"), dataset(root / "clean")
    keys = [r[1] for r in inc[:-2]]
    assert len(keys) == len(set(keys))  # unique across runs
    strip = lambda rows: sorted(r[1:] for r in rows[:-2])  # noqa: E731 - shard numbers may differ
    assert strip(inc) == strip(ref) and clean["run"] == 0
    # --overwrite starts over: one run, shards from 00000
    again = run_mine(_params(root, "all.txt", "inc", overwrite=True))
    assert again["run"] == 0 and strip(dataset(root / "inc")) == strip(ref)


def _cli(root: Path, out: str, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.cli", "mine", "--seeds", str(root / "data" / "seeds"),
           "--videos", str(root / "all.txt"), "--out", str(root / out), "--embedder", EMBEDDER,
           "--threshold", "0.6", "--filters", "none", "--shard-size", "2", "--clip-seconds", "4",
           "--device", "cpu", "--no-progress"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False when it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the run neither reached the kill point nor finished")


def _has(pattern: str, out: Path, check=lambda p: True):
    return lambda: any(check(p) for p in out.glob(pattern))


def test_killed_runs_finish_with_the_clean_dataset(growing, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    root, _ = growing
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())  # share the test server
    clean = _cli(root, "crash-clean", env)
    assert clean.wait(timeout=300) == 0, clean.stderr.read().decode()[-2000:]
    want = dataset(root / "crash-clean")
    points = {
        "first-scan": ("scans/*.json", lambda p: True),
        "planned": ("plan.json", lambda p: "threshold" in p.read_text()),
        "staging": ("staging/*/*.mp4", lambda p: True),
        "first-shard": ("shards/*_stats.json", lambda p: True),
    }
    for name, (pattern, check) in points.items():
        out = root / f"crash-{name}"
        proc = _cli(root, out.name, env)
        assert _kill_when(proc, _has(pattern, out, check)), f"the run finished before {name}"
        rerun = _cli(root, out.name, env)
        assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()[-2000:]
        assert dataset(out) == want, f"killed at {name}"
        assert not list((out / "shards").glob(".*.tmp"))
        report = json.loads((out / "report.json").read_text())
        assert report["next_shard"] == len(want[-1])
