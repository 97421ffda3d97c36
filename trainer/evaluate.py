"""Retrieval and zero-shot evaluation of a trained checkpoint on held-out shards.

:func:`evaluate_checkpoint` runs three plain steps: :func:`embed` (the model over
the held-out loader), :func:`retrieve` (recall@k in every direction) and
:func:`zero_shot` (nearest class prompt).

Retrieval is between clips and their captions. Many clips share a caption (one
seed caption is transferred to several clips), so the caption gallery holds each
distinct caption once: audio->text is a hit when the clip's own caption is in the
top k; text->audio is a hit when any clip carrying that caption is. Clips without
audio are left out of the audio directions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.data import make_loader
from trainer.features import precompute_features
from trainer.models import BindModel, create_model

log = logging.getLogger(__name__)

Labels = Mapping[str, int | str] | Callable[[str, str], int | None]


def recall_at_k(
    query: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    positives: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Fraction of queries with a match among their top-k gallery items, by dot product.

    Without ``positives``, query i's match is gallery item i; else ``positives``
    is an (Nq, Ng) boolean matrix and any True item counts.
    """
    q, g = torch.as_tensor(query).float(), torch.as_tensor(gallery).float()
    pos = torch.eye(len(q), len(g), dtype=torch.bool) if positives is None else positives
    pos = torch.as_tensor(pos).bool()
    # rank of the best positive: how many items score strictly above it
    sims = q @ g.T
    best_pos = sims.masked_fill(~pos, float("-inf")).max(dim=1).values
    rank = (sims > best_pos[:, None]).sum(dim=1)
    return {f"R@{k}": float((rank < k).float().mean()) for k in ks}


def _label_of(key: str, caption: str, classes: Sequence[str], class_labels: Labels | None):
    """A clip's class index: from ``class_labels`` (a mapping or callable) or its caption."""
    if callable(class_labels):
        return class_labels(key, caption)
    if class_labels is not None:
        label = class_labels.get(key)
        return classes.index(label) if isinstance(label, str) else label
    if caption in classes:
        return classes.index(caption)
    # else the longest class name the caption contains
    hits = [(len(c), i) for i, c in enumerate(classes) if c.lower() in caption.lower()]
    return max(hits)[1] if hits else None


@dataclass
class Embedded:
    """The model's embeddings of every held-out clip, in loader order, with the frozen
    text embedding of its (first) caption."""

    audio: torch.Tensor  # (N, D) unit rows
    video: torch.Tensor  # (N, D) unit rows
    text: torch.Tensor  # (N, D) unit rows
    has_audio: torch.Tensor  # (N,) bool
    keys: list[str]
    captions: list[str]


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[BindModel, dict[str, Any]]:
    """The checkpoint's model, in eval mode on ``device``, and the checkpoint itself."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = create_model(ckpt["config"], ckpt["embed_dim"])
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt


@torch.no_grad()
def embed(
    model: BindModel, loader: Iterable[dict[str, Any]], device: torch.device
) -> Embedded | None:
    """Run ``model`` over every batch of ``loader``; the embeddings come back on the CPU.
    None when the loader holds no clip."""
    audio, video, text, has_audio, keys, captions = [], [], [], [], [], []
    for batch in loader:
        feats = model({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
        audio.append(feats["audio"].cpu())
        video.append(feats["video"].cpu())
        text.append(torch.nn.functional.normalize(batch["text"].float(), dim=-1))
        has_audio.append(batch["has_audio"].bool())
        keys += list(batch["key"])
        captions += list(batch["caption"])
    if not keys:
        return None
    cat = torch.cat
    return Embedded(cat(audio), cat(video), cat(text), cat(has_audio), keys, captions)


def retrieve(emb: Embedded) -> dict[str, Any]:
    """Recall@1/5/10 in every direction between clips (audio, video) and captions.

    The caption gallery holds each distinct caption once (see the module doc); the
    audio directions use the clips with audio, and text->audio only the captions
    that at least one such clip carries.
    """
    unique = sorted(set(emb.captions))
    index = {c: i for i, c in enumerate(unique)}
    first: dict[str, int] = {}
    for i, c in enumerate(emb.captions):
        first.setdefault(c, i)
    gallery = emb.text[[first[c] for c in unique]]
    cap_idx = torch.tensor([index[c] for c in emb.captions])
    clip_to_cap = cap_idx[:, None] == torch.arange(len(unique))[None, :]  # (N, C)

    a = emb.has_audio
    result: dict[str, Any] = {"n_clips": len(emb.keys), "n_with_audio": int(a.sum())}
    result["n_captions"] = len(unique)
    # (query, gallery, positives) per direction
    heard = clip_to_cap[a].any(dim=0)
    directions = {}
    if a.any():
        directions["audio_text"] = (emb.audio[a], gallery, clip_to_cap[a])
        directions["text_audio"] = (gallery[heard], emb.audio[a], clip_to_cap[a].T[heard])
    directions["video_text"] = (emb.video, gallery, clip_to_cap)
    directions["text_video"] = (gallery, emb.video, clip_to_cap.T)
    for name, (query, items, positives) in directions.items():
        recall = recall_at_k(query, items, positives=positives)
        result.update({f"{name}_{k}": v for k, v in recall.items()})
    return result


def zero_shot(
    emb: Embedded, prompts: torch.Tensor, classes: Sequence[str], class_labels: Labels | None
) -> dict[str, float]:
    """Accuracy of the nearest class prompt (``prompts``: (K, D) frozen text embeddings of
    ``classes``), for audio (clips with audio) and video; clips with no class are left out."""
    prompts = torch.nn.functional.normalize(prompts.float(), dim=-1)
    labels = [
        _label_of(k, c, classes, class_labels) for k, c in zip(emb.keys, emb.captions, strict=True)
    ]
    known = torch.tensor([lab is not None for lab in labels])
    target = torch.tensor([-1 if lab is None else int(lab) for lab in labels])
    result = {}
    for name, feats, mask in (
        ("audio", emb.audio, known & emb.has_audio),
        ("video", emb.video, known),
    ):
        if mask.any():
            pred = (feats[mask] @ prompts.T).argmax(dim=1)
            result[f"zeroshot_{name}_acc"] = float((pred == target[mask]).float().mean())
    return result


def evaluate_checkpoint(
    checkpoint: str | Path,
    shards: str | list[str],
    *,
    cache_dir: Path | None = None,
    embedder: Any = None,
    batch_size: int = 64,
    device: str = "auto",
    classes: Sequence[str] | None = None,
    class_labels: Labels | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Recall@1/5/10 audio<->text and video<->text, and zero-shot accuracy when ``classes`` given.

    ``embedder`` (the frozen towers the model was trained against) precomputes the
    shards' features into ``cache_dir`` and embeds the class prompts; without it the
    cache must already exist, and ``classes`` cannot be used.
    ``class_labels`` maps a clip's key to its class (index or name), or is a
    callable ``(key, caption) -> index``; without it a clip's class is the class
    name its caption equals or contains. Clips with no class are left out.
    """
    if classes is not None and embedder is None:
        raise ValueError("zero-shot classification needs the embedder for the class prompts")
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    model, ckpt = load_model(checkpoint, dev)
    cfg = ckpt["config"]
    if embedder is not None:
        cache_dir = precompute_features(
            shards,
            embedder,
            embedder_id=ckpt.get("embedder_id") or type(embedder).__name__,
            n_frames=cfg["video"]["n_frames"],
            cache_dir=cache_dir,
        )
    if cache_dir is None:
        raise ValueError("pass an embedder or the cache_dir of the shards' features")
    loader = make_loader(
        shards,
        cache_dir=cache_dir,
        batch_size=batch_size,
        train=False,
        num_workers=num_workers,
        audio_seconds=cfg["audio"]["audio_seconds"],
    )
    emb = embed(model, loader, dev)
    if emb is None:
        # A small mining run can leave its held-out shards empty: report, don't crash.
        log.warning("evaluate: no clips in %s", shards)
        return {"n_clips": 0, "n_with_audio": 0, "n_captions": 0}
    result = retrieve(emb)
    if classes is not None:
        prompts = torch.as_tensor(np.asarray(embedder.embed_texts(list(classes))))
        result.update(zero_shot(emb, prompts, classes, class_labels))
    return result
