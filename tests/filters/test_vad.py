"""silero-vad on speech synthesised by espeak-ng, against a tone and noise."""

from __future__ import annotations

import shutil

import pytest

from filters.vad import VadFilter
from tests.filters import ffmpeg, make_clip

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed: no speech to test with"
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    import subprocess

    pytest.importorskip("silero_vad")
    d = tmp_path_factory.mktemp("vad")
    wav = d / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "The quick brown fox jumps over the lazy dog. "
         "Filters score clips and selection decides which of them we keep."],
        check=True,
    )  # fmt: skip
    speech = make_clip(d, "speech", "testsrc2", audio=None)
    speech.flac = str(d / "speech.flac")
    ffmpeg("-i", str(wav), "-ar", "16000", "-ac", "1", speech.flac)
    return [
        speech,
        make_clip(d, "tone", "testsrc2", audio="sine=frequency=440"),
        make_clip(d, "noise", "testsrc2", audio="anoisesrc=amplitude=0.3"),
    ]


def test_speech_scores_high_tone_and_noise_low(clips):
    VadFilter()(clips)
    speech, tone, noise = (r.scores["speech_fraction"] for r in clips)
    assert speech > 0.6
    assert tone < 0.1 and noise < 0.1
    assert all(r.status == "ok" for r in clips)  # no bounds by default


def test_bounds_pick_speech_or_scene_sound(clips):
    for r in clips:
        r.status, r.reason = "ok", None
    VadFilter(min_speech=0.5)(clips)
    assert [r.reason for r in clips] == [None, "no_speech", "no_speech"]
    for r in clips:
        r.status, r.reason = "ok", None
    VadFilter(max_speech=0.5)(clips)
    assert [r.reason for r in clips] == ["speech", None, None]


def test_bounds_are_fractions():
    with pytest.raises(ValueError, match="'min_speech'"):
        VadFilter(min_speech=5)


def test_threads_score_alike_with_a_model_each(clips):
    # stage tasks filter in threads: silero's model is stateful, so each thread needs its own
    from concurrent.futures import ThreadPoolExecutor

    from filters.vad import _model, speech_fraction
    from media.audio import decode_audio

    audio = [decode_audio(c.flac) for c in clips]
    alone = [speech_fraction(a) for a in audio]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: speech_fraction(audio[i % 3]), range(24)))
        models = set(pool.map(lambda _: id(_model()), range(8)))
    assert together == [alone[i % 3] for i in range(24)]
    assert id(_model()) not in models  # the pool threads did not borrow this thread's model
