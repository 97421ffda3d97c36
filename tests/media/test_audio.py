"""Audio decoding: FLAC buffers and files back to the samples that were encoded."""

from __future__ import annotations

import numpy as np
import pytest

from media import MediaError
from media.audio import decode_audio, decode_audio_many
from synth.testmedia import flac_bytes, sine_wave


def test_decode_a_buffer_round_trip():
    wave = sine_wave(700.0, 0.5)
    out = decode_audio(flac_bytes(wave))
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert np.abs(out - wave).max() < 1e-3  # 16-bit FLAC quantisation


def test_garbage_is_a_media_error():
    with pytest.raises(MediaError):
        decode_audio(b"not audio at all" * 20)


def test_many_buffers_in_chunks_and_a_bad_one_isolated():
    waves = [sine_wave(300.0 + 100 * i, 0.25) for i in range(5)]
    items = [flac_bytes(w) for w in waves]
    items[2] = b"garbage" * 50
    out = decode_audio_many(items, chunk=4)
    assert isinstance(out[2], MediaError)
    for i in (0, 1, 3, 4):
        assert np.abs(out[i] - waves[i]).max() < 1e-3


def test_a_file_decodes_like_its_bytes_and_its_error_names_it(tmp_path):
    wave = sine_wave(440.0, 0.5)
    path = tmp_path / "tone.flac"
    path.write_bytes(flac_bytes(wave))
    np.testing.assert_array_equal(decode_audio(path), decode_audio(path.read_bytes()))
    (tmp_path / "bad.flac").write_bytes(b"\0" * 100)
    with pytest.raises(MediaError, match="bad.flac"):
        decode_audio(tmp_path / "bad.flac")
