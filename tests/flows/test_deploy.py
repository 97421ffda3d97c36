"""prefect.yaml end to end: a real Prefect server, a process work pool, a worker.

Only 127.0.0.1 is contacted. The test runs what the README's "Scheduled mining
with Prefect" section tells a user to run: ``prefect server start``, ``prefect
work-pool create``, ``prefect deploy --all`` from the project root, ``prefect
deployment run`` with parameters, and a ``prefect worker start --run-once``
started from elsewhere, so that only the pull step (``CAPMINE_HOME``) finds the
code. The mined set is tiny: one planted seed in one 10 s video (and three broken
videos and a broken seed), mined on a one-worker Dask cluster the deployed flow starts
itself from its parameters. The run's artifacts are read back through the API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from synth.planted import make_synthetic_set

ROOT = Path(__file__).resolve().parents[2]
POOL = "capmine-process"
EMBEDDER = "miners.embedders:pixel_embedder"
DEPLOYMENTS = {
    "mine/mine-adhoc",
    "mine/mine-nightly",
    "train/train",
    "mine-and-train/mine-and-train",
}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect_env(home: Path, api_url: str) -> dict[str, str]:
    """The test's environment minus any PREFECT_* setting (the session harness's included), plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        # The test checks the nightly schedule as stored; no run of it may be created.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_LOGGING_TO_API_ENABLED="false",
        HF_HUB_OFFLINE="1",
        # The worker's flow-run process is `sys.executable -m prefect.engine`: the venv's python.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``prefect server start`` on a free 127.0.0.1 port in a fresh PREFECT_HOME; always stopped."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(tmp_path / "prefect-home", api_url)
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _healthy(api_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"prefect server did not start:\n{(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield api_url, env
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (uvicorn runs in it), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _prefect(env: dict[str, str], *args: str, cwd: Path = ROOT, timeout: float = 120) -> str:
    """Run ``prefect ARGS`` with the venv's python; its output, or a failure that shows it."""
    r = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"prefect {' '.join(args)} exited {r.returncode}:\n{out}"
    return out


def test_deploy_schedule_and_worker_run(prefect_server, tmp_path: Path):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import StateType

    api_url, env = prefect_server
    data = tmp_path / "data"
    manifest = make_synthetic_set(
        data, n_seeds=2, n_unplanted=1, n_videos=1, seconds=10.0, broken=True
    )
    out = tmp_path / "out"

    _prefect(env, "work-pool", "create", POOL, "--type", "process")
    env = env | {"CAPMINE_HOME": str(ROOT)}
    _prefect(env, "--no-prompt", "deploy", "--all", timeout=180)

    with SyncPrefectClient(api_url) as client:
        deployments = {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()
        }
        assert set(deployments) == DEPLOYMENTS
        assert {d.work_pool_name for d in deployments.values()} == {POOL}
        nightly = deployments["mine/mine-nightly"]
        assert len(nightly.schedules) == 1 and nightly.schedules[0].active
        assert nightly.schedules[0].schedule.cron == "0 2 * * *"
        assert nightly.schedules[0].schedule.timezone == "UTC"
        adhoc = deployments["mine/mine-adhoc"]
        assert adhoc.schedules == []
        assert adhoc.parameters == nightly.parameters  # one preset, under definitions:
        assert adhoc.entrypoint == "flows/mine.py:mine"
        # `prefect deploy` fills {{ $CAPMINE_HOME }} from its own environment.
        assert adhoc.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        assert adhoc.parameters["params"]["embedder"] == EMBEDDER

    # dask set: the deployed flow must pick its runner from the parameters, as capmine mine does
    params = {
        "seeds": str(data / "seeds"), "videos": str(data / "videos.txt"), "out": str(out),
        "embedder": EMBEDDER, "threshold": 0.6, "filters": "none", "device": "cpu",
        "dask": "local:1",
    }  # fmt: skip
    ran = _prefect(
        env, "deployment", "run", "mine/mine-adhoc", "--param", f"params={json.dumps(params)}"
    )
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", ran).group(1)

    # From elsewhere: only the pull step's CAPMINE_HOME leads the run to flows/mine.py.
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    worker = _prefect(
        env, "worker", "start", "--pool", POOL, "--run-once", cwd=worker_dir, timeout=240
    )

    with SyncPrefectClient(api_url) as client:
        run = client.read_flow_run(flow_run_id)
    assert run.state.type == StateType.COMPLETED, f"{run.state}\nworker:\n{worker}"
    assert run.parameters["params"]["out"] == str(out)
    report = json.loads((out / "report.json").read_text())
    assert report["task_runner"].startswith("DaskTaskRunner at tcp://127.0.0.1:"), report
    # The one planted seed, found once, with its caption; the unplanted one nowhere.
    stats = json.loads((out / "shards" / "00000_stats.json").read_text())
    assert stats["status"] == {"ok": 1}, stats
    with tarfile.open(out / "shards" / "00000.tar") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        meta = json.loads(tar.extractfile(member).read())
    (planted,) = manifest["planted"]
    assert [c["seed_id"] for c in meta["captions"]] == [planted["seed_id"]]
    assert planted["start"] <= meta["match_time"] <= planted["end"], (meta, planted)
    _check_artifacts(api_url, flow_run_id, out, data)


def _check_artifacts(api_url: str, flow_run_id: str, out: Path, data: Path) -> None:
    """The summary, the failed inputs and the report's link, on the run or its subflow."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    with SyncPrefectClient(api_url) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))  # fmt: skip
        runs = [flow_run_id] + [str(r.id) for r in children]
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)))
    by_key = {a.key: a for a in found}
    assert {"capmine-mine-summary", "capmine-failed-inputs", "capmine-report"} <= set(by_key)
    summary = by_key["capmine-mine-summary"]
    assert summary.type == "markdown"
    for row in ("| seeds embedded | 2 of 3 (1 failed) |", "| videos scanned | 1 of 4 (3 failed) |",
                "| clips kept | 1 |", "| shards written | 1 |"):  # fmt: skip
        assert row in summary.data, summary.data
    assert "**0.6**, given." in summary.data, summary.data
    table = by_key["capmine-failed-inputs"]
    assert table.type == "table"
    failed = json.loads(table.data)
    rows = sorted(zip(failed["stage"], [Path(i).name for i in failed["input"]], strict=True))
    assert rows == [("seed", "zz_broken.jpg"), ("video", "broken_empty.mp4"),
                    ("video", "broken_truncated.mp4"), ("video", "missing.mp4")], failed  # fmt: skip
    assert all(failed["kind"]) and all(failed["error"]), failed
    link = by_key["capmine-report"]
    assert link.data == f"[report.html]({(out / 'report.html').absolute().as_uri()})", link.data
