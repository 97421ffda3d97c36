"""The generated cut set covers every kind several times, same-mean pairs included."""

from __future__ import annotations

from collections import Counter

from synth.cutset import KINDS, PAIRS, SIDES


def test_every_kind_has_several_pairs_and_sides_are_known():
    kinds = Counter(f"{SIDES[a][0]}|{SIDES[b][0]}" for a, b in PAIRS)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 4
    assert len(set(PAIRS)) == len(PAIRS)
    assert sum(a.startswith("real_") or b.startswith("real_") for a, b in PAIRS) >= 6
