"""Encoders: shapes from every config, unit outputs, sizes in order, configs from paths."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.models import count_parameters, create_model, load_config

D = 32


def batch(cfg: dict, b: int = 3) -> dict:
    frames = round(cfg["audio"]["audio_seconds"] * 100)
    return {
        "audio": torch.randn(b, 1, cfg["audio"]["n_mels"], frames),
        "video": torch.nn.functional.normalize(torch.randn(b, cfg["video"]["n_frames"], D), dim=-1),
    }


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_shapes_and_unit_outputs(name):
    cfg = load_config(name)
    model = create_model(cfg, embed_dim=D).eval()
    with torch.no_grad():
        out = model(batch(cfg))
    for modality in ("audio", "video"):
        assert out[modality].shape == (3, D)
        assert out[modality].dtype == torch.float32
        torch.testing.assert_close(out[modality].norm(dim=-1), torch.ones(3))
    assert float(out["logit_scale"]) == pytest.approx(1 / 0.05)


def test_sizes_grow():
    sizes = [count_parameters(create_model(n, embed_dim=512)) for n in ("tiny", "small", "base")]
    assert sizes[0] < sizes[1] < sizes[2]
    assert sizes[0] < 1_000_000  # tiny trains on a CPU in seconds


def test_config_from_path_and_errors(tmp_path):
    cfg = load_config("tiny")
    cfg["audio"]["depth"] = 1
    cfg["audio"]["audio_seconds"] = 1.0
    cfg["learnable_temperature"] = True
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(cfg))
    model = create_model(path, embed_dim=D)
    assert len(model.audio.blocks.layers) == 1
    assert model.logit_scale.requires_grad
    assert model(batch(load_config(path)))["audio"].shape == (3, D)
    with pytest.raises(ValueError, match="no model config"):
        load_config("nope")
    with pytest.raises(ValueError, match="log-mels"):
        model(batch(load_config("tiny")))  # 2 s of audio into a 1 s model


def test_silent_clip_and_gradients_flow():
    cfg = load_config("tiny")
    model = create_model(cfg, embed_dim=D)
    b = batch(cfg)
    b["audio"][0] = 0.0  # a clip without audio arrives as zeros
    out = model(b)
    assert torch.isfinite(out["audio"]).all()
    (out["audio"].sum() + out["video"].sum()).backward()
    assert model.audio.patch_embed.weight.grad.abs().sum() > 0
    assert model.video_proj.weight.grad.abs().sum() > 0


def test_video_starts_at_mean_frame():
    """The video head is a zero-initialised residual on the mean frame feature."""
    cfg = load_config("tiny")
    model = create_model(cfg, embed_dim=D)
    b = batch(cfg)
    expected = torch.nn.functional.normalize(b["video"].mean(dim=1), dim=-1)
    torch.testing.assert_close(model(b)["video"], expected)
