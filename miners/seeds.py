"""Seeds: the captioned images a mining run looks for in videos.

:func:`read_seeds` accepts the layouts people already have (the published CC3M
TSV, img2dataset's table inputs and its WebDataset output, a folder of images
with ``.txt`` captions) and turns each into a list of :class:`Seed`.
:func:`load_seed_images` then fetches and preprocesses the pictures, streaming,
in input order.

A seed that cannot be used (no caption, a 404, a truncated JPEG) is data, not
a failure: it carries its ``error`` and becomes a failed row of
``seeds.parquet``. A seeds file that cannot be read at all is a bad run and
raises at once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import posixpath
import stat
import tarfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import requests
from braceexpand import braceexpand

from media.ffmpeg import MediaError
from media.images import DEFAULT_MAX_PIXELS, PixelBudget, decode_image
from media.tars import split_name
from miners.remote import (
    DEFAULT_PROTOCOLS,
    REDIRECT_SCHEMES,
    Protocols,
    PublicOnlyAdapter,
    RemoteError,
    check_public_host,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
IMAGE_COLUMNS = ("url", "image", "path")  # img2dataset's url_col, then the local spellings
CAPTION_COLUMNS = ("caption", "text")  # "text": LAION parquet's spelling (TEXT)
ID_COLUMN = "id"
_HEADER_NAMES = {*IMAGE_COLUMNS, *CAPTION_COLUMNS, ID_COLUMN}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
ACCEPTED = (
    "a CC3M .tsv/.txt (caption<TAB>image, no header); .csv/.tsv/.parquet/.jsonl/.json with "
    f"an image column ({'/'.join(IMAGE_COLUMNS)}) and a caption column; a folder of images "
    "with same-stem .txt captions; a WebDataset .tar, a folder of them, or a brace pattern"
)


def _version() -> str:
    try:
        return metadata.version("capmine")
    except metadata.PackageNotFoundError:
        return "dev"


USER_AGENT = f"capmine/{_version()} (seed image loader)"  # servers see who is fetching
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_TEXT_BYTES = 1024 * 1024  # a caption file, a tar's .txt or .json member
MAX_REDIRECTS = 5
# A remote read that outlives its timeout is abandoned this long after it: the
# thread doing it is told to stop and left to end on its own.
_GRACE = 1.0


@dataclass(slots=True)
class Seed:
    """One captioned image; ``error`` set means it is carried to the output as a failed row."""

    id: str
    caption: str
    image: str  # local path, file:// or http(s) URL, any fsspec URL, or tar://MEMBER::/abs/x.tar
    error: str | None = None


# ---------------------------------------------------------------- reading


def read_seeds(path: str | Path) -> list[Seed]:
    """All seeds of ``path``, its format detected from the extension or folder layout.

    ``path`` may be a brace pattern (``shards/{00000..00002}.tar``), as
    img2dataset and webdataset spell shard lists; every expanded file is read.
    Raises ``FileNotFoundError`` or ``ValueError`` when the input as a whole
    cannot be used, including when two seeds share an id.
    """
    text = str(path)
    seeds = [seed for one in _expand(text) for seed in _read_one(one)]
    _check_unique(seeds, text)
    failed = sum(seed.error is not None for seed in seeds)
    log.info(
        "read %d seeds from %s (%d without a usable caption or image)", len(seeds), text, failed
    )
    return seeds


def check_seeds(path: str | Path, *, read_below: int = 64 << 20) -> None:
    """Raise now what :func:`read_seeds` would raise for ``path`` as a whole: a missing
    input, one that is not a regular file or folder, an unknown format; and, for seed
    files of at most ``read_below`` bytes in all, an unreadable one or one lacking its
    columns (they are read). Larger inputs and folders are read once, by the run."""
    paths = _expand(str(path))
    readers = [_reader_of(p.expanduser().absolute()) for p in paths]
    if None in readers:  # a folder: listing it may be the run's longest read
        return
    if sum(p.stat().st_size for p in paths) <= read_below:
        read_seeds(path)


def _expand(text: str) -> list[Path]:
    """The files a seeds argument names: itself, or its brace pattern expanded."""
    paths = [Path(text)]
    if "{" in text and not paths[0].exists():
        paths = [Path(p) for p in braceexpand(text)]
    return paths


def _reader_of(path: Path) -> Callable[[Path], list[Seed]] | None:
    """The reader of seed file ``path`` (None for a folder of images), or the error that
    says why ``path`` cannot be seeds."""
    if not path.exists():
        raise FileNotFoundError(f"seeds not found: {path}; accepted: {ACCEPTED}")
    if path.is_dir():
        return None
    if not path.is_file():  # a FIFO, /dev/stdin or a device would block or never end
        raise ValueError(f"seeds {path} is not a regular file; accepted: {ACCEPTED}")
    reader = _READERS.get(_format_suffix(path))
    if reader is None:
        raise ValueError(f"unknown seeds format: {path}; accepted: {ACCEPTED}")
    return reader


def _read_one(path: Path) -> list[Seed]:
    path = path.expanduser().absolute()
    reader = _reader_of(path)
    return _read_folder(path) if reader is None else reader(path)


def _format_suffix(path: Path) -> str:
    """The extension that names the format, looking through a compression suffix (``.tsv.gz``)."""
    name = path.name.lower()
    for compression in _COMPRESSIONS:
        if name.endswith(compression) and not name.endswith(".tar" + compression):
            name = name[: -len(compression)]
    return Path(name).suffix


def _check_unique(seeds: Sequence[Seed], source: str) -> None:
    duplicates = [seed_id for seed_id, n in Counter(s.id for s in seeds).items() if n > 1]
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:10])
        raise ValueError(
            f"{source}: {len(duplicates)} seed ids occur more than once ({shown}); "
            "ids must be unique: add a unique 'id' column"
        )


def _read_folder(folder: Path) -> list[Seed]:
    """A folder of WebDataset tars (img2dataset's output folder) or of images with ``.txt`` captions."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    tars = [p for p in files if p.suffix.lower() == ".tar"]
    if tars:
        return [seed for tar in tars for seed in _read_tar(tar)]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise ValueError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) or .tar files in {folder}")
    return [_folder_seed(image) for image in images]


def _folder_seed(image: Path) -> Seed:
    caption_file = image.with_suffix(".txt")
    if not caption_file.is_file():
        return Seed(image.stem, "", str(image), f"no caption file {caption_file.name}")
    if caption_file.stat().st_size > MAX_TEXT_BYTES:
        return Seed(image.stem, "", str(image), f"{caption_file} is over {_mb(MAX_TEXT_BYTES)}")
    caption = clean_caption(caption_file.read_text(encoding="utf-8", errors="replace"))
    return Seed(image.stem, caption, str(image), None if caption else "missing caption")


def clean_caption(text: str) -> str:
    """Whitespace runs (newlines and tabs included) as single spaces, trimmed: one caption, one line."""
    return " ".join(text.split())


# ------------------------------------------------------------- table formats


def _read_tsv(path: Path) -> list[Seed]:
    """A header naming known columns means a table; otherwise the published CC3M ``caption<TAB>url`` rows."""
    # CC3M captions are unquoted and may hold '"': quoting would merge rows.
    first = next(_rows(path, "\t", csv.QUOTE_NONE), None)
    if first is not None and isinstance(first[1], list):
        if any(name.strip().lower() in _HEADER_NAMES for name in first[1]):
            return _read_delimited(path, "\t")
    return _read_cc3m(path)


def _read_cc3m(path: Path) -> list[Seed]:
    """``caption<TAB>image`` rows; a row with another number of fields is a failed seed."""
    seeds, good = [], 0
    for row, (line, fields) in enumerate(_rows(path, "\t", csv.QUOTE_NONE)):
        if isinstance(fields, list) and len(fields) == 2:
            seeds.append(_row_seed(str(row), fields[0], fields[1], path.parent))
            good += 1
        else:
            why = _field_count(fields, 2, "caption<TAB>image, as CC3M")
            seeds.append(Seed(str(row), "", "", f"{path}:{line}: {why}"))
    if seeds and not good and all(len(f) == 1 for _, f in _rows(path, "\t", csv.QUOTE_NONE)):
        raise ValueError(
            f"{path}: rows have one field; expected caption<TAB>image (CC3M) or a header naming "
            f"an image column ({', '.join(IMAGE_COLUMNS)}) and a caption column"
        )
    if not seeds:
        raise ValueError(f"empty seeds file: {path}")
    return seeds


def _read_csv(path: Path) -> list[Seed]:
    return _read_delimited(path, ",")


def _read_delimited(path: Path, sep: str) -> list[Seed]:
    """A table with a header; a row with more or fewer fields than the header is a failed seed,
    never truncated (an unquoted comma in a caption shifts every field after it)."""
    rows = _rows(path, sep, csv.QUOTE_MINIMAL)
    first = next(rows, None)
    if first is None:
        raise ValueError(f"empty seeds file: {path}")
    line, header = first
    if not isinstance(header, list):
        raise ValueError(f"cannot parse seeds file {path}: header on line {line}: {header}")
    image_col, caption_col, id_col = _pick_columns(header, path)
    at = {name: header.index(name) for name in (image_col, caption_col, id_col) if name}
    seeds = []
    for row, (line, fields) in enumerate(rows):
        if not isinstance(fields, list) or len(fields) != len(header):
            seed_id = f"{path.name}:{line}" if id_col else str(row)
            why = _field_count(fields, len(header), "one a column of the header")
            seeds.append(Seed(seed_id, "", "", f"{path}:{line}: {why}"))
            continue
        seed_id = fields[at[id_col]] if id_col else ""
        seeds.append(
            _row_seed(seed_id.strip() or str(row), fields[at[caption_col]],
                      fields[at[image_col]], path.parent)
        )  # fmt: skip
    return seeds


def _field_count(fields: list[str] | csv.Error, expected: int, what: str) -> str:
    if isinstance(fields, csv.Error):
        return f"unreadable row: {fields}"
    return f"expected {expected} fields ({what}), found {len(fields)}"


def _rows(path: Path, sep: str, quoting: int) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """``(line, fields)`` of each non-blank row, or ``(line, error)`` for a row csv cannot split.

    Lines are counted from 1, as an editor shows them; a quoted field may span
    lines, and its row is numbered by its first. Bytes that are not UTF-8 are
    replaced, so one bad byte spoils one caption, not the file.
    """
    import fsspec

    with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8-sig",
                     errors="replace", newline="") as f:  # fmt: skip
        reader = csv.reader(f, delimiter=sep, quoting=quoting)
        line = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if reader.line_num < line:  # no progress: the reader cannot go on
                    raise ValueError(f"cannot parse seeds file {path}:{line}: {exc}") from exc
                yield line, exc
                line = reader.line_num + 1
                continue
            if fields and fields != [""]:
                yield line, fields
            line = reader.line_num + 1


def _read_parquet(path: Path) -> list[Seed]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        wanted = [name for name in names if name.strip().lower() in _HEADER_NAMES]
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError, ValueError) as exc:  # pyarrow's messages omit the file
        raise ValueError(f"cannot read parquet seeds file {path}: {exc}") from exc
    return _table_seeds({name: table.column(name).to_pylist() for name in wanted}, path)


def _read_json(path: Path) -> list[Seed]:
    """JSON lines, or one JSON array of records (img2dataset's ``json`` input format)."""
    import fsspec
    import pandas as pd

    with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8") as f:
        is_array = f.read(4096).lstrip().startswith("[")
    if not is_array:
        return _read_json_lines(path)
    table = _parse(pd.read_json, path, lines=False, dtype=False)
    return _table_seeds({str(name): table[name].tolist() for name in table.columns}, path)


def _read_json_lines(path: Path) -> list[Seed]:
    """JSON lines, one record a line: a line that is not a JSON object fails that seed
    alone, named by file and line."""
    import fsspec

    records: list[tuple[int, dict | str]] = []
    with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8",
                     errors="replace") as f:  # fmt: skip
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                records.append((line, f"not JSON: {exc}"))
                continue
            records.append((line, record if isinstance(record, dict) else "not a JSON object"))
    good = [r for _, r in records if isinstance(r, dict)]
    if not records:
        raise ValueError(f"empty seeds file: {path}")
    if not good:
        raise ValueError(f"cannot parse seeds file {path}: no line is a JSON object")
    names = list(dict.fromkeys(k for r in good for k in r))
    seeds = iter(_table_seeds({n: [r.get(n) for r in good] for n in names}, path))
    return [next(seeds) if isinstance(r, dict) else
            Seed(f"{path.name}:{line}", "", "", f"{path}:{line}: {r}") for line, r in records]  # fmt: skip


def _parse(read: Any, path: Path, **kwargs: Any) -> Any:
    """Call a pandas reader, naming the file in the error: pandas' own messages do not."""
    import pandas as pd

    try:
        return read(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"empty seeds file: {path}") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise ValueError(f"cannot parse seeds file {path}: {exc}") from exc


def _table_seeds(table: dict[str, list[Any]], path: Path) -> list[Seed]:
    """Seeds from columns; relative image paths are taken relative to the seeds file's folder."""
    image_col, caption_col, id_col = _pick_columns(list(table), path)
    images, captions = table[image_col], table[caption_col]
    ids = table[id_col] if id_col else [None] * len(images)
    return [
        _row_seed(_cell(seed_id) or str(row), _cell(caption), _cell(image), path.parent)
        for row, (seed_id, caption, image) in enumerate(zip(ids, captions, images, strict=True))
    ]


def _pick_columns(names: list[str], path: Path) -> tuple[str, str, str | None]:
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.strip().lower(), name)
    image = next((by_lower[c] for c in IMAGE_COLUMNS if c in by_lower), None)
    caption = next((by_lower[c] for c in CAPTION_COLUMNS if c in by_lower), None)
    if image is None or caption is None:
        raise ValueError(
            f"{path}: columns {names} lack an image column ({', '.join(IMAGE_COLUMNS)}) "
            f"or a caption column ({', '.join(CAPTION_COLUMNS)})"
        )
    return image, caption, by_lower.get(ID_COLUMN)


def _cell(value: Any) -> str:
    """A table cell as text: missing values (None, NaN) are empty, whole floats lose their '.0'."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _row_seed(seed_id: str, caption: str, image: str, base: Path) -> Seed:
    caption, image = clean_caption(caption), image.strip()
    error = "missing image" if not image else "missing caption" if not caption else None
    return Seed(seed_id.strip(), caption, _resolve(image, base) if image else "", error)


def _resolve(image: str, base: Path) -> str:
    if not _is_local(image):
        return image
    local = os.path.expanduser(image)
    return local if os.path.isabs(local) else str(base / local)


def _is_local(image: str) -> bool:
    scheme = urlparse(image).scheme
    return scheme == "" or len(scheme) == 1  # one letter: a Windows drive, C:\...


# ---------------------------------------------------------------- webdataset


def _read_tar(path: Path) -> list[Seed]:
    """Seeds of an img2dataset tar: names and small text members only, never the image bytes.

    The tar is streamed (``r|*``), so a shard is read once front to back.
    """
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                _add_member(samples, tar, member)
    except tarfile.TarError as exc:
        raise ValueError(f"not a readable tar: {path}: {exc}") from exc
    return [_tar_seed(key, sample, path) for key, sample in samples.items()]


def _add_member(
    samples: dict[str, dict[str, Any]], tar: tarfile.TarFile, member: tarfile.TarInfo
) -> None:
    name = member_name(member.name)
    parts = split_name(name) if member.isfile() else None
    if parts is None:
        return
    key, extension = parts[0], parts[1].lower()
    sample = samples.setdefault(key, {"images": {}})
    if extension in ("txt", "json"):
        if member.size > MAX_TEXT_BYTES:
            sample["error"] = f"member {member.name} of {tar.name} is over {_mb(MAX_TEXT_BYTES)}"
            return
        handle = tar.extractfile(member)
        sample[extension] = handle.read().decode("utf-8", errors="replace") if handle else ""
    elif "." + extension in IMAGE_EXTENSIONS:
        sample["images"][extension] = name


def member_name(name: str) -> str:
    """A tar member's name as a relative path: ``/k.jpg`` and ``./k.jpg`` are ``k.jpg``."""
    return posixpath.normpath(name).lstrip("/")


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


def _tar_seed(key: str, sample: dict[str, Any], tar: Path) -> Seed:
    meta = _json_object(sample.get("json"), key, tar)
    seed_id = str(meta.get("key") or key)
    caption = clean_caption(sample.get("txt") or str(meta.get("caption") or ""))
    member = next(
        (sample["images"][e[1:]] for e in IMAGE_EXTENSIONS if e[1:] in sample["images"]), None
    )
    if "error" in sample:
        return Seed(seed_id, caption, "", sample["error"])
    if member is None:
        return Seed(seed_id, caption, "", f"no image member for key {key} in {tar}")
    return Seed(seed_id, caption, f"tar://{member}::{tar}", None if caption else "missing caption")


def _json_object(text: str | None, key: str, tar: Path) -> dict[str, Any]:
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s.json in %s", key, tar)
        return {}
    return value if isinstance(value, dict) else {}


_READERS = {
    ".tsv": _read_tsv,
    ".txt": _read_tsv,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".jsonl": _read_json,
    ".json": _read_json,
    ".tar": _read_tar,
}


# ---------------------------------------------------------------- loading


def load_seed_images(
    seeds: Iterable[Seed],
    size: int,
    *,
    workers: int = 16,
    timeout: float = 10.0,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    allowed_protocols: Iterable[str] = DEFAULT_PROTOCOLS,
    block_private_addresses: bool = False,
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """``(index, (size, size, 3) uint8, None)`` or ``(index, None, error)`` for every seed, in input order.

    Images load on ``workers`` threads (fetching is I/O bound, and PIL releases
    the GIL while decoding), but at most ``4 * workers`` are in flight or
    waiting to be yielded, so millions of seeds stream in constant memory.
    Seeds that already carry an error are passed through unloaded. One bad
    seed never raises: its error names the image and what is wrong.

    Guards, each an error row: only regular files are read (a FIFO or device
    would block); a remote read ends within ``timeout`` seconds however the
    server behaves; a picture over ``max_image_pixels`` is refused from its
    header, and the threads share a budget of decoded pixels; a URL whose
    protocol is not in ``allowed_protocols`` is refused, redirects go to
    http(s) only, and with ``block_private_addresses`` to public addresses only.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    reader = _ImageReader(timeout=timeout, protocols=Protocols(allowed_protocols),
                          public_only=block_private_addresses)  # fmt: skip
    budget = PixelBudget(2 * (max_image_pixels or DEFAULT_MAX_PIXELS))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capmine-seed-images")
    pending: deque[tuple[int, Future | str]] = deque()

    def submit(seed: Seed) -> Future:
        return pool.submit(_load_one, reader, seed, size, max_image_pixels, budget)

    try:
        for index, seed in enumerate(seeds):
            if len(pending) >= 4 * workers:
                yield _settle(*pending.popleft())
            pending.append((index, seed.error or submit(seed)))
        while pending:
            yield _settle(*pending.popleft())
    finally:
        # Also runs when the consumer stops early: queued loads are dropped and
        # the running ones end within their timeout (no read waits longer).
        pool.shutdown(wait=True, cancel_futures=True)
        reader.close()


def _settle(index: int, work: Future | str) -> tuple[int, np.ndarray | None, str | None]:
    """Wait for one load; a string is an error the seed already carried."""
    if isinstance(work, str):
        return index, None, work
    array, error = work.result()
    return index, array, error


def _load_one(
    reader: _ImageReader, seed: Seed, size: int, max_pixels: int | None, budget: PixelBudget
) -> tuple[np.ndarray | None, str | None]:
    try:
        data = reader.read(seed.image)
        return decode_image(data, size, max_pixels=max_pixels, budget=budget), None
    except (_SourceError, RemoteError, MediaError) as exc:
        message = f"{seed.image}: {exc}" if isinstance(exc, MediaError) else str(exc)
    # A bad seed is data: whatever an fsspec backend raises, the run goes on.
    except Exception as exc:
        message = f"cannot read {seed.image}: {type(exc).__name__}: {exc}"
    log.debug("seed %s: %s", seed.id, message)
    return None, message


class _SourceError(Exception):
    """The image bytes could not be had; the message names the image."""


@dataclass
class _TarSlot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tar: tarfile.TarFile | None = None
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)


def _open_regular(path: str, image: str) -> Any:
    """A binary handle on ``path``, refused unless it is a regular file.

    Checked before opening (a device is never opened) and again on the open
    handle (the path cannot be swapped in between); the open itself does not
    block, so a FIFO with no writer cannot hang the thread.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _SourceError(f"{image} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise _SourceError(f"no such file: {image}") from exc
    except OSError as exc:
        raise _SourceError(f"cannot read {image}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _SourceError(f"{image} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _Call:
    """One remote read run on its own thread, so the loading thread can stop waiting for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.response: Any = None  # the HTTP response being read, shut down on timeout

    def abort(self) -> None:
        raw = getattr(self.response, "raw", None)
        shutdown = getattr(raw, "shutdown", None)  # urllib3 >= 2.3: unblocks a read
        try:
            if shutdown is not None:
                shutdown()
            elif self.response is not None:
                self.response.close()
        except Exception:  # the read may be ending on its own at this moment
            log.debug("aborting a seed read", exc_info=True)


class _ImageReader:
    """The bytes of a seed image, wherever it lives; shared by the loading threads.

    Keeps ``requests`` sessions for reuse (each used by one thread at a time;
    sessions are not thread-safe) and one indexed tar per tar, whose reads are
    serialised because they seek one shared file handle. Every remote read
    runs against a deadline of ``timeout`` seconds for the whole read.
    """

    def __init__(self, timeout: float, max_bytes: int = MAX_IMAGE_BYTES,
                 protocols: Protocols | None = None, public_only: bool = False):  # fmt: skip
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.protocols = protocols or Protocols()
        self.public_only = public_only
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._idle: list[requests.Session] = []
        self._tars: dict[str, _TarSlot] = {}

    def read(self, image: str) -> bytes:
        if not image:
            raise _SourceError("no image given")
        parsed = urlparse(image)
        scheme = parsed.scheme.lower()
        if scheme == "tar" and "::" in image:
            return self._read_tar_member(image)
        self.protocols.check(image)
        if scheme in ("http", "https"):
            return self._bounded(self._read_http, image)
        if scheme == "file":
            return self._read_local(url2pathname(parsed.path), image)
        if _is_local(image):
            return self._read_local(os.path.expanduser(image), image)
        return self._bounded(self._read_fsspec, image)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions, self._idle = self._sessions, [], []
            tars, self._tars = self._tars, {}
        for session in sessions:
            session.close()
        for slot in tars.values():
            if slot.tar is not None:
                slot.tar.close()

    def _read_limited(self, handle: Any, image: str) -> bytes:
        data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _SourceError(f"{image} is larger than {_mb(self.max_bytes)}")
        return data

    def _read_local(self, path: str, image: str) -> bytes:
        with _open_regular(path, image) as handle:
            if os.fstat(handle.fileno()).st_size > self.max_bytes:
                raise _SourceError(f"{image} is larger than {_mb(self.max_bytes)}")
            try:
                return self._read_limited(handle, image)
            except OSError as exc:
                raise _SourceError(f"cannot read {image}: {exc.strerror or exc}") from exc

    def _bounded(self, read: Any, url: str) -> bytes:
        """``read(url, call, deadline)`` on a daemon thread, waited for until the deadline.

        A backend stuck in a call (a server that accepts and never answers, a
        name that never resolves, an object store client that retries) cannot
        hold a loading thread, nor the pool's shutdown, past the deadline.
        """
        deadline = time.monotonic() + self.timeout
        call = _Call()

        def run() -> None:
            try:
                call.value = read(url, call, deadline)
            except BaseException as exc:  # handed to the waiting thread
                call.error = exc
            finally:
                call.done.set()

        threading.Thread(target=run, name="capmine-seed-read", daemon=True).start()
        if not call.done.wait(self.timeout + _GRACE):
            call.abort()
            raise _SourceError(f"timed out after {self.timeout:g} s reading {url}")
        if call.error is not None:
            raise call.error
        return call.value

    def _read_fsspec(self, url: str, call: _Call, deadline: float) -> bytes:
        import fsspec

        try:
            with fsspec.open(url, "rb") as handle:
                return self._read_limited(handle, url)
        except FileNotFoundError as exc:
            raise _SourceError(f"no such file: {url}") from exc
        except (OSError, ValueError, ImportError) as exc:
            raise _SourceError(f"cannot read {url}: {exc}") from exc

    def _read_tar_member(self, url: str) -> bytes:
        member, target = url[len("tar://") :].split("::", 1)
        self.protocols.check(target)
        if not _is_local(target) and urlparse(target).scheme.lower() != "file":
            raise _SourceError(f"{url}: only tars on local disk are read")
        slot = self._tar(target)
        info = slot.members.get(member_name(member))
        if info is None:
            raise _SourceError(f"no member {member} in {target}")
        if info.size > self.max_bytes:
            raise _SourceError(f"{url} is larger than {_mb(self.max_bytes)}")
        with slot.lock:
            try:
                handle = slot.tar.extractfile(info)
                return self._read_limited(handle, url) if handle else b""
            except (OSError, tarfile.TarError) as exc:
                raise _SourceError(f"cannot read {member} in {target}: {exc}") from exc

    def _tar(self, target: str) -> _TarSlot:
        """The tar with its members indexed by name, opened by the first thread that needs it."""
        if urlparse(target).scheme.lower() == "file":
            target = url2pathname(urlparse(target).path)
        with self._lock:
            slot = self._tars.setdefault(target, _TarSlot())
        with slot.lock:
            if slot.tar is None:
                handle = _open_regular(target, target)
                try:
                    slot.tar = tarfile.open(fileobj=handle, mode="r:*")
                    members = slot.tar.getmembers()
                except (OSError, tarfile.TarError) as exc:
                    slot.tar = None
                    handle.close()
                    raise _SourceError(f"cannot open tar {target}: {exc}") from exc
                slot.members = {member_name(m.name): m for m in members if m.isfile()}
        return slot

    def _read_http(self, url: str, call: _Call, deadline: float) -> bytes:
        session = self._borrow()
        try:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                if self.public_only:
                    check_public_host(current)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise requests.Timeout()
                with session.get(current, timeout=(remaining, remaining), stream=True,
                                 allow_redirects=False) as response:  # fmt: skip
                    call.response = response
                    if response.is_redirect:
                        current = _redirect_target(current, response.headers["Location"])
                        continue
                    if response.status_code >= 400:
                        raise _SourceError(f"HTTP {response.status_code} for {url}")
                    declared = response.headers.get("Content-Length", "")
                    if declared.isdigit() and int(declared) > self.max_bytes:
                        raise _SourceError(f"{url} is larger than {_mb(self.max_bytes)}")
                    return self._download(response, url, deadline)
            raise _SourceError(f"more than {MAX_REDIRECTS} redirects fetching {url}")
        except requests.Timeout as exc:
            raise _SourceError(f"timed out after {self.timeout:g} s fetching {url}") from exc
        except requests.RequestException as exc:
            if call.done.is_set() or time.monotonic() > deadline:  # shut down by the watchdog
                raise _SourceError(f"timed out after {self.timeout:g} s fetching {url}") from exc
            raise _SourceError(f"cannot fetch {url}: {exc}") from exc
        finally:
            self._give_back(session)

    def _download(self, response: requests.Response, url: str, deadline: float) -> bytes:
        """The body, read as it arrives: each socket read returns what came, so a server
        trickling bytes meets the deadline too (``iter_content`` waits for a full chunk)."""
        read1 = getattr(response.raw, "read1", None)
        chunks = (
            iter(lambda: read1(64 * 1024, decode_content=True), b"")
            if read1 is not None
            else response.iter_content(chunk_size=64 * 1024)
        )
        data = bytearray()
        for chunk in chunks:
            data += chunk
            if len(data) > self.max_bytes:
                raise _SourceError(f"{url} is larger than {_mb(self.max_bytes)}")
            if time.monotonic() > deadline:
                raise requests.Timeout()
        return bytes(data)

    def _borrow(self) -> requests.Session:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        session.max_redirects = MAX_REDIRECTS
        if self.public_only:
            adapter = PublicOnlyAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        with self._lock:
            self._sessions.append(session)
        return session

    def _give_back(self, session: requests.Session) -> None:
        with self._lock:
            if session in self._sessions:  # not closed meanwhile
                self._idle.append(session)


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect points, refused unless it is http(s)."""
    from urllib.parse import urljoin

    target = urljoin(url, location)
    scheme = urlparse(target).scheme.lower()
    if scheme not in REDIRECT_SCHEMES:
        raise _SourceError(f"{url} redirects to scheme {scheme!r}, not allowed (http and https)")
    return target
