"""What every filter shares: parameters, the score-then-keep loop, and the counts.

A filter *scores* a clip (numbers written into ``record.scores``) and *keeps*
or names a reason from those numbers alone, as datacomp's filters do: records
dropped by a filter stay in the shard's parquet with their scores, so bounds
can be re-tuned later without decoding a single frame. ``score`` is skipped
for a record that already holds all of a filter's scores, which is what makes
``capmine filter`` with new bounds cheap.

Subclasses set ``name``, ``score_names`` and ``defaults`` (every parameter and
its default), and implement ``compute`` (scores of one record) and ``keep``
(None, or the reason to drop). Filters that decide over a whole batch (dedup,
per-video caps) override ``process`` instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shards.record import STATUS_DROPPED, STATUS_OK, ClipRecord

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
class FilterContext:
    """What filters borrow from the run: set by the chain before use, never pickled with a filter.

    ``embedder`` keeps the protocol of DESIGN.md (dim, image_size, embed_images,
    embed_texts); ``tmp_dir`` receives re-cut media; ``recut`` overrides how a
    window is shortened (default: :func:`default_recut`).
    """

    embedder: Any = None
    tmp_dir: str | Path | None = None
    recut: Recut | None = None
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


class Filter:
    """One scoring stage. Construct with keyword parameters; call on a list of records."""

    name: ClassVar[str] = ""
    score_names: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    optional: ClassVar[frozenset[str]] = frozenset()  # bounds that None turns off
    needs_embedder: ClassVar[bool] = False
    # True for filters that compare clips with each other (dedup, caps): a mining run
    # applies them once over the whole run, after the filters that judge a clip alone.
    run_level: ClassVar[bool] = False

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"filter {self.name!r}: unknown parameter(s) {unknown}; "
                f"known: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        for key, value in self.params.items():
            self.params[key] = self._check_type(key, value, self.defaults[key])
        self.__dict__.update(self.params)
        self.validate()
        self.context = FilterContext()
        self.reset_stats()

    def _check_type(self, key: str, value: Any, default: Any) -> Any:
        """Numbers stay numbers, flags stay flags; None where the default or ``optional`` allows."""
        bad = ValueError(f"filter {self.name!r}: parameter {key!r} = {value!r} has the wrong type")
        if value is None and (default is None or key in self.optional):
            return None
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise bad
        elif isinstance(default, int | float) or default is None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            if isinstance(default, int) and not float(value).is_integer():
                raise bad
            return type(default)(value) if default is not None else float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise bad
        elif isinstance(default, list | tuple):
            if not isinstance(value, list | tuple):
                raise bad
            return list(value)
        return value

    def validate(self) -> None:
        """Range checks of the parameters; raise ValueError naming the filter and parameter."""

    def fail(self, param: str, why: str) -> None:
        raise ValueError(f"filter {self.name!r}: parameter {param!r} {why}")

    # -- the work ---------------------------------------------------------

    def compute(self, record: ClipRecord) -> dict[str, float]:
        """The scores of one record. Subclasses implement this."""
        raise NotImplementedError

    def keep(self, scores: dict[str, float]) -> str | None:
        """None to keep, else the drop reason; reads ``scores`` only."""
        return None

    def accept(self, record: ClipRecord, scores: dict[str, float]) -> None:
        """Called for each record the filter keeps; a place to act on it (shots re-cuts)."""

    def is_scored(self, record: ClipRecord) -> bool:
        """True when the record already holds this filter's scores (from an earlier run)."""
        return bool(self.score_names) and all(n in record.scores for n in self.score_names)

    def score(self, record: ClipRecord) -> dict[str, float]:
        """Compute the record's scores and write them into ``record.scores``."""
        scores = {k: float(v) for k, v in self.compute(record).items()}
        record.scores.update(scores)
        return scores

    def __call__(self, records: list[ClipRecord]) -> list[ClipRecord]:
        if self.needs_embedder and self.context.embedder is None:
            raise ValueError(f"filter {self.name!r} needs an embedder in its FilterContext")
        t0 = time.perf_counter()
        try:
            self.process(records)
        finally:
            self.stats_seconds += time.perf_counter() - t0
        return records

    def process(self, records: list[ClipRecord]) -> None:
        """Score each ok record (unless scored before), then keep or drop it."""
        for record in records:
            if record.status != STATUS_OK:
                continue
            if self.is_scored(record):
                self.n_reused += 1
            else:
                try:
                    self.score(record)
                except Exception as e:  # a bad clip is data: log it, count it, go on
                    self.n_errors += 1
                    log.warning("filter %s: cannot score %s: %s", self.name, record.key, e)
                    continue
                self.n_scored += 1
            reason = self.keep(record.scores)
            if reason:
                self.drop(record, reason)
            else:
                self.accept(record, record.scores)

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

    def __getstate__(self) -> dict:
        # The context (embedder, caches) belongs to the run, not to the filter.
        return {**self.__dict__, "context": FilterContext()}

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if v != self.defaults[k]}
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
        """Score and drop in place; returns the same records (dropped ones included)."""
        if context is not None:
            self.context = context
        needy = [f.name for f in self.filters if f.needs_embedder]
        if needy and self.context.embedder is None:
            raise ValueError(f"filters {needy} need an embedder: FilterContext(embedder=...)")
        for f in self.filters:
            f.context = self.context
            f(records)
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
