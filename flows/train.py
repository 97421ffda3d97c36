"""Training and evaluation flows: shards in, checkpoints and retrieval metrics out.

The frozen towers are the embedder the shards were mined with (the mining run
records it in ``OUT/seeds.json``), unless ``embedder`` overrides it, so targets
live in the space the clips were matched in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from miners.embedders import parse_spec


class TrainParams(BaseModel):
    """One training run. Units are in each description."""

    model_config = ConfigDict(extra="forbid")

    shards: str = Field(
        description="Training shards: a tar, a brace pattern 'OUT/shards/{00000..00009}.tar', tars joined by '::', or a shard folder"
    )
    out: str = Field(description="Run folder (RUN): last.pt, step_N.pt, metrics.jsonl")
    embedder: str | None = Field(
        None,
        description="Frozen towers (same spellings as mine); default: the one the shards were mined with",
    )
    config: str = Field("small", description="Model config: tiny, small, base, or a JSON file")
    steps: int = Field(1000, ge=1, description="Optimiser steps")
    batch_size: int = Field(64, ge=2, description="Clips per step (global, over all ranks)")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate (AdamW)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay on matrices")
    warmup: int = Field(100, ge=0, description="Linear warm-up steps before the cosine decay")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip")
    precision: str = Field(
        "bf16",
        pattern="^(bf16|fp16|fp32)$",
        description="Autocast precision on GPU: bf16, fp16 or fp32",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, or cuda[:N]")
    num_workers: int = Field(2, ge=0, description="Data loader worker processes")
    seed: int = Field(0, description="Seed of the data order, crops and initialisation")
    ckpt_every: int = Field(500, ge=1, description="Steps between checkpoints")
    log_every: int = Field(10, ge=1, description="Steps between metrics lines")
    resume: bool = Field(True, description="Resume from RUN/last.pt when it exists")


class EvalParams(BaseModel):
    """Retrieval and zero-shot evaluation of a checkpoint on held-out shards."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="A checkpoint written by train (RUN/last.pt)")
    shards: str = Field(description="Held-out shards (same spellings as train)")
    embedder: str | None = Field(
        None, description="Frozen towers; default: the one recorded in the checkpoint"
    )
    classes: str | None = Field(
        None, description="A text file of class names, one a line, for zero-shot accuracy"
    )
    batch_size: int = Field(64, ge=1, description="Clips per batch")
    device: str = Field("auto", description="auto, cpu, or cuda[:N]")
    out: str | None = Field(None, description="Also write the metrics to this JSON file")


def shard_spec(shards: str) -> str:
    """A folder becomes its complete shards; patterns and ``::`` lists pass through."""
    from shards.reader import complete_shards

    if Path(shards).is_dir():
        tars = complete_shards(shards)
        if not tars:
            raise ValueError(f"{shards}: no complete shard (NNNNN.tar with NNNNN_stats.json)")
        return "::".join(str(t) for t in tars)
    return shards


def resolve_embedder(spec: str | None, shards: str, checkpoint: str | None = None) -> str:
    """The embedder to use: given, else recorded in the checkpoint, else by the mining run."""
    from trainer.features import expand_shards, recorded_embedder

    if spec:
        parse_spec(spec)
        return spec
    if checkpoint:
        import torch

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


@task(name="train-encoders")
def fit(params: TrainParams, embedder_spec: str) -> dict[str, Any]:
    from miners.embedders import get_embedder
    from trainer.train import train_encoders

    embedder = get_embedder(embedder_spec, params.device)
    return train_encoders(
        shards=params.shards, out=Path(params.out), embedder=embedder, embedder_id=embedder_spec,
        config=params.config, steps=params.steps, batch_size=params.batch_size, lr=params.lr,
        weight_decay=params.weight_decay, warmup=params.warmup, grad_clip=params.grad_clip,
        precision=params.precision, device=params.device, num_workers=params.num_workers,
        seed=params.seed, ckpt_every=params.ckpt_every, log_every=params.log_every,
        resume=params.resume,
    )  # fmt: skip


@flow(name="train")
def train(params: TrainParams) -> dict[str, Any]:
    """Train the audio and video encoders on mined shards."""
    logger = get_run_logger()
    params = params.model_copy(update={"shards": shard_spec(params.shards)})
    spec = resolve_embedder(params.embedder, params.shards)
    logger.info("training %s on %s against frozen %s", params.config, params.shards, spec)
    summary = fit(params, spec)
    logger.info("trained to step %s: %s", summary.get("step"), json.dumps(summary)[:500])
    return summary


def read_classes(path: str | None) -> list[str] | None:
    if not path:
        return None
    names = [line.strip() for line in Path(path).read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"{path}: no class names (one a line)")
    return names


@task(name="evaluate")
def score(params: EvalParams, embedder_spec: str) -> dict[str, Any]:
    from miners.embedders import get_embedder
    from trainer.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(
        params.checkpoint, params.shards, embedder=get_embedder(embedder_spec, params.device),
        batch_size=params.batch_size, device=params.device, classes=read_classes(params.classes),
    )  # fmt: skip


@flow(name="eval")
def evaluate(params: EvalParams) -> dict[str, Any]:
    """Recall@1/5/10 (audio/video <-> text) and zero-shot accuracy of a checkpoint."""
    logger = get_run_logger()
    params = params.model_copy(update={"shards": shard_spec(params.shards)})
    spec = resolve_embedder(params.embedder, params.shards, params.checkpoint)
    metrics = score(params, spec)
    if params.out:
        from shards.writer import atomic_write_json

        atomic_write_json(Path(params.out), metrics)
    logger.info("eval: %s", json.dumps(metrics)[:800])
    return metrics
