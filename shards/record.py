"""The clip record: the one type every mining and filtering stage takes and yields.

A record carries its key from the moment a clip window is chosen until its
sample is written (or dropped) in a shard. Media travel as local file paths,
never as arrays, so records stay small and picklable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STATUS_OK = "ok"  # written to the tar
STATUS_DROPPED = "dropped"  # scored, then dropped by a filter (reason says which)
STATUS_FAILED = "failed"  # could not be cut or written (error says why)


@dataclass
class Caption:
    """One seed caption transferred to a clip."""

    seed_id: str
    caption: str
    similarity: float  # cosine similarity of the seed image to the peak frame
    match_time: float  # seconds from the start of the source video


@dataclass
class ClipRecord:
    """One clip window cut from one source video, with the captions it inherited."""

    key: str
    video: str  # source path or URL, as the user gave it
    video_id: str
    start: float  # seconds
    end: float  # seconds
    match_time: float  # time of the best matching frame, seconds
    similarity: float  # similarity of the best caption
    captions: list[Caption] = field(default_factory=list)  # best first
    scores: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # width, height, fps of the source
    status: str = STATUS_OK
    reason: str | None = None  # why a filter dropped it
    error: str | None = None  # why it failed
    # How the clip was cut: "exact" (re-encoded) or "keyframe" (video stream copied from
    # the key frame at ``start``); None: exact, in a run that did not ask for another way.
    cut: str | None = None
    # Local media files, filled in by the cutter; not part of the sample's json.
    mp4: str | None = None
    flac: str | None = None
    jpg: str | None = None

    @property
    def caption(self) -> str:
        """The best caption: the sample's ``txt``."""
        return self.captions[0].caption if self.captions else ""

    def sample_json(self) -> dict[str, Any]:
        """The ``K.json`` payload of DESIGN.md."""
        return {
            "key": self.key,
            "video": self.video,
            "video_id": self.video_id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "match_time": round(self.match_time, 3),
            "similarity": round(self.similarity, 4),
            "captions": [
                {
                    "seed_id": c.seed_id,
                    "caption": c.caption,
                    "similarity": round(c.similarity, 4),
                    "match_time": round(c.match_time, 3),
                }
                for c in self.captions
            ],
            "scores": dict(self.scores),
            "source": dict(self.source),
            **({"cut": self.cut} if self.cut is not None else {}),
        }

    def row(self) -> dict[str, Any]:
        """One row of the shard's parquet sidecar (kept for dropped and failed clips too)."""
        return {
            "key": self.key,
            "video": self.video,
            "video_id": self.video_id,
            "start": self.start,
            "end": self.end,
            "match_time": self.match_time,
            "similarity": self.similarity,
            "caption": self.caption,
            "captions": json.dumps([asdict(c) for c in self.captions]),
            "scores": json.dumps(self.scores),
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "has_audio": self.flac is not None,
            "source": json.dumps(self.source),
            **({"cut": self.cut} if self.cut is not None else {}),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClipRecord:
        """A record back from its parquet row (media paths are not in the row)."""

        def text(v: Any) -> str | None:
            return v if isinstance(v, str) else None  # parquet nulls come back as None or NaN

        return cls(
            key=row["key"], video=row["video"], video_id=row["video_id"],
            start=float(row["start"]), end=float(row["end"]), match_time=float(row["match_time"]),
            similarity=float(row["similarity"]),
            captions=[Caption(**c) for c in json.loads(row["captions"])],
            scores=json.loads(row["scores"]), source=json.loads(text(row.get("source")) or "{}"),
            status=row["status"], reason=text(row.get("reason")), error=text(row.get("error")),
            cut=text(row.get("cut")),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["cut"] is None:
            del d["cut"]  # only runs that chose a cut mode say it, as in the json and the row
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        d = dict(d)
        d["captions"] = [
            c if isinstance(c, Caption) else Caption(**c) for c in d.get("captions", [])
        ]
        return cls(**d)
