"""Wall time of one mining run in the flow's own threads against the same run on Dask.

Both runs mine the same synthetic planted set (``synth.planted``) into separate
output folders, against one ephemeral Prefect server started before either is
timed, as ``capmine mine`` runs without ``PREFECT_API_URL``. The Dask run's
time includes starting and closing its LocalCluster. Also checked: both runs
give the same clip keys, and while the Dask run goes no second Prefect server
process appears (a worker without the URL would start its own). Prints one
JSON line a run and a summary line::

    .venv/bin/python bench/dask_vs_plain.py --dask local:2
    .venv/bin/python bench/dask_vs_plain.py --n-videos 24 --seconds 60 --shard-size 8

An open_clip embedder without pretrained weights is no use here: every
process draws its own random towers, so workers' frames do not match the
seeds the flow's process embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="capmine-bench-prefect-"))


def server_processes() -> int:
    """Prefect API servers started by this process or its descendants (Dask workers included).

    The ephemeral server is ``uvicorn ... prefect.server.api.server:create_app``.
    """
    import psutil

    n = 0
    for p in psutil.Process().children(recursive=True):
        try:
            n += "prefect.server.api.server:create_app" in " ".join(p.cmdline())
        except psutil.Error:  # gone between listing and reading
            continue
    return n


class ServerWatch:
    """The most Prefect server processes seen at once while the block runs."""

    def __enter__(self):
        self.most, self._stop = server_processes(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.5):
            self.most = max(self.most, server_processes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dask", default="local:2", help="local[:N] or tcp://HOST:PORT")
    ap.add_argument("--embedder", default="miners.embedders:pixel_embedder")
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--workers", type=int, default=2, help="threads of the plain run")
    ap.add_argument("--shard-size", type=int, default=6, help="clips a shard (a cut task)")
    ap.add_argument("--n-seeds", type=int, default=16)
    ap.add_argument("--n-videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each video")
    ap.add_argument("--work", help="folder for the set and the outputs (default: a temp dir)")
    args = ap.parse_args()

    import pandas as pd

    from flows.mine import run_mine
    from flows.params import MineParams
    from flows.runners import prefect_api_url
    from synth.planted import make_synthetic_set

    root = Path(args.work or tempfile.mkdtemp(prefix="capmine-bench-dask-"))
    make_synthetic_set(root / "data", n_seeds=args.n_seeds, n_unplanted=max(1, args.n_seeds // 5),
                       n_videos=args.n_videos, seconds=args.seconds)  # fmt: skip
    t0 = time.perf_counter()
    api = prefect_api_url()  # the shared ephemeral server, started outside both timings
    print(json.dumps({"prefect_api": api, "server_start_s": round(time.perf_counter() - t0, 2),
                      "cores": len(os.sched_getaffinity(0))}))  # fmt: skip

    rows = {}
    for name, dask in (("plain", None), ("dask", args.dask)):
        params = MineParams(
            seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
            out=str(root / name), embedder=args.embedder, threshold=args.threshold,
            filters="none", device="cpu", scan_workers=args.workers, dask=dask,
            shard_size=args.shard_size,
        )  # fmt: skip
        with ServerWatch() as watch:
            t = time.perf_counter()
            report = run_mine(params)
            wall = time.perf_counter() - t
        sides = [pd.read_parquet(p) for p in (root / name / "shards").glob("*.parquet")]
        keys = sorted(k for side in sides for k in side["key"])
        rows[name] = {"run": name, "dask": dask, "wall_s": round(wall, 2),
                      "stages_s": report["seconds"],
                      "video_work_s": report["video_seconds"], "videos": report["videos"]["total"],
                      "frames": report["videos"]["frames"], "clips": report["clips"]["ok"],
                      "prefect_servers_seen": watch.most, "keys": keys}  # fmt: skip
        print(json.dumps({k: v for k, v in rows[name].items() if k != "keys"}))
    plain, dask = rows["plain"], rows["dask"]
    print(json.dumps({"speedup": round(plain["wall_s"] / dask["wall_s"], 2),
                      "same_clips": plain["keys"] == dask["keys"],
                      "one_server": dask["prefect_servers_seen"] == 1}))  # fmt: skip


if __name__ == "__main__":
    main()
