"""The training flows: train and eval on shards, and mine -> train -> eval end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from synth.shardgen import make_class_shards

EMBEDDER = "miners.embedders:pixel_embedder"


@pytest.fixture(scope="module")
def class_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    return make_class_shards(root, n_classes=4, per_class=6, n_shards=2, seed=0)


def test_train_flow_uses_the_recorded_embedder_and_eval_reads_the_checkpoint(
    class_shards, tmp_path, prefect_harness
):
    from flows.train import EvalParams, TrainParams, evaluate, train
    from trainer.inputs import resolve_embedder

    assert resolve_embedder(None, class_shards["pattern"]) == EMBEDDER  # from OUT/seeds.json
    run = tmp_path / "run"
    summary = train(TrainParams(shards=class_shards["pattern"], out=str(run), config="tiny", steps=6,
                                batch_size=8, warmup=1, device="cpu", num_workers=0,
                                ckpt_every=3, log_every=1, precision="fp32"))  # fmt: skip
    assert (run / "last.pt").exists() and summary
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and lines[-1]["step"] >= 5 and "loss" in lines[-1]
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(class_shards["classes"]) + "\n")
    metrics = evaluate(EvalParams(checkpoint=str(run / "last.pt"), shards=class_shards["pattern"],
                                  classes=str(classes), device="cpu", out=str(tmp_path / "eval.json")))  # fmt: skip
    flat = json.dumps(metrics)
    for name in ("audio", "video", "text"):
        assert name in flat
    assert json.loads((tmp_path / "eval.json").read_text()) == json.loads(json.dumps(metrics))


def test_torchrun_and_the_prefect_task_take_one_path(tmp_path, monkeypatch):
    """Under torchrun the CLI skips Prefect, but calls what the task calls."""
    import flows.train
    from flows.cli import cmd_train

    calls = []
    monkeypatch.setattr(flows.train, "train_from_params", lambda p: calls.append(p) or {"step": 0})
    params = flows.train.TrainParams(shards=str(tmp_path / "00000.tar"), out=str(tmp_path))
    assert flows.train.train_encoders_task.fn(params) == {"step": 0}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cmd_train(argparse.Namespace(shards=params.shards, out=params.out)) == 0
    assert calls == [params, params]
    assert flows.train.train_encoders_task.name == "train-encoders"
    assert flows.train.evaluate_checkpoint_task.name == "evaluate-checkpoint"
    assert (flows.train.train.name, flows.train.evaluate.name) == ("train", "eval")


def test_mine_and_train_from_the_cli(tmp_path, prefect_harness):
    from synth.planted import make_synthetic_set

    make_synthetic_set(
        tmp_path / "data", n_seeds=6, n_unplanted=1, n_videos=3, seconds=24.0, broken=False
    )
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "mine-and-train", "--seeds", str(tmp_path / "data" / "seeds"),
         "--videos", str(tmp_path / "data" / "videos.txt"), "--out", str(tmp_path / "out"),
         "--embedder", EMBEDDER, "--threshold", "0.6", "--clip-seconds", "4", "--shard-size", "3",
         "--device", "cpu", "--run", str(run), "--config", "tiny", "--steps", "4",
         "--train-batch-size", "4", "--num-workers", "0", "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "last.pt").exists()
    held_out = json.loads((run / "eval.json").read_text())
    assert held_out
    shards = sorted((tmp_path / "out" / "shards").glob("*.tar"))
    assert len(shards) >= 2  # some to train on, one held out
