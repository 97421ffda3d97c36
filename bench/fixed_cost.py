"""The fixed cost of a small ``capmine mine`` run: its wall time against the work it did.

One generated video (the planted set's, ``--seconds`` long) is mined by ``capmine mine`` in
its own process, once per embedder, with ``--filters none``; the run's ``report.json`` says
how long its scan and its whole flow took, so ``fixed_s`` (wall time minus the flow's time)
is what the process spends outside the work: interpreter and imports, Prefect's temporary
server, the flow runs' set-up, and exit. Beside it: ``capmine --help`` and the import of
``flows.mine`` alone. With ``--api-url`` (a running ``prefect server start``) each run is
repeated against that server, which starts no temporary one. Prints one JSON line::

    .venv/bin/python bench/fixed_cost.py --seconds 10
    .venv/bin/python bench/fixed_cost.py --embedders miners.embedders:pixel_embedder --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synth.planted import make_synthetic_set

ROOT = Path(__file__).resolve().parents[1]
EMBEDDERS = "miners.embedders:pixel_embedder,open_clip:ViT-S-32"


def _env(prefect_home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(prefect_home), HF_HUB_OFFLINE="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", TQDM_DISABLE="1")  # fmt: skip
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _wall(cmd: list[str], env: dict[str, str], repeat: int) -> float:
    """Median wall seconds of ``cmd`` run ``repeat`` times (it must succeed)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def import_seconds(module: str, env: dict[str, str]) -> float:
    """Seconds ``import module`` takes in a fresh interpreter."""
    code = f"import time\nt = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True, timeout=300).stdout  # fmt: skip
    return round(float(out.strip()), 3)


def mine_once(data: Path, out: Path, embedder: str, env: dict[str, str]) -> dict:
    """One ``capmine --verbose mine`` in its own process: wall time, the report's times, and
    how many temporary servers it started."""
    cmd = [sys.executable, "-m", "flows.cli", "--verbose", "mine", "--seeds", str(data / "seeds"),
           "--videos", str(data / "videos.txt"), "--out", str(out), "--embedder", embedder,
           "--threshold", "0.6", "--filters", "none", "--device", "cpu", "--no-progress"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"capmine mine failed ({embedder}):\n{proc.stderr[-3000:]}")
    seconds = json.loads((out / "report.json").read_text())["seconds"]
    return {"embedder": embedder, "run_s": round(wall, 3), "scan_s": seconds["scan"],
            "flow_s": seconds["total"], "fixed_s": round(wall - seconds["total"], 3),
            "servers_started": proc.stderr.count("Starting temporary server")}  # fmt: skip


def measure(args: argparse.Namespace, work: Path) -> dict:
    data = work / "data"
    make_synthetic_set(data, n_seeds=2, n_unplanted=1, n_videos=1, seconds=args.seconds,
                       broken=False)  # fmt: skip
    env = _env(work / "prefect")
    first = mine_once(data, work / "first", "miners.embedders:pixel_embedder", env)
    runs, n = [], 0
    for embedder in args.embedders.split(","):
        for url in [None, args.api_url] if args.api_url else [None]:
            for _ in range(args.repeat):
                n += 1
                row = mine_once(data, work / f"out{n}", embedder, _env(work / "prefect", url))
                runs.append(row | {"api_url": bool(url)})
    return {
        "bench": "fixed_cost", "date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
        "cores": len(os.sched_getaffinity(0)), "video_seconds": args.seconds,
        "help_s": _wall([sys.executable, "-m", "flows.cli", "--help"], env, 3),
        "mine_help_s": _wall([sys.executable, "-m", "flows.cli", "mine", "--help"], env, 3),
        "python_s": _wall([sys.executable, "-c", "pass"], env, 3),
        "import_flows_mine_s": import_seconds("flows.mine", env),
        "first_run_fresh_prefect_home_s": first["run_s"], "runs": runs,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the one video")
    ap.add_argument("--embedders", default=EMBEDDERS, help="comma-separated embedder specs")
    ap.add_argument("--repeat", type=int, default=1, help="runs per embedder")
    ap.add_argument("--api-url", help="also run against this Prefect server's API URL")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    args = ap.parse_args()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        print(json.dumps(measure(args, Path(args.work))))
        return
    with tempfile.TemporaryDirectory(prefix="capmine-fixed-cost-") as work:
        print(json.dumps(measure(args, Path(work))))


if __name__ == "__main__":
    main()
