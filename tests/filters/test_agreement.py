"""Caption vs frames, with a test embedder that knows colour words."""

from __future__ import annotations

import numpy as np
import pytest

from filters.agreement import AgreementFilter
from filters.base import FilterChain, FilterContext
from tests.filters import make_clip

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class ColourEmbedder:
    """Images embed as their mean colour (grey removed); a caption as the colours it names."""

    dim = 3
    image_size = 32

    def __init__(self):
        self.image_calls = 0

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
        self.image_calls += 1
        x = images.reshape(len(images), -1, 3).mean(axis=1) / 255.0
        return self._unit(x - x.mean(axis=1, keepdims=True))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 3), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                if word in COLOURS:
                    picture = np.full((1, 32, 32, 3), COLOURS[word], np.uint8)
                    self.image_calls -= 1  # not a clip frame
                    out[i] += self.embed_images(picture)[0]
        return self._unit(out)

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_caption_matches_its_clip_or_not(tmp_path):
    recs = [
        make_clip(tmp_path, "red_ok", "color=c=red", caption="a red wall"),
        make_clip(tmp_path, "red_bad", "color=c=red", caption="a green field"),
        make_clip(tmp_path, "blue_ok", "color=c=blue", caption="the blue sea"),
        make_clip(tmp_path, "no_colour", "color=c=blue", caption="something"),
    ]
    embedder = ColourEmbedder()
    chain = FilterChain([AgreementFilter()], FilterContext(embedder=embedder))
    chain(recs)
    assert [r.reason for r in recs] == [None, "caption_mismatch", None, "caption_mismatch"]
    assert recs[0].scores["caption_similarity"] > 0.9
    assert recs[1].scores["caption_similarity"] < 0
    assert embedder.image_calls == 4  # frames decoded and embedded once per clip


def test_bounds_and_reduce(tmp_path):
    rec = make_clip(tmp_path, "half", ["color=c=red", "color=c=blue"], caption="red", seconds=4)
    ctx = FilterContext(embedder=ColourEmbedder())
    FilterChain([AgreementFilter(reduce="mean", min_similarity=None)], ctx)([rec])
    mean = rec.scores.pop("caption_similarity")
    FilterChain([AgreementFilter(reduce="max", min_similarity=None)], ctx)([rec])
    assert rec.scores["caption_similarity"] > 0.9 > mean
    with pytest.raises(ValueError, match="'reduce'"):
        AgreementFilter(reduce="median")
