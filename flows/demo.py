"""``make demo``: generate a small planted set, mine it, and show what the shards hold."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from flows.params import MineParams

CLIP_EMBEDDER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
PIXEL_EMBEDDER = "miners.embedders:pixel_embedder"

log = logging.getLogger(__name__)


def choose_embedder() -> tuple[str, str]:
    """CLIP when its weights can be loaded here, else the weight-free pixel embedder; and why."""
    from miners.embedders import load_embedder

    try:
        load_embedder(CLIP_EMBEDDER, device="cpu")
    except Exception as e:  # any failure to load weights means: no CLIP on this machine
        reason = str(e).strip().splitlines()[-1][:160] if str(e).strip() else type(e).__name__
        return PIXEL_EMBEDDER, (
            f"CLIP weights for {CLIP_EMBEDDER} are not available here ({reason}); using "
            f"{PIXEL_EMBEDDER}, which matches pictures by their coarse colour layout: enough for "
            "the demo's planted pictures, not for real footage"
        )
    return CLIP_EMBEDDER, f"CLIP weights for {CLIP_EMBEDDER} loaded"


def run_demo(root: str | Path, *, workers: int = 2) -> int:
    from flows.mine import run_mine
    from shards.reader import complete_shards, iter_samples, read_sidecars
    from synth.planted import make_synthetic_set

    root = Path(root)
    print(f"capmine demo: generating a planted set under {root / 'data'} ...")
    manifest = make_synthetic_set(root / "data")
    embedder, why = choose_embedder()
    print(f"embedder: {embedder}\n  why: {why}")
    params = MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / "out"), embedder=embedder, device="cpu", shard_size=8, workers=workers,
        progress=True,
    )  # fmt: skip
    report = run_mine(params)

    from flows.cli import print_summary

    print_summary(report, params.out)
    samples = [s for tar in complete_shards(Path(params.out) / "shards") for s in iter_samples(tar)]
    print("\nwhat the shards hold (key: span, best similarity, caption):")
    for s in samples:
        j = s["json"]
        media = "+".join(k for k in ("mp4", "flac", "jpg", "txt", "json") if k in s)
        print(f"  {s['__key__']}: {j['start']:.1f}-{j['end']:.1f}s  sim {j['similarity']:.2f}  "
              f"[{media}]  {s['txt']!r}")  # fmt: skip
    print_check(manifest, read_sidecars(Path(params.out) / "shards"))
    return 0


def print_check(manifest: dict, clips) -> None:
    """Compare every mined clip (kept or filtered) with what was planted: the demo shows its own accuracy."""
    found: dict[tuple[str, str], tuple[float, str]] = {}
    for row in clips.itertuples():
        for c in json.loads(row.captions):
            verdict = row.reason if isinstance(row.reason, str) else row.status
            found[(c["seed_id"], row.video)] = (c["match_time"], verdict)
    hits = [p for p in manifest["planted"]
            if p["start"] <= found.get((p["seed_id"], p["video"]), (-1, ""))[0] <= p["end"]]  # fmt: skip
    planted_pairs = {(p["seed_id"], p["video"]) for p in manifest["planted"]}
    wrong = sum(1 for pair in found if pair not in planted_pairs)
    print(
        f"\nplanted (seed, video) pairs found: {len(hits)}/{len(manifest['planted'])}; "
        f"captions on clips where that seed was not planted: {wrong}/{len(found)}"
    )
    verdicts = Counter(found[(p["seed_id"], p["video"])][1] for p in hits)
    print("what the filters made of the found clips: "
          + ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items())))  # fmt: skip
    if verdicts.get("static"):
        print(
            "  ('static': the planted pictures are stills under a slow pan, the kind of clip "
            "VideoCC3M's release warns about; --filters none keeps them)"
        )
