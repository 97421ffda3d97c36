"""Soak: a hostile input set mined through crashes, and compared with one clean run.

Builds ``synth/soakset.py``'s set (69 videos, a third broken: truncated, empty,
garbage, audio only, missing, hostile metadata, and a 127.0.0.1 server that
hangs, answers 429 or 500, drops the connection mid-body or streams for ever;
seeds with a FIFO, decompression bombs, garbage, a ``data:`` URL, a hanging
URL and a malformed row). Then:

1. mines it once, cleanly, into ``clean/`` (the reference);
2. mines it into ``soak/``, killing ``capmine mine`` (its whole process group)
   with SIGKILL ``--kills`` times and starting it again each time: in the middle
   of scanning (after a random number of scans), just after planning, while
   staging and after a shard is written (and, beyond four kills, first at random
   moments); during the first
   attempt a second run on the same OUT is started and must be refused;
3. lets the last run finish, and checks:
   * the dataset equals the clean run's: every parquet row, every tar member
     (names and bytes);
   * every broken video and seed is a failed row with its kind;
   * nothing outside OUT and the cache changed (the inputs, the working folder);
   * the peak memory of any capmine process.

Prints one JSON object::

    .venv/bin/python bench/soak.py              # about 10 minutes on two cores
    .venv/bin/python bench/soak.py --kills 2 --keep /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, synth/ (the set) among them

import pandas as pd  # noqa: E402

from synth.faultserver import FaultServer  # noqa: E402
from synth.soakset import make_soak_set  # noqa: E402

MEMORY_BOUND_MB = 1000  # any one capmine process, the Prefect server it starts included
# The soak checks the run's machinery, so its filters keep good clips (still pictures
# shown in noise, which the motion filter would drop): caption, shots, sound, flat frames.
FILTERS = """filters:
  - {name: text}
  - {name: shots}
  - {name: audio}
  - {name: blank}
  - {name: caps}
"""  # any one capmine process, the Prefect server it starts included


def capmine_cmd(s, out: Path, cache: Path) -> list[str]:
    filters = s.root.parent / "filters.yaml"  # beside the set, not in it: the set must not change
    filters.write_text(FILTERS)
    cli = Path(sys.executable).with_name("capmine")
    return [str(cli) if cli.exists() else "capmine", "mine", "--seeds", str(s.seeds),
            "--videos", str(s.videos), "--out", str(out), "--cache-dir", str(cache),
            "--embedder", "miners.embedders:pixel_embedder", "--threshold", "0.6",
            "--device", "cpu", "--fetch-timeout", "4", "--seed-timeout", "3",
            "--shard-size", "10", "--filters", str(filters), "--no-progress"]  # fmt: skip


def start(cmd: list[str], cwd: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}  # fmt: skip
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.communicate()


def progress(out: Path) -> dict:
    """Where a run on ``out`` stands, from the files it leaves."""

    def mtime(p: Path) -> float:
        return p.stat().st_mtime if p.exists() else 0.0

    staged = list((out / "staging").rglob("*")) if (out / "staging").exists() else []
    return {"scans": len(list((out / "scans").glob("*.json"))) if (out / "scans").exists() else 0,
            "plan": mtime(out / "plan.json"), "staged": max(map(mtime, staged), default=0.0),
            "shards": len(list((out / "shards").glob("*_stats.json")))
            if (out / "shards").exists() else 0}  # fmt: skip


def kill_points(rng: random.Random, kills: int) -> list:
    """``kills`` moments to SIGKILL a run at, each a test of (now, at start, seconds): at
    random moments first (beyond four), then in the middle of scanning, just after planning,
    while staging, and after a shard."""
    n_scans = rng.randint(5, 20)
    stages = [
        (f"mid-scan ({n_scans} scans in)",
         lambda now, then, t: now["scans"] >= then["scans"] + n_scans),
        ("after planning", lambda now, then, t: now["plan"] > then["plan"]),
        ("while staging", lambda now, then, t: now["staged"] > then["staged"]),
        ("after a shard", lambda now, then, t: now["shards"] > then["shards"]),
    ]  # fmt: skip
    randoms = []  # first, while most of the run is still ahead
    for _ in range(max(0, kills - len(stages))):
        at = rng.uniform(3.0, 25.0)
        randoms.append((f"at {at:.1f} s", lambda now, then, t, at=at: t >= at))
    points = randoms + stages
    return points[:kills]


def second_run(cmd: list[str], cwd: Path, home: Path) -> dict:
    """Start ``cmd`` while another run holds its OUT: it must stop at once, naming it."""
    second, t1 = start(cmd, cwd, home), time.perf_counter()
    try:
        _, err = second.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_group(second)
        err = "(still running after 60 s)"
    return {"exit": second.returncode, "seconds": round(time.perf_counter() - t1, 1),
            "message": err.strip().splitlines()[-1:] if err else []}  # fmt: skip


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_fifo():
                out[str(p)] = (0, p.stat().st_mtime_ns)
            elif p.is_file():
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def dataset(out: Path) -> tuple[pd.DataFrame, dict[str, bytes]]:
    rows = pd.concat(pd.read_parquet(p).assign(shard=p.stem)
                     for p in sorted((out / "shards").glob("*.parquet")))  # fmt: skip
    members = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                members[f"{tar.name}/{m.name}"] = t.extractfile(m).read()
    return rows.reset_index(drop=True), members


def run(folder: Path, kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    cwd, home, cache = folder / "cwd", folder / "prefect-home", folder / "cache"
    cwd.mkdir(parents=True, exist_ok=True)
    with FaultServer(folder / "set" / "served") as server:
        s = make_soak_set(folder / "set", server)
        before = snapshot(folder / "set", cwd)

        t0 = time.perf_counter()
        clean = start(capmine_cmd(s, folder / "clean", folder / "clean-cache"), cwd, home)
        _, err = clean.communicate()
        t_clean = time.perf_counter() - t0
        if clean.returncode != 0:
            raise SystemExit(f"the clean run failed ({clean.returncode}):\n{err[-3000:]}")

        kill_times, refused = [], None
        points = kill_points(rng, kills)
        for k, (point, ready) in enumerate(points):
            out = folder / "soak"
            p, began = start(capmine_cmd(s, out, cache), cwd, home), time.monotonic()
            if k == 0:  # a second run on the same OUT while the first holds it
                time.sleep(5.0)
                refused = second_run(capmine_cmd(s, out, cache), cwd, home)
            state = progress(out)
            while p.poll() is None and not ready(progress(out), state, time.monotonic() - began):
                time.sleep(0.1)
            finished_early = p.poll() is not None
            kill_group(p)
            kill_times.append({"at": point, "seconds": None if finished_early
                               else round(time.monotonic() - began, 1)})  # fmt: skip
        t2 = time.perf_counter()
        last = start(capmine_cmd(s, folder / "soak", cache), cwd, home)
        _, err = last.communicate()
        t_last = time.perf_counter() - t2
        if last.returncode != 0:
            raise SystemExit(f"the final soak run failed ({last.returncode}):\n{err[-3000:]}")
        after = snapshot(folder / "set", cwd)

    return {"set": s, "t_clean": t_clean, "t_last": t_last, "kills": kill_times,
            "second_run": refused, "untouched": before == after,
            "changed_outside": sorted(set(before.items()) ^ set(after.items()))[:10]}  # fmt: skip


def compare(folder: Path) -> dict:
    a_rows, a_members = dataset(folder / "clean")
    b_rows, b_members = dataset(folder / "soak")
    same_rows = a_rows.astype(str).equals(b_rows.astype(str))
    same_names = sorted(a_members) == sorted(b_members)
    same_bytes = same_names and all(a_members[k] == b_members[k] for k in a_members)
    return {"clips": len(a_rows), "tar_members": len(a_members), "rows_equal": same_rows,
            "member_names_equal": same_names, "member_bytes_equal": same_bytes}  # fmt: skip


SEED_KINDS = {"not a regular file": "not_a_regular_file", "megapixels": "too_many_pixels",
              "not a decodable image": "not_an_image", "no such file": "not_found",
              "fields": "malformed_row", "timed out": "timeout", "not allowed": "refused_protocol"}  # fmt: skip


def kind_of(error: str) -> str:
    """The kind a failure row names: ``fetch KIND``/``decode``/``shots`` for videos, a
    phrase of the reader's message for seeds."""
    head = error.split(":")[0].split()
    if head[:1] == ["fetch"] and len(head) > 1:
        return f"fetch {head[1]}"
    if head[:1] in (["decode"], ["shots"]):
        return head[0]
    return next((k for phrase, k in SEED_KINDS.items() if phrase in error), "other")


def failures(out: Path, s) -> dict:
    videos = pd.read_parquet(out / "videos.parquet").set_index("video")
    seeds = pd.read_parquet(out / "seeds.parquet").set_index("id")
    bad_v = {u: (videos.loc[u, "status"], videos.loc[u, "error"]) for u in s.broken_videos}
    bad_s = {i: (seeds.loc[i, "status"], seeds.loc[i, "error"])
             for i in s.broken_seeds if i in seeds.index}  # fmt: skip
    good_v = videos.loc[list(s.good_videos)]
    kinds: dict[str, int] = {}
    for _, error in [*bad_v.values(), *bad_s.values()]:
        kinds[kind_of(error or "")] = kinds.get(kind_of(error or ""), 0) + 1
    return {
        "broken_videos_failed": sum(st == "failed" and bool(e) for st, e in bad_v.values()),
        "broken_videos": len(bad_v),
        "broken_seeds_failed": sum(st == "failed" and bool(e) for st, e in bad_s.values()),
        "broken_seeds": len(s.broken_seeds),
        "broken_seeds_with_a_row": len(bad_s),
        "good_videos_ok": int((good_v["status"] == "ok").sum()),
        "good_videos": len(good_v),
        "failure_kinds": kinds,
        "not_failed": {k: v for k, v in {**bad_v, **bad_s}.items() if v[0] != "failed"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--kills",
        type=int,
        default=5,
        help="SIGKILLs before the final run "
        "(mid-scan, after planning, while staging, after a shard, then at random)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--keep", help="folder to work in and keep (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        r = run(folder, args.kills, args.seed)
        s = r.pop("set")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report = {
            "inputs": {
                "videos": len(s.good_videos) + len(s.broken_videos),
                "broken_videos": len(s.broken_videos),
                "seeds": s.n_good_seeds + len(s.broken_seeds),
                "broken_seeds": len(s.broken_seeds),
            },  # fmt: skip
            "kills": r["kills"],
            "second_run_on_the_same_out": r["second_run"],
            "dataset": compare(folder),
            "failures": failures(folder / "soak", s),
            "untouched_outside_out_and_cache": r["untouched"],
            "changed_outside": r["changed_outside"],
            "peak_rss_mb": round(peak_mb),
            "memory_bound_mb": MEMORY_BOUND_MB,
            "peak_under_bound": peak_mb < MEMORY_BOUND_MB,
            "seconds": {
                "clean_run": round(r["t_clean"], 1),
                "final_run": round(r["t_last"], 1),
                "total": round(time.perf_counter() - t0, 1),
            },  # fmt: skip
            "folder": str(folder) if args.keep else None,
        }
        print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
