"""Audio and video encoders that land in a frozen CLIP space (ImageBind's recipe).

A model is built from a small JSON config (``trainer/configs/*.json``, as
open_clip's ``model_configs/``) and the CLIP width ``embed_dim`` of the embedder
the shards were mined with:

* :class:`AudioEncoder`: a ViT over 16x16 patches of a log-mel spectrogram
  (128 bins, 10 ms hop), as AST and ImageBind's audio tower;
* :class:`VideoEncoder`: a small temporal transformer over frozen per-frame CLIP
  features, added to their mean, so it starts as "the average frame" and learns
  what time adds;
* :class:`BindModel`: both, each with a linear projection into the CLIP space,
  and the logit scale of the contrastive loss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_DIR = Path(__file__).parent / "configs"

# Clamp the logit scale at 100 (temperature 0.01), as CLIP does, so a learnable
# temperature cannot run away.
MAX_LOGIT_SCALE = math.log(100.0)


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """A config by name (``"tiny"``, ``"small"``, ``"base"``) or by path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"no model config {name_or_path!r} (known: {known}, or a .json path)")
    config = json.loads(path.read_text())
    for section, keys in {
        "audio": ("n_mels", "patch", "width", "depth", "heads", "audio_seconds"),
        "video": ("width", "depth", "heads", "n_frames"),
    }.items():
        missing = [k for k in keys if k not in config.get(section, {})]
        if missing:
            raise ValueError(f"config {path}: {section} lacks {missing}")
    config.setdefault("temperature", 0.05)
    config.setdefault("learnable_temperature", False)
    return config


def _transformer(width: int, depth: int, heads: int) -> nn.TransformerEncoder:
    """Pre-norm transformer blocks (ViT style), batch first, no dropout."""
    layer = nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=4 * width,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class AudioEncoder(nn.Module):
    """ViT over log-mel patches: (B, 1, n_mels, frames) -> (B, width) from the CLS token."""

    def __init__(
        self,
        *,
        n_mels: int = 128,
        patch: int = 16,
        width: int = 256,
        depth: int = 6,
        heads: int = 4,
        audio_seconds: float = 2.0,
    ):
        super().__init__()
        self.n_mels = n_mels
        self.frames = round(audio_seconds * 100)  # 10 ms hop
        self.grid = (n_mels // patch, self.frames // patch)
        self.width = width
        self.patch_embed = nn.Conv2d(1, width, kernel_size=patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid[0] * self.grid[1], width) * 0.02)
        self.blocks = _transformer(width, depth, heads)
        self.norm = nn.LayerNorm(width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.shape[-2:] != (self.n_mels, self.frames):
            raise ValueError(
                f"expected (B, 1, {self.n_mels}, {self.frames}) log-mels, got {tuple(mel.shape)}"
            )
        # The data side already normalised the log-mels with fixed dataset constants
        # (trainer.audio.normalise, AST's), so loudness still means something here.
        x = self.patch_embed(mel).flatten(2).transpose(1, 2)  # (B, patches, width)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        x = self.blocks(x)
        return self.norm(x[:, 0])


class VideoEncoder(nn.Module):
    """Temporal transformer over frozen frame features: (B, T, dim) -> (B, width)."""

    def __init__(
        self, *, in_dim: int, width: int = 256, depth: int = 2, heads: int = 4, n_frames: int = 8
    ):
        super().__init__()
        self.n_frames = n_frames
        self.width = width
        self.proj_in = nn.Linear(in_dim, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 1 + n_frames, width) * 0.02)
        self.blocks = _transformer(width, depth, heads)
        self.norm = nn.LayerNorm(width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[1] > self.n_frames:
            raise ValueError(f"at most {self.n_frames} frames, got {frames.shape[1]}")
        x = self.proj_in(frames)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos[:, : 1 + x.shape[1]]
        x = self.blocks(x)
        return self.norm(x[:, 0])


class BindModel(nn.Module):
    """Both encoders with linear projections into the frozen CLIP space of width ``embed_dim``."""

    def __init__(self, config: dict[str, Any], embed_dim: int):
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        self.audio = AudioEncoder(**config["audio"])
        self.video = VideoEncoder(in_dim=embed_dim, **config["video"])
        self.audio_proj = nn.Linear(self.audio.width, embed_dim, bias=False)
        self.video_proj = nn.Linear(self.video.width, embed_dim, bias=False)
        # The video head is a residual on the mean frame feature: zero at the
        # start, so training begins from "the average CLIP frame".
        nn.init.zeros_(self.video_proj.weight)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / config.get("temperature", 0.05))),
            requires_grad=bool(config.get("learnable_temperature", False)),
        )

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_proj(self.audio(mel)).float(), dim=-1)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        mean_frame = F.normalize(frames.float().mean(dim=1), dim=-1)
        out = self.video_proj(self.video(frames)).float() + mean_frame
        return F.normalize(out, dim=-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Unit ``audio`` and ``video`` embeddings (B, embed_dim), float32, and ``logit_scale``."""
        return {
            "audio": self.encode_audio(batch["audio"]),
            "video": self.encode_video(batch["video"]),
            "logit_scale": self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp(),
        }


def create_model(config: str | Path | dict[str, Any], embed_dim: int) -> BindModel:
    """A :class:`BindModel` from a config name, path or dict, for a CLIP space of width ``embed_dim``."""
    if not isinstance(config, dict):
        config = load_config(config)
    return BindModel(config, embed_dim)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
