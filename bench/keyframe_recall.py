"""Keyframes sampling against exact sampling on the planted set: recall, wrong captions, decode time.

Writes a planted set (:mod:`synth.planted`), re-encodes its videos once per
key frame layout, and mines each copy twice, ``--sampler exact`` and
``--sampler keyframes``, with the weight-free pixel embedder, one fixed
threshold and ``--filters none``, in one process against one ephemeral Prefect
server. The layouts:

* ``scenecut``: x264's defaults (a key frame at least every 250 frames, and at
  each scene cut it sees), as most encoders leave a file;
* ``gopNs``: a key frame every N seconds exactly, no scene cuts (streaming
  encodes), for each N in ``--gops``.

(The planted set itself is written with x264's ``ultrafast`` preset, which
places no scene-cut key frames; it is the source of both layouts.)

Each run is judged as ``make demo`` judges it (:func:`synth.check.check_planted`):
planted (seed, video) pairs found, and captions on videos where that seed was
not planted. ``decode_s`` sums the scans' decode seconds (``OUT/scans``,
embedding excluded). Prints one JSON line::

    .venv/bin/python bench/keyframe_recall.py                       # 8 videos of 40 s
    .venv/bin/python bench/keyframe_recall.py --n-videos 2 --seconds 20 --n-seeds 4
    .venv/bin/python bench/keyframe_recall.py --height 720 --gops 2,10   # decoding as on real footage
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, synth/ (the planted set) among them

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="capmine-bench-prefect-"))

from media.ffmpeg import FFMPEG, run  # noqa: E402
from synth.check import PIXEL_EMBEDDER  # noqa: E402

CRF = 26  # the planted set's own quality
SAMPLERS = ("exact", "keyframes")


def reencode(
    videos_txt: Path, out_dir: Path, fps: float, gop_seconds: float | None, height: int
) -> Path:
    """Every listed video re-encoded into ``out_dir`` (x264 veryfast, audio copied): with
    ``gop_seconds`` a key frame exactly every that many seconds, else x264's own choice;
    ``height`` > 0 scales it to that height (decoding then costs what it does on real footage).
    Returns the new list; the file names stay, so a clip's video maps back by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    listed = []
    for src in videos_txt.read_text().split():
        dst = out_dir / Path(src).name
        cmd = [FFMPEG, "-v", "error", "-y", "-i", src, "-c:v", "libx264", "-preset", "veryfast",
               "-crf", str(CRF), "-pix_fmt", "yuv420p", "-c:a", "copy"]  # fmt: skip
        if height > 0:
            cmd += ["-vf", f"scale=-2:{height}"]
        if gop_seconds is not None:
            n = max(1, round(gop_seconds * fps))
            cmd += ["-g", str(n), "-keyint_min", str(n), "-sc_threshold", "0"]
        run(cmd + [str(dst)], what=src, timeout=600)
        listed.append(str(dst))
    out = out_dir / "videos.txt"
    out.write_text("".join(p + "\n" for p in listed))
    return out


def mine_once(root: Path, seeds: Path, videos: Path, sampler: str, threshold: float,
              workers: int) -> dict:  # fmt: skip
    """One ``capmine mine`` run (in process); its clips' sidecar rows and the scans' figures."""
    from flows.mine import run_mine
    from flows.params import MineParams
    from shards.reader import read_sidecars

    out = root / f"out-{sampler}"
    params = MineParams(seeds=str(seeds), videos=str(videos), out=str(out), embedder=PIXEL_EMBEDDER,
                        threshold=threshold, filters="none", device="cpu", sampler=sampler,
                        hwaccel="none", scan_workers=workers, overwrite=True)  # fmt: skip
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
        run_mine(params)
    wall = time.perf_counter() - t0
    scans = [json.loads(p.read_text()) for p in sorted((out / "scans").glob("*.json"))]
    return {
        "clips": read_sidecars(out / "shards"),
        "decode_s": sum(s["timings"].get("decode", 0.0) for s in scans if s["status"] == "ok"),
        "frames": sum(s["n_frames"] for s in scans),
        "wall_s": wall,
    }


def judge(manifest: dict, clips, videos_txt: Path) -> dict:
    """Recall and wrong captions of one run, its videos mapped back to the manifest's names."""
    from synth.check import check_planted

    by_name = {Path(v["video"]).name: v["video"] for v in manifest["planted"]}
    if len(clips):
        clips = clips.assign(video=clips["video"].map(lambda v: by_name.get(Path(v).name, v)))
    check = check_planted(manifest, clips)
    return {"found": check.found, "planted": check.planted,
            "recall": round(check.found / max(1, check.planted), 3),
            "wrong": check.wrong, "captioned": check.captioned}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-seeds", type=int, default=16)
    ap.add_argument("--n-videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each video")
    ap.add_argument(
        "--gops", default="2", help="fixed key frame intervals, seconds, comma-separated"
    )
    ap.add_argument("--threshold", type=float, default=0.8,
                    help="a planted seed's own footage scores 0.9-1.0 under the pixel embedder")  # fmt: skip
    ap.add_argument("--height", type=int, default=0,
                    help="re-encode the videos at this height, e.g. 720 (default: as generated, 180)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=1, help="videos scanned at once")
    ap.add_argument("--work", help="folder for the set and the runs (default: a temp dir)")
    args = ap.parse_args()

    from synth.planted import make_synthetic_set

    root = Path(args.work or tempfile.mkdtemp(prefix="capmine-bench-keyframes-"))
    manifest = make_synthetic_set(root / "data", n_seeds=args.n_seeds, broken=False,
                                  n_unplanted=max(1, args.n_seeds // 5), n_videos=args.n_videos,
                                  seconds=args.seconds)  # fmt: skip
    fps = manifest["params"]["fps"]
    layouts = {"scenecut": None} | {f"gop{g}s": float(g) for g in args.gops.split(",") if g}
    result = {"set": {k: manifest["params"][k] for k in ("n_seeds", "n_videos", "seconds", "fps")},
              "height": args.height or manifest["params"]["height"], "threshold": args.threshold,
              "cores": len(os.sched_getaffinity(0))}  # fmt: skip
    for name, gop in layouts.items():
        videos = reencode(root / "data" / "videos.txt", root / name / "videos", fps, gop,
                          args.height)  # fmt: skip
        row = {}
        for sampler in SAMPLERS:
            mined = mine_once(root / name, root / "data" / "seeds", videos, sampler,
                              args.threshold, args.workers)  # fmt: skip
            row[sampler] = {**judge(manifest, mined["clips"], videos), "frames": mined["frames"],
                            "decode_s": round(mined["decode_s"], 2),
                            "wall_s": round(mined["wall_s"], 1)}  # fmt: skip
        row["decode_speedup"] = round(
            row["exact"]["decode_s"] / max(row["keyframes"]["decode_s"], 1e-9), 2
        )
        result[name] = row
    result["folder"] = str(root) if args.work else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
