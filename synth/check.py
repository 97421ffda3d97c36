"""How the demo is set up here, and how a mining run did on a planted set.

:func:`choose_embedder` picks CLIP when its weights load on this machine, else
the weight-free pixel embedder, and says why. :func:`check_planted` compares
the clips a run mined (kept or filtered) with the set's manifest, so the demo
shows its own accuracy; :meth:`PlantedCheck.lines` says it in words.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CLIP_EMBEDDER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
PIXEL_EMBEDDER = "miners.embedders:pixel_embedder"


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


@dataclass
class PlantedCheck:
    """A run's clips against a planted set's manifest, counted by (seed, video) pair."""

    planted: int  # pairs the manifest plants
    found: int  # of those, pairs with a clip whose match time lies in the planted interval
    captioned: int  # pairs with a clip at all (kept, dropped or failed)
    wrong: int  # of those, pairs whose seed was not planted in that video
    verdicts: dict[str, int] = field(default_factory=dict)  # found pairs by status or drop reason

    def lines(self) -> list[str]:
        """The check in words, as the demo prints it."""
        out = [
            f"planted (seed, video) pairs found: {self.found}/{self.planted}; "
            f"captions on clips where that seed was not planted: {self.wrong}/{self.captioned}",
            "what the filters made of the found clips: "
            + ", ".join(f"{k} {n}" for k, n in sorted(self.verdicts.items())),
        ]
        if self.verdicts.get("static") or self.verdicts.get("pan_still"):
            out.append(
                "  ('static' / 'pan_still': the second, fourth, ... planted picture of each video is "
                "a still under a slow camera move, the kind of clip VideoCC3M's release warns "
                "about; the others have a subject moving across them and are kept; "
                "--filters none keeps all)"
            )
        return out


def check_planted(manifest: dict, clips: pd.DataFrame) -> PlantedCheck:
    """Compare every mined clip (the shards' sidecar rows: kept, dropped or failed) with the manifest.

    A planted pair counts as found when a clip carries that seed's caption for
    that video with its match time inside the planted [start, end].
    """
    found: dict[tuple[str, str], tuple[float, str]] = {}
    for row in clips.itertuples():
        for c in json.loads(row.captions):
            verdict = row.reason if isinstance(row.reason, str) else row.status
            found[(c["seed_id"], row.video)] = (c["match_time"], verdict)
    planted = manifest["planted"]
    hits = [p for p in planted
            if p["start"] <= found.get((p["seed_id"], p["video"]), (-1, ""))[0] <= p["end"]]  # fmt: skip
    planted_pairs = {(p["seed_id"], p["video"]) for p in planted}
    return PlantedCheck(
        planted=len(planted),
        found=len(hits),
        captioned=len(found),
        wrong=sum(1 for pair in found if pair not in planted_pairs),
        verdicts=dict(Counter(found[(p["seed_id"], p["video"])][1] for p in hits)),
    )
