"""What a user sees at the terminal: one line per fatal error, runs that stop on a signal and
resume, and an OUT that is in use or not capmine's refused at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth.planted import make_synthetic_set
from tests.flows.test_incremental import EMBEDDER, dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_synthetic_set(root / "data", n_seeds=6, n_unplanted=1, n_videos=4, seconds=20.0,
                       broken=False)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def env(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))


def _mine(root: Path, out: Path, env: dict, *extra: str, seeds: str | None = None,
          verbose: bool = False):  # fmt: skip
    cmd = [sys.executable, "-m", "flows.cli", *(["--verbose"] if verbose else []), "mine",
           "--seeds", seeds or str(root / "data" / "seeds"),
           "--videos", str(root / "data" / "videos.txt"), "--out", str(out),
           "--embedder", EMBEDDER, "--threshold", "0.6", "--filters", "none",
           "--shard-size", "2", "--clip-seconds", "4", "--device", "cpu", "--no-progress", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_a_bad_seeds_file_is_one_line_with_the_traceback_in_the_log(small, env, tmp_path, kind):
    seeds = tmp_path / "seeds.csv"
    if kind == "garbage":
        seeds.write_bytes(b"\x00\xff\xfe garbage \x01\x02\n\x00,,,\n" * 20)
    rc, err = _finish(_mine(small, tmp_path / "out", env, seeds=str(seeds)))
    lines = err.strip().splitlines()
    assert rc != 0 and lines[-1].startswith("capmine: error:"), err
    assert len(lines) <= 5 and "Traceback" not in err, err
    assert "Traceback" in (tmp_path / "out" / "capmine.log").read_text()
    rc, err = _finish(_mine(small, tmp_path / "out", env, seeds=str(seeds), verbose=True))
    assert rc != 0 and "Traceback" in err and "capmine: error:" in err.strip().splitlines()[-1]


def test_a_second_run_on_a_busy_out_stops_at_once_naming_the_first(small, env, tmp_path):
    out = tmp_path / "out"
    hold = "import sys, time\nfrom runs.lock import claim_out\nwith claim_out(sys.argv[1]):\n" \
           "    print('held', flush=True)\n    time.sleep(120)\n"  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        rc, err = _finish(_mine(small, out, env))
        assert rc == 2 and time.monotonic() - t0 < 30
        assert err.strip().splitlines() == [err.strip()]  # one line
        assert "in use" in err and f"pid {holder.pid}" in err and "started" in err
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_that_is_not_capmines_is_refused_untouched(small, env, tmp_path):
    out = tmp_path / "mine"
    (out / "shards").mkdir(parents=True)
    (out / "report.json").write_text("my report")
    rc, err = _finish(_mine(small, out, env, "--overwrite"))
    assert rc == 2 and "not a capmine output folder" in err
    assert sorted(p.name for p in out.rglob("*")) == ["report.json", "shards"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_quickly_and_a_rerun_finishes_it(small, env, tmp_path, sig):
    clean = tmp_path / "clean"
    rc, err = _finish(_mine(small, clean, env))
    assert rc == 0, err[-2000:]
    out = tmp_path / "stopped"
    proc = _mine(small, out, env)
    deadline = time.monotonic() + 240
    while not list(out.glob("scans/*.json")):  # mid-run: scanning
        assert proc.poll() is None, "the run finished before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    t0 = time.monotonic()
    rc, err = _finish(proc, timeout=30)
    assert time.monotonic() - t0 < 10
    assert rc == 128 + sig, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"capmine: stopped by {sig.name}") and "Traceback" not in err
    rc, err = _finish(_mine(small, out, env))
    assert rc == 0, err[-2000:]
    assert dataset(out) == dataset(clean)
