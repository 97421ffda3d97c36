"""Loudness on generated sound: a tone is kept, digital silence and a whisper are not."""

from __future__ import annotations

import pytest

from filters.audio import SILENCE_DB, AudioFilter
from tests.filters import make_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    return {
        "tone": make_clip(d, "tone", "testsrc2", audio="sine=frequency=440"),
        "silence": make_clip(d, "silence", "testsrc2", audio="anullsrc"),
        "whisper": make_clip(d, "whisper", "testsrc2", af="volume=0.001"),
        "mute": make_clip(d, "mute", "testsrc2", audio=None),
    }


def test_tone_kept_silence_dropped(clips):
    recs = list(clips.values())
    AudioFilter()(recs)
    by_key = {r.key: r for r in recs}
    assert by_key["tone"].status == "ok"
    assert -25 < by_key["tone"].scores["audio_rms_db"] < -5  # lavfi's sine is 1/8 full scale
    assert by_key["silence"].reason == "silent"
    assert by_key["silence"].scores["audio_rms_db"] == SILENCE_DB
    assert by_key["whisper"].reason == "silent"
    assert by_key["mute"].status == "ok" and by_key["mute"].scores == {"has_audio": 0.0}


def test_require_audio_drops_mute_clips(clips):
    rec = clips["mute"]
    rec.status, rec.reason = "ok", None
    AudioFilter(require_audio=True)([rec])
    assert rec.reason == "no_audio"


def test_unreadable_flac_fails_the_clip_closed(tmp_path, clips):
    rec = make_clip(tmp_path, "broken", "testsrc2", seconds=1)
    open(rec.flac, "wb").write(b"not a flac")  # noqa: SIM115
    f = AudioFilter()
    f([rec])
    assert rec.status == "failed" and f.stats()["errors"] == 1
    assert rec.error.startswith("filter audio: ") and "broken" in rec.error
