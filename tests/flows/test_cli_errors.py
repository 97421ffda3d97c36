"""What a user sees at the terminal: one line per fatal error, runs that stop on a signal and
resume, and an OUT that is in use or not capmine's refused at once."""

from __future__ import annotations

import json
import os
import re
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
          videos: str | None = None, verbose: bool = False):  # fmt: skip
    cmd = [sys.executable, "-m", "flows.cli", *(["--verbose"] if verbose else []), "mine",
           "--seeds", seeds or str(root / "data" / "seeds"),
           "--videos", videos or str(root / "data" / "videos.txt"), "--out", str(out),
           "--embedder", EMBEDDER, "--threshold", "0.6", "--filters", "none",
           "--shard-size", "2", "--clip-seconds", "4", "--device", "cpu", "--no-progress", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _bad_seeds(path: Path, kind: str) -> str:
    if kind == "garbage":
        path.write_bytes(b"\x00\xff\xfe garbage \x01\x02\n\x00,,,\n" * 20)
    elif kind == "no columns":
        path.write_text("name,size\nfoo.jpg,12\n")
    return str(path)


@pytest.mark.parametrize("kind", ["missing", "garbage", "no columns"])
def test_a_bad_seeds_file_is_one_line_with_the_traceback_in_the_log(small, env, tmp_path, kind):
    seeds = _bad_seeds(tmp_path / "seeds.csv", kind)
    rc, err = _finish(_mine(small, tmp_path / "out", env, seeds=seeds))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("capmine: error:"), err
    assert str(seeds) in err
    if kind == "no columns":
        assert "['name', 'size'] lack an image column" in err
    assert "Traceback" in (tmp_path / "out" / "capmine.log").read_text()
    rc, err = _finish(_mine(small, tmp_path / "out", env, seeds=seeds, verbose=True))
    assert rc == 2 and "Traceback" in err and "capmine: error:" in err.strip().splitlines()[-1]


def test_a_missing_videos_list_is_one_line(small, env, tmp_path):
    videos = tmp_path / "videos.txt"
    rc, err = _finish(_mine(small, tmp_path / "out", env, videos=str(videos)))
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"capmine: error: video list '{videos}' does not exist"), err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--fps", "-1"], "capmine: error: invalid option --fps -1.0: Input should be greater than 0"),
        (["--fps", "often"], "capmine: error: argument --fps: invalid float value: 'often' "
                             "(see: capmine mine --help)"),
        (["--no-such-option"], "capmine: error: unrecognized arguments: --no-such-option "
                               "(see: capmine --help)"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line(small, env, tmp_path, extra, said):
    rc, err = _finish(_mine(small, tmp_path / "out", env, *extra))
    assert rc == 2 and err == said + "\n", err
    assert not (tmp_path / "out").exists()  # refused before OUT is touched


# A bar as the terminal last shows it: "scan: 100%|####| 4/4 [00:03<00:00, 1.21videos/s, ...]"
BARS = {
    "seeds": r"seeds: 100%\|[^|]*\| 6/6 \[[\d:]+<[\d:]+,\s+[\d.]+images/s\]",
    "scan": r"scan: 100%\|[^|]*\| 4/4 \[[\d:]+<[\d:]+,\s+[\d.]+videos/s, [\d.]+ frames/s, 0 failed\]",
    "cut+filter": r"cut\+filter: 100%\|[^|]*\| (\d+)/\1 \[[\d:]+<[\d:]+,\s+[\d.]+clips/s\]",
    "write": r"write: 100%\|[^|]*\| (\d+)/\1 \[[\d:]+<[\d:]+,\s+[\d.]+shards/s\]",
}  # fmt: skip


def test_progress_shows_a_bar_with_a_rate_for_each_stage(small, env, tmp_path):
    rc, err = _finish(_mine(small, tmp_path / "out", env, "--progress"))
    assert rc == 0, err[-2000:]
    shown = err.replace("\r", "\n")
    for stage, bar in BARS.items():
        assert re.search(bar, shown), f"no {stage} bar in:\n{shown[-3000:]}"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert re.search(rf"write: 100%\|[^|]*\| {report['shards']}/{report['shards']} ", shown)
    assert "Task run 'scan-" not in err  # the bars count the tasks; the log file names them
    assert (
        "INFO prefect.task_runs: Finished in state Completed()"
        in (tmp_path / "out" / "capmine.log").read_text()
    )


def test_quiet_leaves_the_summary_and_logs_everything_to_the_file(small, env, tmp_path):
    cmd = _mine(small, tmp_path / "out", env, "--quiet")
    out, err = cmd.communicate(timeout=300)
    assert cmd.returncode == 0 and err == "", err
    assert out.startswith("capmine: ") and " clips in " in out.splitlines()[0], out
    log = (tmp_path / "out" / "capmine.log").read_text()
    assert "INFO prefect.flow_runs: scanned 4/4 videos (0 failed)" in log
    assert "Finished in state Completed()" in log
    rc, err = _finish(_mine(small, tmp_path / "bad", env, "--quiet", seeds=str(tmp_path / "x.csv")))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("capmine: error: seeds not found")


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
