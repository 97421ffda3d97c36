"""Where the mining flow's tasks run: a thread pool, a Dask LocalCluster, or an existing scheduler.

``--dask local[:N]`` starts N worker processes on 127.0.0.1 (default 2),
``--dask tcp://HOST:PORT`` uses a running scheduler; without ``--dask`` tasks
run in a thread pool of the flow's own process. Two things every Dask worker
needs before it runs a task (see DESIGN.md, "Runtime components"):

- ``PREFECT_API_URL`` of the flow's server. Without it each worker process
  starts its own ephemeral server (slow, and the task runs land in another
  database). The flow's URL (a real server, the test harness's, or the
  ephemeral server started here once for the run) goes into the workers'
  environment before they start (LocalCluster ``env``) and, for an existing
  cluster, through :class:`WorkerSetup`; the flow also runs with that URL in
  its settings, which Prefect serialises into every task run's context.
- Thread counts. The nanny sets ``OMP_NUM_THREADS=1``; each worker gets
  ``threads`` (default: cores / workers) in its environment before it starts
  (LocalCluster) and from :class:`WorkerSetup` before its first task, which
  also sets torch's and faiss's counts explicitly (:func:`set_threads`).

This module imports neither prefect, torch nor Dask at import time: a run on
threads needs none of Dask, and Dask workers unpickle :class:`WorkerSetup`
(in :mod:`flows.workers`, which uses :func:`flows.threads.set_threads`), and that
must not fix Prefect's settings before ``PREFECT_API_URL`` is in the environment.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from flows.threads import default_threads, set_threads

if TYPE_CHECKING:
    from distributed.diagnostics.plugin import WorkerPlugin
    from prefect.task_runners import TaskRunner

    from flows.params import MineParams

log = logging.getLogger(__name__)

DEFAULT_LOCAL_WORKERS = 2


def local_workers(spec: str) -> int:
    """N of ``local`` (2) or ``local:N``."""
    return int(spec.split(":", 1)[1]) if ":" in spec else DEFAULT_LOCAL_WORKERS


def prefect_api_url() -> str | None:
    """The API URL this process's flows report to; starts the ephemeral server if that is the mode.

    With ``PREFECT_API_URL`` unset Prefect runs flows against a temporary
    server of this process (``SubprocessASGIServer``, one per process); it is
    started here so that its URL can be handed to the workers, and the flow
    then uses that same instance.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return str(settings.api.url)
    server = _temporary_server()
    if server is None:
        return None
    server.start()
    return server.api_url


def _temporary_server():
    """This process's temporary Prefect server (``SubprocessASGIServer``, one per process),
    or None when its flows report to ``PREFECT_API_URL`` or ephemeral mode is off."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer()


class ServerStart:
    """The temporary Prefect server booting in the background while the caller does other
    work (imports, loading the embedder); :meth:`wait` before the first flow runs.

    The server's process boots on its own (10-20 s on two loaded cores, most of a small
    run's fixed cost), so the caller's work overlaps it instead of following it. Prefect
    starts the same instance itself on a flow's first API call, so this only moves the
    start earlier: a start that failed here is started, and reported, by the flow again.
    With ``PREFECT_API_URL`` set nothing starts.
    """

    def __init__(self) -> None:
        self.server = _temporary_server()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self.server is not None and not self.server.running:
            context = (
                contextvars.copy_context()
            )  # the caller's Prefect settings, not a bare thread's
            self._thread = threading.Thread(target=context.run, args=(self._start,), daemon=True,
                                            name="capmine-prefect-server")  # fmt: skip
            self._thread.start()

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as e:  # the flow's own start raises it where it counts
            self.error = e

    def wait(self) -> None:
        """Block until the server answers (or its start failed: then the flow retries it)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self.error is not None:
                log.warning("temporary Prefect server did not start early: %s", self.error)


@contextlib.contextmanager
def task_runner_for(params: MineParams) -> Iterator[TaskRunner]:
    """The task runner ``params.dask`` asks for, with its workers set up; closes what it started.

    Also runs the caller's block with ``PREFECT_API_URL`` set to the URL the
    workers were given, so the flow and its task runs share one server.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.task_runners import ThreadPoolTaskRunner

    if params.dask is None:
        if params.threads:
            set_threads(params.threads)
        yield ThreadPoolTaskRunner(max_workers=params.scan_workers)
        return
    from prefect_dask import DaskTaskRunner

    from flows.workers import WorkerSetup

    api_url = prefect_api_url()
    with contextlib.ExitStack() as stack:
        if params.dask.startswith("local"):
            n = local_workers(params.dask)
            threads = params.threads or default_threads(n)
            address = stack.enter_context(_local_cluster(n, threads, api_url))
        else:
            address = params.dask
            threads = params.threads or _remote_default_threads(address)
        _register_setup(address, WorkerSetup(threads, api_url))
        log.info("dask at %s: %d torch/faiss threads per worker, Prefect API %s",
                 address, threads, api_url)  # fmt: skip
        if api_url:
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        yield DaskTaskRunner(address=address)


@contextlib.contextmanager
def _local_cluster(n: int, threads: int, api_url: str | None) -> Iterator[str]:
    """N worker processes of one task at a time each, listening on 127.0.0.1 only."""
    from distributed import LocalCluster

    env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, env=env,
    )  # fmt: skip
    with cluster:
        yield cluster.scheduler_address


def _register_setup(address: str, plugin: WorkerPlugin) -> None:
    """Install ``plugin`` on the scheduler: every worker, present and future, runs its setup."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.register_plugin(plugin, name=plugin.name)


def _remote_default_threads(address: str) -> int:
    """Cores / workers on the busiest host of an existing cluster (cores as seen from here)."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        hosts: dict[str, int] = {}
        for w in client.scheduler_info(n_workers=-1)["workers"].values():
            hosts[w["host"]] = hosts.get(w["host"], 0) + 1
    return default_threads(max(hosts.values(), default=1))
