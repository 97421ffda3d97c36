"""The pictures and clips of the run report: a sample of the clips, their thumbnails and
mp4s written beside the page in ``OUT/report/``.

Only the sampled clips' files are written, each atomically; files of an
earlier report that this one no longer shows are removed afterwards (only
names capmine makes there: :data:`runs.folder.REPORT_FILES`).
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from media.images import to_rgb
from media.tars import split_name
from runs.folder import REPORT_FILES, RunFolder, remove_file
from runs.lock import OutFolderError
from runs.reportdata import ReportError
from shards.writer import atomic_write_bytes

log = logging.getLogger(__name__)

REPORT_DIR = "report"  # OUT/report/: the page's thumbnails and clips
THUMB_PIXELS = 320  # longer side of a thumbnail
THUMB_QUALITY = 80


@dataclass
class Media:
    """A shown clip's files, as paths relative to the page (None: there is none)."""

    jpg: str | None = None
    mp4: str | None = None


def sample_rows(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` rows, best similarity first, spread evenly over the whole range (the
    same rows every time for the same table): the best, the worst and those between."""
    ordered = rows.sort_values(["similarity", "key"], ascending=[False, True], kind="stable")
    if len(ordered) <= n:
        return ordered
    if n <= 1:
        return ordered.iloc[:n]
    picks = sorted({round(i * (len(ordered) - 1) / (n - 1)) for i in range(n)})
    return ordered.iloc[picks]


def thumbnail(data: bytes) -> bytes | None:
    """A small JPEG of an image, or None when it does not decode."""
    buf = io.BytesIO()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMB_PIXELS, THUMB_PIXELS))  # JPEG: decode at a reduced size
            im.load()
            small = to_rgb(im)
            small.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
            small.save(buf, format="JPEG", quality=THUMB_QUALITY)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        log.warning("report: a thumbnail could not be made: %s", e)
        return None
    return buf.getvalue()


class ReportMedia:
    """Writes the shown clips' files into ``OUT/report/`` and remembers what it wrote."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / REPORT_DIR
        self.written: set[str] = set()

    def _write(self, name: str, data: bytes) -> str:
        if self.dir.is_symlink():
            raise OutFolderError(f"{self.dir} is a symbolic link: capmine does not write through "
                                 "links; make it a real folder")  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.dir / name, data)
        self.written.add(name)
        return f"{REPORT_DIR}/{name}"

    def from_tar(self, tar: Path, keys: set[str], mp4: bool = True) -> dict[str, Media]:
        """The thumbnails (and mp4s) of ``keys``' samples in ``tar``; the other members are
        skipped unread."""
        found: dict[str, Media] = {}
        try:
            with tarfile.open(tar, "r") as tf:
                for member in tf:
                    parts = split_name(member.name) if member.isfile() else None
                    if parts is None or parts[0] not in keys or parts[1] not in ("jpg", "mp4"):
                        continue
                    key, ext = parts
                    if ext == "mp4" and not mp4:
                        continue
                    data = tf.extractfile(member).read()  # type: ignore[union-attr]
                    media = found.setdefault(key, Media())
                    if ext == "mp4":
                        media.mp4 = self._write(f"{key}.mp4", data)
                    elif (small := thumbnail(data)) is not None:
                        media.jpg = self._write(f"{key}.jpg", small)
        except (tarfile.TarError, OSError) as e:
            raise ReportError(f"{tar} cannot be read: {e}") from None
        return found

    def from_still(self, still: Path, key: str) -> Media:
        """A thumbnail of a scan's peak still (a clip whose media was not kept)."""
        try:
            data = still.read_bytes()
        except OSError as e:
            raise ReportError(f"{still} cannot be read: {e}") from None
        small = thumbnail(data)
        return Media(jpg=self._write(f"{key}.jpg", small) if small else None)

    def remove_stale(self) -> None:
        """Remove the files of an earlier report that this one does not show."""
        if not self.dir.is_dir() or self.dir.is_symlink():
            return
        for entry in os.scandir(self.dir):
            if entry.name not in self.written and REPORT_FILES.fullmatch(entry.name):
                remove_file(Path(entry.path))


def kept_media(media: ReportMedia, shown: pd.DataFrame) -> dict[str, Media]:
    """Thumbnails and mp4s of the shown kept clips, from their shards' tars."""
    folder, found = RunFolder(media.root), {}
    for shard, rows in shown.groupby("shard", sort=True):
        tar = folder.shard_file(int(shard), ".tar")
        found.update(media.from_tar(tar, set(rows["key"])))
    return found


def dropped_media(
    media: ReportMedia, shown: pd.DataFrame, still_roots: list[Path]
) -> dict[str, Media]:
    """Pictures of the shown dropped (and failed) clips: their media from ``OUT/dropped/``
    when the run kept it, else the scan's peak still (looked for in each of
    ``still_roots``), else none."""
    folder, found = RunFolder(media.root), {}
    for shard, rows in shown.groupby("shard", sort=True):
        tar = folder.dropped_file(int(shard))
        if tar.is_file():
            found.update(media.from_tar(tar, set(rows["key"])))
    for row in shown.to_dict("records"):
        if found.get(row["key"], Media()).jpg is not None:
            continue
        for root in still_roots:
            still = RunFolder(root).peak_still(str(row["video_id"]), float(row["match_time"]))
            if still is not None:
                old = found.get(row["key"], Media())
                found[row["key"]] = Media(jpg=media.from_still(still, row["key"]).jpg, mp4=old.mp4)
                break
    return found
