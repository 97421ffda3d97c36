"""What every filter shares: typed parameters, the score-then-decide loop, and the counts.

A filter *scores* a clip (numbers written into ``record.scores``) and then
names a reason to drop it, or none, from those numbers alone, as datacomp's
filters do: records dropped by a filter stay in the shard's parquet with their
scores, so bounds can be re-tuned later without decoding a single frame.
Scoring is skipped for a record that already holds all of a filter's scores,
which is what makes ``capmine filter`` with new bounds cheap.

A subclass sets ``name`` and ``score_names``, declares its parameters as
annotated class attributes (the value is the default), and implements
``compute(record, context)`` (the scores of one record) and
``drop_reason(scores)``. A filter whose scores compare clips with each other
(``caps``, ``dedup``) implements ``score_batch(records, context)`` instead of
``compute``: it sees every clip at once. Counting, examples and timing are the
base's: no filter overrides ``process``. The run's borrowed things (embedder,
temporary folder, re-cut hook) arrive as a :class:`FilterContext` argument on
every call; a filter never holds one.
"""

from __future__ import annotations

import logging
import os
import time
import types
import typing
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shards.record import STATUS_DROPPED, STATUS_FAILED, STATUS_OK, ClipRecord

log = logging.getLogger(__name__)

N_EXAMPLES = 5  # keys kept per drop reason, to look at what a filter threw away

# recut(record, start, end): cut the record's media down to [start, end) (source
# seconds), point record.mp4/flac at the result and set record.start/end.
Recut = Callable[[ClipRecord, float, float], None]


def default_recut(context: FilterContext) -> Recut:
    """Trim the already-cut clip (mp4 and flac) to a shorter window, relative to record.start.

    The trimmed files go to ``context.tmp_dir`` (or beside the originals, replacing them).
    """
    from media.video import trim

    def recut(record: ClipRecord, start: float, end: float) -> None:
        if record.mp4 is None:
            raise ValueError(f"{record.key}: no mp4 to recut")
        out = Path(context.tmp_dir) if context.tmp_dir else Path(record.mp4).parent
        out.mkdir(parents=True, exist_ok=True)
        offset, seconds = start - record.start, end - start
        record.mp4 = str(trim(record.mp4, offset, seconds, out / f"{record.key}.mp4"))
        if record.flac:
            record.flac = str(trim(record.flac, offset, seconds, out / f"{record.key}.flac"))
        record.start, record.end = start, end

    return recut


@dataclass
class EarlierClips:
    """Kept clips of earlier runs on the same OUT, as clip embeddings: ``dedup`` compares a
    run's clips with them too. They are final (their shards are written): never dropped.

    ``vectors`` is (len(keys), dim) float32, unit rows, each the mean of ``frames`` frames'
    embeddings; ``not_compared`` counts earlier kept clips that have no vector (their media
    could not be read), so a run can say how many it could not compare with.
    """

    keys: list[str]
    vectors: np.ndarray
    frames: int
    not_compared: int = 0

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.keys):
            raise ValueError(
                f"earlier clips: {len(self.keys)} keys need a ({len(self.keys)}, dim) array of "
                f"vectors, not one of shape {self.vectors.shape}"
            )


@dataclass
class FilterContext:
    """What filters borrow from the run, passed to each call: a filter never keeps it.

    ``embedder`` keeps the protocol of DESIGN.md (dim, image_size, embed_images,
    embed_texts); ``tmp_dir`` receives re-cut media; ``recut`` overrides how a
    window is shortened (default: :func:`default_recut`); ``earlier`` holds the
    kept clips of earlier runs, by frames per clip (:class:`EarlierClips`).
    """

    embedder: Any = None
    tmp_dir: str | Path | None = None
    recut: Recut | None = None
    earlier: dict[int, EarlierClips] = field(default_factory=dict)
    cache_size: int = 256  # clips whose frame embeddings are kept (agreement then dedup)
    _frames: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def recutter(self) -> Recut:
        return self.recut or default_recut(self)

    def frame_embeddings(self, record: ClipRecord, n: int = 4) -> np.ndarray:
        """(n', dim) unit embeddings of ``n`` frames spread over the clip, centre-cropped.

        Cached per file version: agreement and dedup decode each clip once.
        """
        from media import MediaError
        from media.video import read_frames

        if self.embedder is None:
            raise ValueError("this filter needs an embedder: FilterContext(embedder=...)")
        if record.mp4 is None:
            raise MediaError(f"{record.key}: no mp4")
        st = os.stat(record.mp4)
        cache_key = (record.mp4, st.st_mtime_ns, st.st_size, n)
        if cache_key in self._frames:
            self._frames.move_to_end(cache_key)
            return self._frames[cache_key]
        frames = read_frames(record.mp4, n, size=int(self.embedder.image_size))
        emb = np.asarray(self.embedder.embed_images(frames), dtype=np.float32)
        self._frames[cache_key] = emb
        while len(self._frames) > self.cache_size:
            self._frames.popitem(last=False)
        return emb

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_frames": OrderedDict()}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a filter: ``kind`` is bool, int, float, str or tuple (of str)."""

    name: str
    kind: type
    optional: bool  # None is allowed (it turns a bound off)
    default: Any


_KINDS = (bool, int, float, str)


def _param(owner: str, name: str, hint: Any, default: Any) -> Param:
    """A :class:`Param` from an annotation such as ``float | None`` or ``tuple[str, ...]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = typing.get_origin(hint) in (types.UnionType, typing.Union)
    kind = args[0] if optional and len(args) == 1 else hint
    if typing.get_origin(kind) is tuple and typing.get_args(kind) == (str, ...):
        kind = tuple
    if kind not in (*_KINDS, tuple):
        raise TypeError(
            f"{owner}.{name}: a filter parameter is bool, int, float, str or "
            f"tuple[str, ...], optionally '| None'; not {hint!r}"
        )
    return Param(name, kind, optional, default)


class Filter:
    """One scoring stage. Construct with keyword parameters; call on a list of records.

    Parameters are annotated class attributes whose values are the defaults,
    each with a comment giving its unit::

        class AudioFilter(Filter):
            name = "audio"
            score_names = ("has_audio", "audio_rms_db")
            min_rms_db: float | None = -50.0  # dBFS; below -> silent (None: no bound)
    """

    name: ClassVar[str] = ""
    score_names: ClassVar[tuple[str, ...]] = ()
    needs_embedder: ClassVar[bool] = False
    # True for filters that compare clips with each other (dedup, caps): a mining run
    # applies them once over the whole run, after the filters that judge a clip alone.
    run_level: ClassVar[bool] = False
    # Every parameter, from the annotations: filled in for each subclass as it is defined.
    parameters: ClassVar[dict[str, Param]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Read the parameters off the annotations; a parameter without a default, or of a
        kind YAML cannot give, is an error when the class is defined, not in a run."""
        super().__init_subclass__(**kwargs)
        params = {}
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is ClassVar:
                continue
            if not hasattr(cls, name):
                raise TypeError(f"{cls.__name__}.{name}: a filter parameter needs a default")
            params[name] = param = _param(cls.__name__, name, hint, getattr(cls, name))
            try:
                cls._check(param, param.default)
            except ValueError as e:
                raise TypeError(f"{cls.__name__}.{name}: the default {e}") from None
        cls.parameters = params

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ValueError(
                f"filter {self.name!r}: unknown parameter(s) {unknown}; "
                f"known: {sorted(self.parameters)}"
            )
        for key, value in params.items():
            try:
                value = self._check(self.parameters[key], value)
            except ValueError:
                raise ValueError(
                    f"filter {self.name!r}: parameter {key!r} = {value!r} has the wrong type"
                ) from None
            setattr(self, key, value)
        self.validate()
        self.reset_stats()

    @staticmethod
    def _check(param: Param, value: Any) -> Any:
        """``value`` as the parameter's kind: numbers stay numbers (an integral float is an
        int), flags stay flags, None only where the annotation allows it."""
        if value is None:
            if param.optional:
                return None
            raise ValueError(f"{value!r} is not a {param.kind.__name__}")
        ok = False
        if param.kind is bool:
            ok = isinstance(value, bool)
        elif param.kind in (int, float) and isinstance(value, int | float):
            ok = not isinstance(value, bool) and (param.kind is float or float(value).is_integer())
        elif param.kind is str:
            ok = isinstance(value, str)
        elif param.kind is tuple and isinstance(value, list | tuple):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ValueError(f"{value!r} is not a {param.kind.__name__}")
        return param.kind(value)

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter's value, by name."""
        return {k: getattr(self, k) for k in self.parameters}

    def validate(self) -> None:
        """Range checks of the parameters; raise ValueError naming the filter and parameter."""

    def fail(self, param: str, why: str) -> None:
        raise ValueError(f"filter {self.name!r}: parameter {param!r} {why}")

    # -- the work ---------------------------------------------------------

    def compute(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        """The scores of one record. Per-clip filters implement this."""
        raise NotImplementedError

    def drop_reason(self, scores: dict[str, float]) -> str | None:
        """The reason to drop a record with these scores, or None to keep it; reads ``scores`` only."""
        return None

    def accept(self, record: ClipRecord, scores: dict[str, float], context: FilterContext) -> None:
        """Called for each record the filter keeps; a place to act on it (shots re-cuts)."""

    def is_scored(self, record: ClipRecord) -> bool:
        """True when the record already holds this filter's scores (from an earlier run)."""
        return bool(self.score_names) and all(n in record.scores for n in self.score_names)

    def score(self, record: ClipRecord, context: FilterContext) -> dict[str, float]:
        """Compute the record's scores and write them into ``record.scores``."""
        scores = {k: float(v) for k, v in self.compute(record, context).items()}
        record.scores.update(scores)
        return scores

    def score_batch(
        self, records: list[ClipRecord], context: FilterContext
    ) -> Iterable[ClipRecord]:
        """Score the ok ``records``; give back those to judge, in the order verdicts are taken.

        The default scores one record at a time with ``compute`` (stored scores are
        reused), handing each on as soon as it is scored, so a record is judged, and
        acted on when kept, before the next one is decoded. A filter whose scores
        compare clips with each other (a rank within a video, the nearest look-alike)
        overrides this to see every clip at once; it counts what it scores in
        ``n_scored``, passes a record it cannot score to :meth:`score_failed` (which
        fails it) and leaves it out. The order given back is the order drops are counted and
        examples listed in.
        """
        for record in records:
            if self.is_scored(record):
                self.n_reused += 1
            else:
                try:
                    self.score(record, context)
                except Exception as e:  # a bad clip is data: it fails, the run goes on
                    self.score_failed(record, e)
                    continue
                self.n_scored += 1
            yield record

    def score_failed(self, record: ClipRecord, error: Exception) -> None:
        """A record that could not be scored fails closed: it is marked ``failed`` with
        ``error="filter NAME: ..."``, counted and logged, and never reaches a tar unjudged."""
        self.n_errors += 1
        record.status, record.reason = STATUS_FAILED, None
        record.error = f"filter {self.name}: {type(error).__name__}: {error}"
        log.warning("filter %s: cannot score %s: %s", self.name, record.key, error)

    def __call__(
        self, records: list[ClipRecord], context: FilterContext | None = None
    ) -> list[ClipRecord]:
        """Score and judge ``records`` in place; returns them (dropped ones included).

        ``context`` lends the run's embedder, temporary folder and re-cut hook for
        this call only (a filter that borrows nothing runs without one).
        """
        context = FilterContext() if context is None else context
        if self.needs_embedder and context.embedder is None:
            raise ValueError(f"filter {self.name!r} needs an embedder in its FilterContext")
        t0 = time.perf_counter()
        try:
            self.process(records, context)
        finally:
            self.stats_seconds += time.perf_counter() - t0
        return records

    def process(self, records: list[ClipRecord], context: FilterContext) -> None:
        """Score the ok records, then keep or drop each from its scores alone.

        The same for every filter (subclasses override ``score_batch``, not this).
        """
        ok = [r for r in records if r.status == STATUS_OK]
        for record in self.score_batch(ok, context):
            reason = self.drop_reason(record.scores)
            if reason:
                self.drop(record, reason)
            else:
                self.accept(record, record.scores, context)

    def drop(self, record: ClipRecord, reason: str) -> None:
        record.status, record.reason = STATUS_DROPPED, reason
        self.dropped[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < N_EXAMPLES:
            examples.append(record.key)

    # -- bookkeeping ------------------------------------------------------

    def reset_stats(self) -> None:
        self.n_scored = self.n_reused = self.n_errors = 0
        self.dropped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.stats_seconds = 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "scored": self.n_scored,
            "reused": self.n_reused,
            "errors": self.n_errors,
            "dropped": dict(self.dropped),
            "seconds": round(self.stats_seconds, 3),
        }

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if v != self.parameters[k].default}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


def reset_drops(records: list[ClipRecord]) -> list[ClipRecord]:
    """Reopen dropped records (status ok, no reason) before re-filtering with new bounds.

    Their scores stay, so the chain only computes what is missing. Failed
    records stay failed: their media never existed.
    """
    for r in records:
        if r.status == STATUS_DROPPED:
            r.status, r.reason = STATUS_OK, None
    return records


class FilterChain:
    """Filters run in order over one list of records; each sees only what the last kept."""

    def __init__(self, filters: list[Filter], context: FilterContext | None = None):
        self.filters = list(filters)
        self.context = context or FilterContext()

    def __call__(
        self, records: list[ClipRecord], context: FilterContext | None = None
    ) -> list[ClipRecord]:
        """Score and drop in place; returns the same records (dropped ones included).

        ``context`` (default: the one the chain was built with) is handed to each filter.
        """
        context = self.context if context is None else context
        needy = [f.name for f in self.filters if f.needs_embedder]
        if needy and context.embedder is None:
            raise ValueError(f"filters {needy} need an embedder: FilterContext(embedder=...)")
        for f in self.filters:
            f(records, context)
        return records

    def __len__(self) -> int:
        return len(self.filters)

    def stats(self) -> dict[str, Any]:
        """Drops by reason, a few example keys each, and each filter's own counts."""
        reasons: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        per_filter: dict[str, Any] = {}
        for f in self.filters:
            reasons.update(f.dropped)
            for reason, keys in f.examples.items():
                examples.setdefault(reason, [])
                examples[reason] = (examples[reason] + keys)[:N_EXAMPLES]
            name, i = f.name, 2
            while name in per_filter:
                name, i = f"{f.name}#{i}", i + 1
            per_filter[name] = f.stats()
        return {"reasons": dict(reasons), "examples": examples, "filters": per_filter}

    def __repr__(self) -> str:
        return f"FilterChain({self.filters!r})"
