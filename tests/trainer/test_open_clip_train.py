"""open_clip's own trainer reads capmine's shards as they are: one ``open_clip_train.main`` step
on CPU (ViT-S-32, random weights) on a tiny planted run, its epoch sized by ``sizes.json``."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from flows.params import MineParams
from shards.reader import iter_samples
from synth.planted import make_synthetic_set

EMBEDDER = "miners.embedders:pixel_embedder"
TRAIN_LINE = re.compile(r"Train Epoch: 0 \[\s*(\d+)/(\d+) \(100%\)\].*Contrastive_loss: (\S+)")


@pytest.fixture(scope="module")
def mined(tmp_path_factory, prefect_harness):
    from flows.mine import run_mine

    root = tmp_path_factory.mktemp("openclip")
    make_synthetic_set(root / "data", n_seeds=5, n_unplanted=1, n_videos=3, seconds=16.0,
                       broken=False)  # fmt: skip
    params = MineParams(
        seeds=str(root / "data" / "seeds"), videos=str(root / "data" / "videos.txt"),
        out=str(root / "out"), embedder=EMBEDDER, threshold=0.6, shard_size=2, clip_seconds=4.0,
        device="cpu", filters="none",
    )  # fmt: skip
    run_mine(params)
    return root / "out"


def test_sizes_json_counts_the_samples_of_every_tar(mined):
    shard_dir = mined / "shards"
    sizes = json.loads((shard_dir / "sizes.json").read_text())
    tars = sorted(p.name for p in shard_dir.glob("*.tar"))
    assert len(tars) >= 2 and sorted(sizes) == tars
    assert sizes == {t: len(list(iter_samples(shard_dir / t))) for t in tars}
    assert sum(sizes.values()) >= 2


def test_one_open_clip_train_step_on_the_shards(mined, tmp_path):
    shard_dir = mined / "shards"
    sizes = json.loads((shard_dir / "sizes.json").read_text())
    total = sum(sizes.values())
    last = max(int(t.removesuffix(".tar")) for t in sizes)
    cmd = [sys.executable, "-m", "open_clip_train.main", "--dataset-type", "webdataset",
           "--train-data", f"{shard_dir}/{{00000..{last:05d}}}.tar",  # no --train-num-samples
           "--model", "ViT-S-32", "--batch-size", str(total), "--epochs", "1", "--workers", "0",
           "--precision", "fp32", "--device", "cpu", "--warmup", "1", "--seed", "0",
           "--logs", str(tmp_path / "logs"), "--name", "step"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log_dir = tmp_path / "logs" / "step"
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        log = (log_dir / "out.log").read_text()
        assert "train_num_samples: None" in log  # the epoch's size came from sizes.json
        lines = [m.groups() for m in TRAIN_LINE.finditer(log)]
        assert len(lines) == 1, log[-3000:]
        seen, per_epoch, loss = lines[0]
        assert int(seen) == int(per_epoch) == total  # one batch of every sample sizes.json names
        assert math.isfinite(float(loss)) and float(loss) > 0
        assert (log_dir / "checkpoints" / "epoch_1.pt").stat().st_size > 1_000_000
    finally:
        shutil.rmtree(log_dir / "checkpoints", ignore_errors=True)  # the optimizer state: 0.7 GB
