"""WebDataset samples out of a tar: members grouped by key, the one rule for every reader.

A member ``dir/abc.seg.mp4`` belongs to sample ``dir/abc`` as its ``seg.mp4``
entry: the key is the path up to the first dot of the file name, as webdataset
splits it. Consecutive members with one key form one sample.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's key / extension split


def split_name(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name, or None for a name with no extension."""
    match = _NAME.match(name)
    return (match.group(1), match.group(2)) if match else None


def iter_raw_samples(tar_path: str | Path) -> Iterator[dict[str, Any]]:
    """Samples as ``{"__key__": K, ext: bytes, ...}``, nothing decoded, in tar order.

    Members that are not files, or whose name has no extension, are skipped.
    Raises ``tarfile.TarError`` or ``OSError`` where the tar breaks off, after
    yielding the samples before it.
    """
    current: dict[str, Any] | None = None
    with tarfile.open(tar_path, "r") as tar:
        for member in tar:
            parts = split_name(member.name) if member.isfile() else None
            if parts is None:
                continue
            key, ext = parts
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            current[ext] = data
    if current is not None:
        yield current
