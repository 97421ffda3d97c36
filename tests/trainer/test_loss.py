"""InfoNCE and BindLoss: known values, symmetry, masks, and DDP gathering."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainer.loss import BindLoss, info_nce


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_matched_well_separated_is_near_zero():
    a = torch.eye(8, 16)  # orthogonal rows: the match scores 1, every other pair 0
    assert float(info_nce(a, a.clone(), 0.01)) < 1e-6


@pytest.mark.parametrize("b", [1, 4, 33])
def test_equal_logits_give_ln_b(b):
    a = F.normalize(torch.ones(b, 8), dim=-1)  # every pair scores the same
    assert float(info_nce(a, a, 0.05)) == pytest.approx(math.log(b), abs=1e-6)


def test_symmetric():
    a, b = unit(10, 16, seed=1), unit(10, 16, seed=2)
    assert float(info_nce(a, b, 0.1)) == pytest.approx(float(info_nce(b, a, 0.1)), abs=1e-6)
    # and it is the mean of the two directions
    logits = a @ b.T / 0.1
    target = torch.arange(10)
    both = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert float(info_nce(a, b, 0.1)) == pytest.approx(float(both), abs=1e-6)


def scaled(feats: dict, temperature: float) -> dict:
    """The features with the model's ``logit_scale`` for ``temperature``, as BindModel gives them."""
    return {**feats, "logit_scale": torch.tensor(1.0 / temperature)}


def fixed_batch(n: int = 8, d: int = 16) -> tuple[dict, dict]:
    feats = {"audio": unit(n, d, seed=3), "video": unit(n, d, seed=4)}
    batch = {
        "text": unit(n, d, seed=5),
        "image": unit(n, d, seed=6),
        "has_audio": torch.tensor([True, False, True, True, False, True, True, True][:n]),
    }
    return feats, batch


def test_audio_terms_masked():
    feats, batch = fixed_batch()
    out = BindLoss()(scaled(feats, 0.1), batch)
    m = batch["has_audio"]
    expected = info_nce(feats["audio"][m], batch["text"][m], 0.1)
    assert float(out["audio_text"]) == pytest.approx(float(expected), abs=1e-6)
    # video terms use every clip
    expected = info_nce(feats["video"], batch["image"], 0.1)
    assert float(out["video_image"]) == pytest.approx(float(expected), abs=1e-6)
    terms = [out[k] for k in ("audio_text", "audio_image", "video_text", "video_image")]
    assert float(out["loss"]) == pytest.approx(float(sum(terms) / 4), abs=1e-6)
    # a clip without audio changes nothing, whatever its audio embedding
    feats["audio"][1] = -feats["audio"][0]
    assert float(BindLoss()(scaled(feats, 0.1), batch)["audio_text"]) == pytest.approx(
        float(out["audio_text"]), abs=1e-6
    )


def test_no_audio_at_all_is_zero_with_a_graph():
    feats, batch = fixed_batch()
    feats["audio"].requires_grad_(True)
    batch["has_audio"][:] = False
    out = BindLoss()(scaled(feats, 0.05), batch)
    assert float(out["audio_text"].detach()) == 0.0
    out["loss"].backward()
    assert feats["audio"].grad is not None


def test_weights_and_logit_scale_from_the_model():
    feats, batch = fixed_batch()
    loss = BindLoss(weights={("video", "text"): 2.0})
    out = loss({**feats, "logit_scale": torch.tensor(10.0)}, batch)
    assert set(out) == {"video_text", "loss"}
    expected = info_nce(feats["video"], batch["text"], 0.1)
    assert float(out["loss"]) == pytest.approx(float(expected), abs=1e-6)


def test_without_the_models_logit_scale_is_an_error():
    """The model owns the temperature: BindLoss has none of its own to fall back on."""
    feats, batch = fixed_batch()
    with pytest.raises(ValueError, match=r"features\['logit_scale'\]"):
        BindLoss()(feats, batch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_loss(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        feats, batch = fixed_batch()
        n = len(batch["text"]) // world
        part = slice(rank * n, (rank + 1) * n)
        local = {k: v[part].clone().requires_grad_(True) for k, v in feats.items()}
        out = BindLoss()(scaled(local, 0.1), {k: v[part] for k, v in batch.items()})
        out["loss"].backward()
        # DDP averages gradients over ranks: the mean of these equals the global gradient
        results[rank] = (float(out["loss"].detach()), {k: v.grad.clone() for k, v in local.items()})
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_gathered_loss_equals_global_loss():
    world = 2
    results = mp.Manager().dict()
    mp.spawn(_rank_loss, args=(world, free_port(), results), nprocs=world, join=True)

    feats, batch = fixed_batch()
    feats = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    out = BindLoss()(scaled(feats, 0.1), batch)
    out["loss"].backward()
    for rank in range(world):
        assert results[rank][0] == pytest.approx(float(out["loss"].detach()), abs=1e-6)
    for k in feats:
        # rank r's gradient reaches its own rows only, scaled by the world size
        # so that DDP's mean over ranks gives the single-process gradient
        grads = torch.cat([results[r][1][k] for r in range(world)])
        torch.testing.assert_close(grads / world, feats[k].grad, atol=1e-6, rtol=1e-5)
