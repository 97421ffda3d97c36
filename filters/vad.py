"""Voice activity: the fraction of a clip's audio that silero-vad calls speech.

Use it either way: ``min_speech`` keeps talking clips (an ASR-style set),
``max_speech`` keeps clips whose sound is the scene rather than a narrator.
Both bounds are off by default: the score is recorded for selection later.
The silero model ships inside the ``silero-vad`` package (TorchScript), so it
loads offline. The model keeps state between the chunks of one clip, so two
threads must never share one (they would mix each other's state, and the
TorchScript module can crash the process when called concurrently): each
thread loads its own, on first use.
"""

from __future__ import annotations

import threading

from filters.base import Filter, FilterContext
from media.audio import AUDIO_RATE, decode_audio
from shards.record import ClipRecord

_local = threading.local()


def _model():
    """This thread's silero model (stateful: never shared between threads)."""
    import warnings

    from silero_vad import load_silero_vad

    if getattr(_local, "model", None) is None:
        with warnings.catch_warnings():  # the package's own deprecation notices, not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            _local.model = load_silero_vad()
    return _local.model


def speech_fraction(samples, threshold: float = 0.5, rate: int = AUDIO_RATE) -> float:
    """Share of ``samples`` (mono float32 at 16 kHz) inside silero-vad's speech segments."""
    import torch
    from silero_vad import get_speech_timestamps

    if len(samples) == 0:
        return 0.0
    with torch.inference_mode():
        segments = get_speech_timestamps(
            torch.from_numpy(samples.copy()), _model(), threshold=threshold, sampling_rate=rate
        )
    return min(1.0, sum(s["end"] - s["start"] for s in segments) / len(samples))


class VadFilter(Filter):
    name = "vad"
    score_names = ("speech_fraction",)

    min_speech: float | None = None  # fraction 0-1; below it -> no_speech (None: no bound)
    max_speech: float | None = None  # fraction 0-1; above it -> speech (None: no bound)
    threshold: float = 0.5  # silero's speech probability threshold (0-1), its own default

    def validate(self) -> None:
        for p in ("min_speech", "max_speech", "threshold"):
            v = getattr(self, p)
            if v is not None and not 0.0 <= v <= 1.0:
                self.fail(p, f"must be within [0, 1], not {v}")

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        if not record.flac:
            return {"speech_fraction": 0.0}  # no sound, no speech
        return {"speech_fraction": speech_fraction(decode_audio(record.flac), self.threshold)}

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        s = scores["speech_fraction"]
        if self.min_speech is not None and s < self.min_speech:
            return "no_speech"
        if self.max_speech is not None and s > self.max_speech:
            return "speech"
        return None
