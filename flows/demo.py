"""``make demo``: generate a small planted set, mine it, and show what the shards hold.

Only the command's glue lives here; the set, the choice of embedder and the
check of the clips against the set's manifest are :mod:`synth`'s.
"""

from __future__ import annotations

from pathlib import Path

from flows.params import MineParams


def run_demo(root: str | Path, *, scan_workers: int = 2) -> int:
    """Write a planted set under ``root/data``, mine it into ``root/out``, print what came out."""
    from flows.mine import run_mine
    from runs.report import summary_lines
    from shards.reader import complete_shards, iter_samples, read_sidecars
    from synth.check import check_planted, choose_embedder
    from synth.planted import make_synthetic_set

    root = Path(root)
    print(f"capmine demo: generating a planted set under {root / 'data'} ...")
    manifest = make_synthetic_set(root / "data")
    embedder, why = choose_embedder()
    print(f"embedder: {embedder}\n  why: {why}")
    params = MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / "out"), embedder=embedder, device="cpu", shard_size=8, scan_workers=scan_workers,
        progress=True,
    )  # fmt: skip
    report = run_mine(params)
    print("\n".join(summary_lines(report, params.out)))
    samples = [s for tar in complete_shards(Path(params.out) / "shards") for s in iter_samples(tar)]
    print("\nwhat the shards hold (key: span, best similarity, caption):")
    for s in samples:
        j = s["json"]
        media = "+".join(k for k in ("mp4", "flac", "jpg", "txt", "json") if k in s)
        print(f"  {s['__key__']}: {j['start']:.1f}-{j['end']:.1f}s  sim {j['similarity']:.2f}  "
              f"[{media}]  {s['txt']!r}")  # fmt: skip
    check = check_planted(manifest, read_sidecars(Path(params.out) / "shards"))
    print("\n" + "\n".join(check.lines()))
    if report.get("report_html"):
        print(f"\nthe run's report, to open in a browser: {Path(report['report_html']).resolve()}")
    else:
        print(f"\nthe run's report was not written: {report.get('report_html_error')}")
    return 0
