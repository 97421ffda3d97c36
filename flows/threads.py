"""How many threads torch, faiss and ffmpeg take in a process: the cores shared evenly.

Apart from :mod:`flows.runners` so that the Dask worker plugin (:mod:`flows.workers`)
and the runners can both use it without importing each other.
"""

from __future__ import annotations

import os


def default_threads(n_workers: int, cores: int | None = None) -> int:
    """Cores shared evenly by the worker processes of one machine, at least one each."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, n_workers))


def set_threads(n: int) -> None:
    """Give torch and faiss ``n`` threads in this process.

    The OpenMP variables are set first: an OpenMP runtime loaded after this
    (torch and faiss bring their own) takes them as the default of every
    thread, including the threads Dask runs tasks in; one already loaded keeps
    its per-thread count, so the explicit calls follow (torch's count is
    process-wide, faiss's holds for this thread).
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
