"""``mine_and_train``: mine shards, train on them, evaluate on shards held out of training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.artifacts import publish_mine_and_train
from flows.mine import mine
from flows.params import MineParams
from flows.train import EvalParams, TrainParams, evaluate, train
from trainer.inputs import split_shards


class MineAndTrainParams(BaseModel):
    """Mining parameters, then training settings; shards are split by the flow."""

    model_config = ConfigDict(extra="forbid")

    mine: MineParams
    run: str = Field(description="Training run folder (checkpoints, metrics, eval.json)")
    config: str = Field("small", description="Model config: tiny, small, base, or a JSON file")
    steps: int = Field(1000, ge=1, description="Training steps")
    train_batch_size: int = Field(64, ge=2, description="Clips per training step")
    precision: str = Field(
        "bf16", pattern="^(bf16|fp16|fp32)$", description="Autocast precision on GPU"
    )
    holdout_shards: int = Field(
        1, ge=0, description="Last shards kept out of training for evaluation"
    )
    num_workers: int | None = Field(
        None,
        ge=0,
        description="Data loader worker processes (default: none on a CPU, where the step takes every core and cached inputs load in-process; on CUDA half the cores a GPU, at most 8)",
    )
    classes: str | None = Field(None, description="Class names file for zero-shot accuracy")


@flow(name="mine-and-train")
def mine_and_train(params: MineAndTrainParams) -> dict[str, Any]:
    """Mine (as ``capmine mine``), train on the shards, evaluate on the held-out ones."""
    logger = get_run_logger()
    report = mine(params.mine)  # on threads, or on Dask with --dask, as capmine mine
    train_shards, eval_shards = split_shards(
        Path(params.mine.out) / "shards", params.holdout_shards
    )
    if train_shards == eval_shards:
        logger.warning("only %d shard(s): evaluating on the training shards", len(train_shards))
    trained = train(TrainParams(
        shards="::".join(train_shards), out=params.run, embedder=params.mine.embedder,
        config=params.config, steps=params.steps, batch_size=params.train_batch_size,
        precision=params.precision, device=params.mine.device, num_workers=params.num_workers,
        warmup=min(100, params.steps // 10),
    ))  # fmt: skip
    metrics = evaluate(EvalParams(
        checkpoint=str(Path(params.run) / "last.pt"), shards="::".join(eval_shards),
        embedder=params.mine.embedder, classes=params.classes, device=params.mine.device,
        out=str(Path(params.run) / "eval.json"),
    ))  # fmt: skip
    result = {"mine": report, "train": trained, "eval": metrics}
    publish_mine_and_train(result)
    return result
