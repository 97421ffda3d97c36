"""The trainer end to end on synthetic class shards: it learns, resumes exactly, runs DDP."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import trainer.train
from miners.embedders import PixelEmbedder
from synth.shardgen import make_class_shards
from trainer.evaluate import evaluate_checkpoint, recall_at_k
from trainer.features import precompute_features
from trainer.train import train_encoders

EMBEDDER_ID = "miners.embedders:pixel_embedder"
FAST = dict(
    config="tiny",
    precision="fp32",
    device="cpu",
    num_workers=0,
    embedder_id=EMBEDDER_ID,
)


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> dict:
    """8 classes: training shards (seed 0) and held-out shards of the same generator (seed 1).

    A few clips of each set have no audio, so the masks are exercised too.
    """
    root = tmp_path_factory.mktemp("classes")
    train_set = make_class_shards(
        root / "train", per_class=12, n_shards=2, seed=0, with_audio_fraction=0.9
    )
    held = make_class_shards(
        root / "heldout", per_class=4, n_shards=1, seed=1, with_audio_fraction=0.75
    )
    return {"train": train_set, "heldout": held}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """16 clips in 2 shards, for the resume and DDP runs, whose features are cached once."""
    root = tmp_path_factory.mktemp("small")
    data = make_class_shards(root, n_classes=4, per_class=4, n_shards=2, with_audio_fraction=0.75)
    return {
        **data,
        "cache_dir": precompute_features(data["pattern"], PixelEmbedder(), embedder_id=EMBEDDER_ID),
    }


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_recall_at_k_definition():
    q = torch.eye(3)
    assert recall_at_k(q, q, ks=(1,)) == {"R@1": 1.0}
    g = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])  # items 0 and 1 swapped
    assert recall_at_k(q, g, ks=(1, 2)) == {"R@1": pytest.approx(1 / 3), "R@2": 1.0}
    pos = torch.tensor([[False, True, False], [True, False, False], [False, False, True]])
    assert recall_at_k(q, g, ks=(1,), positives=pos) == {"R@1": 1.0}


def test_learns_classes_and_generalises(classes, tmp_path):
    """A few dozen CPU steps of tiny learn the tone of each class, on clips never seen."""
    out = tmp_path / "run"
    summary = train_encoders(
        shards=classes["train"]["pattern"],
        out=out,
        embedder=PixelEmbedder(),
        steps=60,
        batch_size=32,
        lr=2e-3,
        warmup=10,
        log_every=10,
        ckpt_every=30,
        **{**FAST, "num_workers": 2},
    )
    assert summary["step"] == 60
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(10, 61, 10))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert {"audio_text", "video_image", "lr", "samples_per_s", "peak_memory_mb"} <= set(rows[0])
    assert (out / "step_30.pt").exists() and (out / "last.pt").exists()

    held = classes["heldout"]
    result = evaluate_checkpoint(
        out / "last.pt",
        held["pattern"],
        embedder=PixelEmbedder(),
        batch_size=32,
        device="cpu",
        classes=held["classes"],
        class_labels=held["labels"],
    )
    print(json.dumps(result))
    assert result["n_clips"] == 32 and result["n_with_audio"] == 24 and result["n_captions"] == 8
    assert result["audio_text_R@1"] >= 0.8
    assert result["video_text_R@1"] >= 0.8
    assert result["zeroshot_audio_acc"] >= 0.8


def test_resume_is_exact(small, tmp_path):
    kw = dict(shards=small["pattern"], cache_dir=small["cache_dir"], steps=8, batch_size=8)
    kw.update(warmup=2, log_every=1, ckpt_every=100, lr=1e-3, **FAST)
    straight = train_encoders(out=tmp_path / "straight", **kw)
    first = train_encoders(out=tmp_path / "resumed", stop_after=4, **kw)
    assert first["step"] == 4
    second = train_encoders(out=tmp_path / "resumed", **kw)
    assert second["start_step"] == 4 and second["step"] == 8
    assert second["final"]["loss"] == pytest.approx(straight["final"]["loss"], abs=1e-6)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, atol=1e-6, rtol=1e-5)
    # the metrics file reads as one run: steps 1..8 once each, equal to the straight run
    rows_a, rows_b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in rows_b] == list(range(1, 9))
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6)


class ModelBuilt(Exception):
    """Raised by the spy in place of building the model: the test has what it came for."""


def test_embedding_width_comes_from_the_cache_metadata(small, tmp_path, monkeypatch):
    """The model is sized by the cache's meta.json, never by a batch; a resumed
    checkpoint of another width is refused."""
    cache = shutil.copytree(small["cache_dir"], tmp_path / "cache")
    meta = json.loads((cache / "meta.json").read_text())
    kw = dict(shards=small["pattern"], cache_dir=cache, batch_size=8, warmup=1, **FAST)
    summary = train_encoders(out=tmp_path / "run", steps=1, **kw)
    ckpt = torch.load(summary["checkpoint"], weights_only=False)
    assert ckpt["embed_dim"] == meta["dim"] == PixelEmbedder().dim

    # The cached arrays keep their width; only the metadata says otherwise.
    (cache / "meta.json").write_text(json.dumps({**meta, "dim": meta["dim"] + 8}))
    with pytest.raises(ValueError, match="meta.json"):
        train_encoders(out=tmp_path / "run", steps=2, **kw)

    widths = []

    def spy(config, embed_dim):
        widths.append(embed_dim)
        raise ModelBuilt

    monkeypatch.setattr(trainer.train, "create_model", spy)
    with pytest.raises(ModelBuilt):
        train_encoders(out=tmp_path / "fresh", steps=1, **kw)
    assert widths == [meta["dim"] + 8]  # a batch would have said meta["dim"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, kw: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    train_encoders(**kw)


def test_ddp_two_processes_match_one(small, tmp_path):
    """Two gloo ranks, each on half of the global batch, follow the one-process run."""
    kw = dict(shards=small["pattern"], cache_dir=small["cache_dir"], steps=3, batch_size=8)
    kw.update(warmup=1, log_every=1, **FAST)
    single = train_encoders(out=tmp_path / "single", **kw)
    mp.spawn(_ddp_rank, args=(2, free_port(), {**kw, "out": tmp_path / "ddp"}), nprocs=2)
    ddp = torch.load(tmp_path / "ddp" / "last.pt", weights_only=False)
    assert ddp["step"] == 3
    rows_1, rows_2 = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in rows_2] == [1, 2, 3]
    for r1, r2 in zip(rows_1, rows_2, strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], abs=1e-4)
    one = torch.load(tmp_path / "single" / "last.pt", weights_only=False)["model"]
    for name, value in ddp["model"].items():
        torch.testing.assert_close(value, one[name], atol=1e-4, rtol=1e-3)
    assert single["world_size"] == 1


def test_loader_workers_none_on_a_cpu_half_the_cores_a_gpu(monkeypatch):
    from trainer import train as train_module

    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda _: set(range(16)))
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert train_module.loader_workers(None, cpu) == 0
    assert train_module.loader_workers(3, cpu) == 3  # asked for wins
    assert train_module.loader_workers(None, cuda) == 8
    assert train_module.loader_workers(None, cuda, world=4) == 2
    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda _: {0})
    assert train_module.loader_workers(None, cuda) == 1
