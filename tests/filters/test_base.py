"""The shared filter machinery: parameters, score reuse, errors, counts, pickling."""

from __future__ import annotations

import pickle

import pytest

from filters.audio import AudioFilter
from filters.base import Filter, FilterChain, FilterContext, reset_drops
from filters.motion import MotionFilter
from filters.text import TextFilter
from shards.record import ClipRecord


def record(key: str, **scores: float) -> ClipRecord:
    return ClipRecord(
        key=key, video="v.mp4", video_id="v", start=0.0, end=4.0, match_time=2.0,
        similarity=0.9, scores=dict(scores),
    )  # fmt: skip


class Loudness(Filter):
    """A filter whose score is a field of the key ("k-12" scores 12), counting its calls."""

    name = "loudness"
    score_names = ("level",)

    min_level: float = 10.0  # level units; below -> quiet
    strict: bool = False  # a flag, to check that flags stay flags
    tag: str = "x"  # a word, to check that strings stay strings

    def __init__(self, **params):
        super().__init__(**params)
        self.calls = 0

    def compute(self, r: ClipRecord, context: FilterContext) -> dict[str, float]:
        self.calls += 1
        if r.key.endswith("bad"):
            raise RuntimeError("cannot decode")
        return {"level": float(r.key.split("-")[1])}

    def drop_reason(self, scores):
        return "quiet" if scores["level"] < self.min_level else None


def test_unknown_and_mistyped_params_name_the_filter():
    with pytest.raises(ValueError, match=r"'loudness'.*unknown parameter.*min_levle"):
        Loudness(min_levle=3)
    with pytest.raises(ValueError, match=r"'loudness'.*'min_level'.*wrong type"):
        Loudness(min_level="loud")
    with pytest.raises(ValueError, match=r"'strict'"):
        Loudness(strict=1)
    with pytest.raises(ValueError, match=r"'frames'"):
        MotionFilter(frames=2.5)
    with pytest.raises(ValueError, match=r"'frames'.*at least 2"):
        MotionFilter(frames=1)
    assert Loudness(min_level=3).min_level == 3.0  # ints widen to float


def test_scores_drops_counts_and_examples():
    f = Loudness()
    recs = [record("k-12"), record("k-3"), record("k-5"), record("k-bad")]
    failed = record("k-1")
    failed.status = "failed"
    out = f(recs + [failed])
    assert [r.status for r in out] == ["ok", "dropped", "dropped", "failed", "failed"]
    assert out[1].reason == "quiet" and out[1].scores == {"level": 3.0}
    # a scoring error fails closed: the clip is failed with the filter's name, the run goes on
    assert out[3].scores == {} and out[3].reason is None
    assert out[3].error.startswith("filter loudness: ")
    assert failed.scores == {}  # only ok records are scored
    stats = f.stats()
    assert (stats["scored"], stats["errors"], stats["dropped"]) == (3, 1, {"quiet": 2})
    assert f.examples == {"quiet": ["k-3", "k-5"]}


def test_refilter_with_new_bounds_reads_stored_scores_only():
    recs = [record("k-12"), record("k-3"), record("k-7")]
    first = Loudness(min_level=5)
    first(recs)
    assert first.calls == 3
    assert [r.status for r in recs] == ["ok", "dropped", "ok"]
    again = Loudness(min_level=10)
    again(reset_drops(recs))
    assert again.calls == 0  # nothing rescored
    assert [r.status for r in recs] == ["ok", "dropped", "dropped"]
    assert again.stats()["reused"] == 3


def test_audio_refilter_without_decoding(monkeypatch):
    recs = [record("a", has_audio=1.0, audio_rms_db=-30.0), record("b", has_audio=0.0)]
    recs[0].flac = "/nonexistent.flac"
    calls = []
    monkeypatch.setattr(AudioFilter, "compute", lambda self, r, ctx: calls.append(r.key) or {})
    AudioFilter(min_rms_db=-20.0, require_audio=True)(recs)
    assert calls == []
    assert [r.reason for r in recs] == ["silent", "no_audio"]


def test_chain_stats_merge_reasons_and_number_repeated_filters():
    recs = [record(f"k-{i}") for i in range(1, 10)]
    chain = FilterChain([Loudness(min_level=3), Loudness(min_level=6)])
    chain(recs)
    stats = chain.stats()
    assert stats["reasons"] == {"quiet": 5}
    assert stats["examples"]["quiet"] == ["k-1", "k-2", "k-3", "k-4", "k-5"]
    assert set(stats["filters"]) == {"loudness", "loudness#2"}
    assert stats["filters"]["loudness#2"]["dropped"] == {"quiet": 3}


def test_filters_pickle_without_their_context():
    f = Loudness(min_level=4)
    f([record("k-3")], FilterContext(embedder=lambda: None))  # a lambda does not pickle
    g = pickle.loads(pickle.dumps(f))
    assert g.min_level == 4.0 and not hasattr(g, "context")  # the context is lent per call
    assert g.stats()["dropped"] == {"quiet": 1}


def test_chain_needs_embedder_before_any_work():
    from filters.agreement import AgreementFilter

    with pytest.raises(ValueError, match="embedder"):
        FilterChain([AgreementFilter()])([record("k-1")])


def test_parameters_are_typed_fields():
    f = MotionFilter(frames=6.0, min_motion=None)
    assert f.frames == 6 and type(f.frames) is int  # ints stay ints
    assert f.min_motion is None  # None turns an optional bound off
    assert type(Loudness(strict=True).strict) is bool
    assert AudioFilter(min_rms_db=-45).min_rms_db == -45.0
    assert type(AudioFilter(min_rms_db=-45).min_rms_db) is float
    assert (
        repr(MotionFilter(frames=6, min_motion=None)) == "MotionFilter(min_motion=None, frames=6)"
    )
    assert repr(AudioFilter()) == "AudioFilter()"
    with pytest.raises(ValueError, match=r"'motion'.*'frames' = None.*wrong type"):
        MotionFilter(frames=None)  # not an optional parameter
    with pytest.raises(ValueError, match=r"'motion'.*'frames' = '8'.*wrong type"):
        MotionFilter(frames="8")  # no strings read as numbers
    with pytest.raises(ValueError, match=r"'audio'.*'require_audio' = 'yes'.*wrong type"):
        AudioFilter(require_audio="yes")
    with pytest.raises(ValueError, match=r"'audio'.*'min_rms_db' = True.*wrong type"):
        AudioFilter(min_rms_db=True)  # a flag is not a number
    with pytest.raises(ValueError, match=r"'loudness'.*'tag' = 3.*wrong type"):
        Loudness(tag=3)
    with pytest.raises(ValueError, match=r"'text'.*'reject_patterns'.*wrong type"):
        TextFilter(reject_patterns=["ok", 3])
    assert TextFilter(reject_patterns=["a", "b"]).reject_patterns == ("a", "b")
    assert Loudness.parameters["min_level"].default == 10.0 and Loudness().min_level == 10.0


def test_a_parameter_yaml_cannot_give_fails_when_the_filter_is_defined():
    with pytest.raises(TypeError, match="dict"):

        class Odd(Filter):
            table: dict = {}

    with pytest.raises(TypeError, match="default"):

        class Wrong(Filter):
            level: int = 0.5
