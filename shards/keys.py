"""Sample keys: letters, digits, ``_`` and ``-`` only, never a dot (webdataset splits on dots)."""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath
from urllib.parse import urlparse

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe(text: str, limit: int = 40) -> str:
    """``text`` with every run of unsafe characters replaced by ``_``, trimmed to ``limit``."""
    return _UNSAFE.sub("_", text).strip("_")[:limit] or "x"


def video_id_for(video: str) -> str:
    """A stable, key-safe id for a video path or URL: a readable stem plus 10 hex of its hash.

    The hash keeps ids of same-named files in different folders (or URLs on
    different hosts) apart; the stem keeps them readable.
    """
    parsed = urlparse(video)
    path = parsed.path if parsed.scheme else video
    stem = PurePosixPath(path.replace("\\", "/")).stem or parsed.netloc or "video"
    if parsed.query and parsed.scheme in ("http", "https"):
        # page URLs such as watch?v=ID carry their identity in the query
        stem = f"{stem}_{parsed.query}"
    digest = hashlib.sha1(video.encode("utf-8")).hexdigest()[:10]
    return f"{safe(stem)}-{digest}"


def clip_key(video_id: str, start: float) -> str:
    """A clip's key: its video's id and its start in milliseconds, unique within a run."""
    return f"{video_id}_{int(round(start * 1000)):09d}"


def is_valid_key(key: str) -> bool:
    return bool(key) and _UNSAFE.search(key) is None
