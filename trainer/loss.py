"""Symmetric InfoNCE between the trained modalities and the frozen CLIP ones.

As ImageBind: each trained modality (audio, video) is pulled towards the frozen
text embedding of its caption and the frozen image embedding of its matched
frame, with the other clips of the (global) batch as negatives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer import distributed

DEFAULT_WEIGHTS: dict[tuple[str, str], float] = {
    ("audio", "text"): 1.0,
    ("audio", "image"): 1.0,
    ("video", "text"): 1.0,
    ("video", "image"): 1.0,
}


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b``; mean of both directions.

    ``a`` and ``b`` are (N, D) unit rows; with all logits equal the value is ln N.
    """
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class BindLoss(nn.Module):
    """Weighted mean of the InfoNCE terms over the global batch.

    ``forward(features, batch)`` takes the model's unit ``audio``/``video``
    features and ``logit_scale``, and the batch's frozen ``text``/``image`` ones
    (and ``has_audio``, which masks the audio terms), gathers them over DDP ranks,
    and returns ``{"loss": ..., "audio_text": ..., ...}``. The temperature is
    ``1 / features["logit_scale"]``: the model owns it (fixed or learnable, see
    its config), so a checkpoint holds the one that trained it.
    """

    def __init__(self, weights: dict[tuple[str, str], float] | None = None):
        super().__init__()
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)

    def forward(self, features: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "logit_scale" not in features:
            raise ValueError(
                "BindLoss needs features['logit_scale'] (the model's exp(logit scale), "
                f"1 / temperature); got only {sorted(features)}"
            )
        scale = features["logit_scale"]
        device = next(v for v in features.values() if torch.is_tensor(v)).device
        feats: dict[str, torch.Tensor] = {}
        for a, b in self.weights:
            for name in (a, b):
                if name not in feats:
                    x = features[name] if name in features else batch[name]
                    x = torch.as_tensor(x, device=device).float()
                    feats[name] = distributed.gather(F.normalize(x, dim=-1))
        has_audio = batch.get("has_audio")
        if has_audio is not None:
            has_audio = distributed.gather(torch.as_tensor(has_audio, device=device).bool())

        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=device)
        for (a, b), weight in self.weights.items():
            x, y = feats[a], feats[b]
            if "audio" in (a, b) and has_audio is not None:
                x, y = x[has_audio], y[has_audio]
            if len(x) == 0:
                # No clip with audio anywhere: a zero that keeps the graph, so
                # every parameter still gets a (zero) gradient under DDP.
                term = feats[a].sum() * 0.0
            else:
                term = info_nce(x, y, 1.0 / scale)
            out[f"{a}_{b}"] = term
            total = total + weight * term
        out["loss"] = total / sum(self.weights.values())
        return out
