"""Training and evaluation flows: shards in, checkpoints and retrieval metrics out.

The frozen towers are the embedder the shards were mined with (the mining run
records it in ``OUT/seeds.json``), unless ``embedder`` overrides it, so targets
live in the space the clips were matched in.

Each run kind has one plain function from its parameter model to the library
call (:func:`train_from_params`, :func:`evaluate_from_params`); the Prefect tasks
wrap them, and the CLI's torchrun branch calls :func:`train_from_params` itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from flows.artifacts import EVAL_METRICS, TRAIN_METRICS, publish_metrics
from miners.embedders import get_embedder, parse_spec
from shards.writer import atomic_write_json
from trainer.inputs import read_classes, resolve_embedder, shard_spec


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
    num_workers: int | None = Field(
        None,
        ge=0,
        description="Data loader worker processes (default: none on a CPU, where the step takes every core and cached inputs load in-process; on CUDA half the cores a GPU, at most 8)",
    )
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


def _resolved(params: TrainParams | EvalParams, checkpoint: str | None = None):
    """``params`` with the shards spelled out (a folder becomes its complete shards) and
    the embedder named: given, else ``checkpoint``'s, else the one the shards were mined with."""
    shards = shard_spec(params.shards)
    spec = resolve_embedder(params.embedder, shards, checkpoint)
    parse_spec(spec)  # a misspelt embedder fails here, before anything loads
    return params.model_copy(update={"shards": shards, "embedder": spec})


def resolve_train_params(params: TrainParams) -> TrainParams:
    return _resolved(params)


def train_from_params(params: TrainParams) -> dict[str, Any]:
    """The one path from :class:`TrainParams` to :func:`trainer.train.train_encoders`:
    the Prefect task runs it, and so does every rank under torchrun (no flow per rank)."""
    from trainer.train import train_encoders

    params = resolve_train_params(params)
    embedder = get_embedder(params.embedder, params.device)
    fields = params.model_dump(exclude={"shards", "out", "embedder"})
    return train_encoders(
        shards=params.shards,
        out=Path(params.out),
        embedder=embedder,
        embedder_id=params.embedder,
        **fields,
    )


@task(name="train-encoders")
def train_encoders_task(params: TrainParams) -> dict[str, Any]:
    return train_from_params(params)


@flow(name="train")
def train(params: TrainParams) -> dict[str, Any]:
    """Train the audio and video encoders on mined shards."""
    logger = get_run_logger()
    params = resolve_train_params(params)
    logger.info(
        "training %s on %s against frozen %s", params.config, params.shards, params.embedder
    )
    summary = train_encoders_task(params)
    logger.info("trained to step %s: %s", summary.get("step"), json.dumps(summary)[:500])
    publish_metrics(TRAIN_METRICS, summary, f"training of {params.config} in {params.out}")
    return summary


def resolve_eval_params(params: EvalParams) -> EvalParams:
    return _resolved(params, params.checkpoint)


def evaluate_from_params(params: EvalParams) -> dict[str, Any]:
    """:class:`EvalParams` -> :func:`trainer.evaluate.evaluate_checkpoint`."""
    from trainer.evaluate import evaluate_checkpoint

    params = resolve_eval_params(params)
    return evaluate_checkpoint(
        params.checkpoint,
        params.shards,
        embedder=get_embedder(params.embedder, params.device),
        batch_size=params.batch_size,
        device=params.device,
        classes=read_classes(params.classes),
    )


@task(name="evaluate-checkpoint")
def evaluate_checkpoint_task(params: EvalParams) -> dict[str, Any]:
    return evaluate_from_params(params)


@flow(name="eval")
def evaluate(params: EvalParams) -> dict[str, Any]:
    """Recall@1/5/10 (audio/video <-> text) and zero-shot accuracy of a checkpoint."""
    logger = get_run_logger()
    metrics = evaluate_checkpoint_task(resolve_eval_params(params))
    if params.out:
        atomic_write_json(Path(params.out), metrics)
    logger.info("eval: %s", json.dumps(metrics)[:800])
    publish_metrics(EVAL_METRICS, metrics, f"{params.checkpoint} on {params.shards}")
    return metrics
