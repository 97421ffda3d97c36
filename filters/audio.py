"""Loudness: drop clips whose sound is (near) silence.

The score is the RMS level of the clip's flac in dBFS (a full-scale sine is
-3 dBFS); digital silence is floored at ``SILENCE_DB`` so the score stays a
finite number in JSON. A clip cut from a video without sound has no flac: it
scores ``has_audio = 0`` and is kept unless ``require_audio`` is set.
"""

from __future__ import annotations

import numpy as np

from filters.base import Filter, FilterContext
from media.audio import decode_audio
from shards.record import ClipRecord

SILENCE_DB = -120.0  # floor of the score: a float32 of digital zeros


def rms_db(samples: np.ndarray) -> float:
    """RMS level of float samples in [-1, 1], in dBFS, floored at SILENCE_DB."""
    if samples.size == 0:
        return SILENCE_DB
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(SILENCE_DB, 20.0 * np.log10(max(rms, 1e-12)))


class AudioFilter(Filter):
    name = "audio"
    score_names = ("has_audio", "audio_rms_db")

    # dBFS; below -> silent (None: no bound); quiet room tone sits around -60, speech around -25
    min_rms_db: float | None = -50.0
    require_audio: bool = False  # drop clips whose video has no sound at all, as no_audio

    def is_scored(self, record: ClipRecord) -> bool:
        s = record.scores
        return s.get("has_audio") == 0.0 or all(n in s for n in self.score_names)

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.flac:
            return {"has_audio": 0.0}
        return {"has_audio": 1.0, "audio_rms_db": rms_db(decode_audio(record.flac))}

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        if scores.get("has_audio") == 0.0:
            return "no_audio" if self.require_audio else None
        if self.min_rms_db is not None and scores["audio_rms_db"] < self.min_rms_db:
            return "silent"
        return None
