"""The Dask worker plugin of a mining run, apart from :mod:`flows.runners` so that a run on
threads never imports Dask (most of a second of start-up)."""

from __future__ import annotations

import os

from distributed.diagnostics.plugin import WorkerPlugin

from flows.threads import set_threads


class WorkerSetup(WorkerPlugin):
    """Dask worker plugin: Prefect's API URL and the thread counts, before any task runs."""

    name = "capmine-setup"

    def __init__(self, threads: int, api_url: str | None):
        self.threads, self.api_url = threads, api_url

    def setup(self, worker) -> None:
        if self.api_url:
            # a worker that already imported prefect keeps its settings; tasks still
            # get the URL through their serialised settings context
            os.environ.setdefault("PREFECT_API_URL", self.api_url)
        set_threads(self.threads)
