"""Audio for the audio encoder: FLAC bytes -> mono 16 kHz wave -> normalised log-mel.

The features follow AST / ImageBind (Kaldi-style filterbanks): 128 mel bins,
25 ms Hann window, 10 ms hop, power spectrum, natural log, so about 100 frames a
second. Everything is plain torch (no torchaudio), and FLAC is decoded by the
system ffmpeg through :mod:`media.audio` (no soundfile), so the trainer adds no dependency.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from media.audio import AUDIO_RATE as SAMPLE_RATE

N_MELS = 128
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms: 100 frames a second
LOG_EPS = 1e-6

# Normalisation constants: AST's AudioSet statistics (mean -4.27, std 4.57) for
# Kaldi fbank features of waves in [-1, 1]. Ours are on the same scale (power
# spectrum of a 25 ms window, peak-1 triangular mel filters, natural log); they
# differ by the window (Hann vs Povey) and no pre-emphasis, a shift well inside
# one std, so the constants keep inputs roughly zero-mean and unit-variance.
# Silence (log 1e-6 = -13.8) lands near -2.1.
MEL_MEAN = -4.27
MEL_STD = 4.57


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    mel = hz / f_sp
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(
        mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel
    )


def mel_centres(n_mels: int = N_MELS, f_min: float = 0.0, f_max: float = 8000.0) -> np.ndarray:
    """Centre frequency (Hz) of each mel filter of :func:`mel_filterbank`."""
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    return edges[1:-1]


def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = WIN_LENGTH,
    sr: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float = 8000.0,
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the Slaney mel scale, peak 1.

    Slaney, not HTK: with a 400-point FFT (40 Hz bins) and 128 HTK mels the lowest
    filters are narrower than a bin and come out empty; Slaney's linear part spaces
    them about 23 Hz apart (46 Hz wide), so every filter covers at least one bin.
    Peak-1 (no area normalisation) keeps the Kaldi scale that MEL_MEAN/MEL_STD assume.
    """
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    bins = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None] - lower) / (centre - lower)
    down = (upper - bins[None]) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(up, down))
    return torch.from_numpy(fb.astype(np.float32))


_FB_CACHE: dict[int, torch.Tensor] = {}


def log_mel(wave: torch.Tensor | np.ndarray, *, n_mels: int = N_MELS) -> torch.Tensor:
    """(samples,) float wave at 16 kHz -> (n_mels, frames) natural-log mel power.

    Frames are centred (``1 + samples // 160`` of them, reflect padding), so a
    2 s wave gives 201 frames. A wave shorter than one window is zero-padded.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32).flatten()
    if wave.numel() < WIN_LENGTH:
        wave = torch.nn.functional.pad(wave, (0, WIN_LENGTH - wave.numel()))
    spec = torch.stft(
        wave,
        n_fft=WIN_LENGTH,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        window=torch.hann_window(WIN_LENGTH),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2  # (n_fft // 2 + 1, frames)
    if n_mels not in _FB_CACHE:
        _FB_CACHE[n_mels] = mel_filterbank(n_mels)
    return torch.log(_FB_CACHE[n_mels] @ power + LOG_EPS)


def normalise(mel: torch.Tensor, mean: float = MEL_MEAN, std: float = MEL_STD) -> torch.Tensor:
    """Fixed dataset constants, not per-clip statistics: a quiet clip stays quiet."""
    return (mel - mean) / std


def clip_mel(wave: torch.Tensor | np.ndarray, *, n_mels: int = N_MELS) -> torch.Tensor:
    """A whole clip's audio-encoder input before cropping: its normalised log-mel, what
    the loader decodes a flac into and what :mod:`trainer.melcache` stores."""
    return normalise(log_mel(wave, n_mels=n_mels))


def fix_length(
    mel: torch.Tensor, frames: int, *, train: bool, rng: np.random.Generator | None = None
) -> torch.Tensor:
    """(n_mels, T) -> (n_mels, frames): a random window (``train``, drawn from ``rng``)
    or the centre one (eval); a short clip is zero-padded at the end (zero is the
    dataset mean once normalised)."""
    t = mel.shape[-1]
    if t >= frames:
        extra = t - frames
        if train:
            if rng is None:
                raise ValueError("fix_length(train=True) needs an rng")
            start = int(rng.integers(0, extra + 1))
        else:
            start = extra // 2
        return mel[..., start : start + frames]
    return torch.nn.functional.pad(mel, (0, frames - t))
