"""Log-mel features: the tone's frequency says which bin must light up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.testmedia import sine_wave
from trainer.audio import (
    MEL_MEAN,
    MEL_STD,
    SAMPLE_RATE,
    fix_length,
    log_mel,
    mel_centres,
    mel_filterbank,
    normalise,
)


def test_filterbank_has_no_empty_filter():
    fb = mel_filterbank()
    assert fb.shape == (128, 201)
    assert (fb >= 0).all() and fb.max() <= 1.0 + 1e-6
    assert (fb.sum(dim=1) > 0).all()  # Slaney spacing: every filter covers an FFT bin
    assert np.all(np.diff(mel_centres()) > 0)


@pytest.mark.parametrize("seconds, frames", [(1.0, 101), (2.0, 201), (0.01, 3)])
def test_log_mel_is_128_bins_at_100_frames_a_second(seconds, frames):
    mel = log_mel(torch.from_numpy(sine_wave(440.0, seconds)))
    assert mel.shape == (128, frames)
    assert mel.dtype == torch.float32


@pytest.mark.parametrize("hz", [300.0, 1000.0, 3000.0, 6000.0])
def test_tone_peaks_in_its_mel_bin(hz):
    mel = log_mel(sine_wave(hz))
    peak = int(mel.mean(dim=1).argmax())
    expected = int(np.abs(mel_centres() - hz).argmin())
    assert abs(peak - expected) <= 1, (peak, expected, mel_centres()[peak])


def test_silence_is_the_log_floor_and_normalise_uses_fixed_constants():
    mel = log_mel(torch.zeros(SAMPLE_RATE))
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(1e-6))), atol=1e-4)
    assert torch.allclose(normalise(mel), (mel - MEL_MEAN) / MEL_STD)


def test_fix_length_crops_and_pads():
    mel = torch.arange(10.0).repeat(3, 1)  # (3, 10), column i holds i
    assert fix_length(mel, 4, train=False).tolist()[0] == [3.0, 4.0, 5.0, 6.0]  # centre
    starts = {
        int(fix_length(mel, 4, train=True, rng=np.random.default_rng(s))[0, 0]) for s in range(50)
    }
    assert starts <= set(range(7)) and len(starts) > 3  # random, always inside
    a = fix_length(mel, 4, train=True, rng=np.random.default_rng(7))
    b = fix_length(mel, 4, train=True, rng=np.random.default_rng(7))
    assert torch.equal(a, b)
    padded = fix_length(mel, 13, train=True, rng=np.random.default_rng(0))
    assert padded.shape == (3, 13)
    assert padded[0, :10].tolist() == list(range(10)) and padded[:, 10:].abs().sum() == 0
    with pytest.raises(ValueError):
        fix_length(mel, 4, train=True)
