"""What a training or evaluation run reads, as the user names it: shards, embedder, classes.

A mining run leaves its shards in ``OUT/shards/`` and names its embedder in
``OUT/seeds.json``; these helpers turn a folder into its complete shards, find
the embedder the clips were matched with (so the targets live in that space),
and read a class list for zero-shot accuracy.
"""

from __future__ import annotations

from pathlib import Path

from trainer.features import expand_shards, recorded_embedder


def shard_spec(shards: str) -> str:
    """A folder becomes its complete shards joined by ``::`` (a shard still being
    written has no stats file and is left out); patterns and ``::`` lists pass through."""
    if Path(shards).is_dir():
        from shards.reader import complete_shards  # pandas: not loaded for patterns and lists

        tars = complete_shards(shards)
        if not tars:
            raise ValueError(f"{shards}: no complete shard (NNNNN.tar with NNNNN_stats.json)")
        return "::".join(str(t) for t in tars)
    return shards


def resolve_embedder(spec: str | None, shards: str, checkpoint: str | Path | None = None) -> str:
    """The frozen towers' spec: ``spec`` when given, else the one recorded in
    ``checkpoint``, else the one the mining run of ``shards`` recorded.

    Raises ValueError when none is known: guessing would train or score against a
    space the clips were not matched in.
    """
    if spec:
        return spec
    if checkpoint:
        import torch  # only to read the checkpoint: the rest of this module needs no torch

        recorded = torch.load(checkpoint, map_location="cpu", weights_only=False).get("embedder_id")
        if recorded:
            return recorded
    first = expand_shards(shards)[0]
    recorded = recorded_embedder(first)
    if not recorded:
        raise ValueError(
            f"no embedder recorded for {first} (OUT/seeds.json missing): pass --embedder"
        )
    return recorded


def read_classes(path: str | Path | None) -> list[str] | None:
    """Class names from a text file, one a line (blank lines and ``#`` comments skipped);
    None without a file. An empty list is an error, not zero classes."""
    if not path:
        return None
    names = [line.strip() for line in Path(path).read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"{path}: no class names (one a line)")
    return names


def split_shards(shard_dir: Path, holdout: int) -> tuple[list[str], list[str]]:
    """Complete shards split into (train, held out): the last ``holdout`` are held out,
    unless that would leave nothing to train on, in which case evaluation reuses them."""
    from shards.reader import complete_shards

    tars = [str(p) for p in complete_shards(shard_dir)]
    if not tars:
        raise ValueError(f"no complete shard in {shard_dir}: nothing was mined to train on")
    if holdout and len(tars) > holdout:
        return tars[:-holdout], tars[-holdout:]
    return tars, tars
