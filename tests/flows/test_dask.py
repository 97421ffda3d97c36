"""The mining flow on Dask: same clips as the plain run, one Prefect server for all.

A small planted set is mined once in the flow's own threads and once on a
LocalCluster of two worker processes (``--dask local:2``); the shard sidecars
must agree clip for clip. A second Dask run goes to a scheduler the test
starts itself (``--dask tcp://127.0.0.1:PORT``). Every task run of a Dask
run must be recorded under its flow run in the session's Prefect server, and
no worker may have started a server of its own (each would write elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.params import MineParams
from synth.planted import make_synthetic_set

EMBEDDER = "miners.embedders:pixel_embedder"
TIMING_COLUMNS = {"seconds", "timings", "cut_seconds", "time"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask")
    make_synthetic_set(root / "data", n_seeds=6, n_unplanted=1, n_videos=4, seconds=20.0)
    return root


def _params(root: Path, out: str, **kw) -> MineParams:
    return MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / out), embedder=EMBEDDER, threshold=0.6, filters="none", shard_size=3,
        device="cpu", seed_chunk=2, **kw,
    )  # fmt: skip


def _clips(out: Path) -> pd.DataFrame:
    """Every clip row of the run's sidecars, sorted by key, without timings and local paths."""
    side = pd.concat(pd.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet")))
    drop = [c for c in side.columns if c in TIMING_COLUMNS or c in ("mp4", "jpg", "flac")]
    side = side.drop(columns=drop).sort_values("key").reset_index(drop=True)
    return side.map(lambda v: repr(v) if not isinstance(v, (str, int, float, bool)) else v)


def _task_runs_of_latest_mine_run() -> tuple[object, list]:
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["mine-stages"])),
            sort=FlowRunSort.START_TIME_DESC, limit=1,
        )  # fmt: skip
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id]))
        )
    return runs[0], tasks


@pytest.fixture(scope="module")
def plain(dataset, prefect_harness):
    from flows.mine import run_mine

    report = run_mine(_params(dataset, "plain"))
    assert report["clips"]["ok"] > 0, report
    return report, _clips(dataset / "plain")


def _assert_one_server(report, n_videos: int) -> None:
    """The run's scan, stage and write tasks are all in this session's server, completed,
    under the ``mine-stages`` flow that ``mine`` ran on the Dask runner."""
    flow_run, tasks = _task_runs_of_latest_mine_run()
    assert flow_run.state.is_completed()
    names = sorted(t.name for t in tasks)
    assert sum(n.startswith("scan-") for n in names) == n_videos, names
    assert sum(n.startswith("stage-") for n in names) == report["shards"], names
    assert sum(n.startswith("shard-") for n in names) == report["shards"], names
    assert all(t.state.is_completed() for t in tasks), [(t.name, t.state.type) for t in tasks]


def _worker_probe() -> dict:
    """What a task on a worker sees: its Prefect URL, servers its process started, thread counts."""
    import os

    import faiss
    import torch
    from prefect.server.api.server import SubprocessASGIServer

    return {
        "api_url": os.environ.get("PREFECT_API_URL"),
        "servers": [s.port for s in SubprocessASGIServer._instances.values() if s.running],
        "torch": torch.get_num_threads(),
        "faiss": faiss.omp_get_max_threads(),
    }


def _probe_each_worker(client) -> dict[str, dict]:
    """``_worker_probe`` run as a task (in a worker's task thread) on every worker."""
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    futures = {w: client.submit(_worker_probe, workers=[w], pure=False) for w in workers}
    return {w: f.result() for w, f in futures.items()}


def test_local_cluster_mines_the_same_clips(dataset, plain, monkeypatch):
    from flows import runners
    from flows.mine import run_mine

    probes: list[dict] = []
    real = runners._register_setup

    def register_and_probe(address, plugin):  # look into the workers while the cluster is up
        real(address, plugin)
        from distributed import Client

        with Client(address, set_as_default=False) as client:
            probes.append(_probe_each_worker(client))

    monkeypatch.setattr(runners, "_register_setup", register_and_probe)
    report = run_mine(_params(dataset, "local2", dask="local:2", threads=3))
    plain_report, plain_clips = plain
    n_videos = len((dataset / "data" / "videos.txt").read_text().split())

    pd.testing.assert_frame_equal(_clips(dataset / "local2"), plain_clips)
    # seeds embedded in chunks of two on the cluster: the same table and vectors
    np.testing.assert_array_equal(
        np.load(dataset / "local2" / "seeds.npy"), np.load(dataset / "plain" / "seeds.npy")
    )
    pd.testing.assert_frame_equal(pd.read_parquet(dataset / "local2" / "seeds.parquet"),
                                  pd.read_parquet(dataset / "plain" / "seeds.parquet"))  # fmt: skip
    assert report["clips"] == plain_report["clips"]
    assert report["videos"] == plain_report["videos"]
    _assert_one_server(report, n_videos)
    (workers,) = probes
    assert len(workers) == 2
    from prefect.settings import get_current_settings

    for w in workers.values():
        assert w["api_url"] == str(get_current_settings().api.url)
        assert w["servers"] == []
        assert w["torch"] == 3 and w["faiss"] == 3  # not the nanny's OMP_NUM_THREADS=1


def test_existing_scheduler_by_address(dataset, plain):
    from distributed import LocalCluster

    from flows.mine import run_mine
    from flows.threads import default_threads

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        report = run_mine(_params(dataset, "remote", dask=address))
        from distributed import Client

        with Client(address, set_as_default=False) as client:
            (seen,) = _probe_each_worker(client).values()
    pd.testing.assert_frame_equal(_clips(dataset / "remote"), plain[1])
    _assert_one_server(report, report["videos"]["total"])
    assert seen["servers"] == []
    assert seen["torch"] == seen["faiss"] == default_threads(1)  # cores / one worker


def test_dask_spec_parsing():
    from flows.runners import local_workers
    from flows.threads import default_threads

    assert local_workers("local") == 2 and local_workers("local:3") == 3
    assert default_threads(2, cores=16) == 8 and default_threads(4, cores=2) == 1
