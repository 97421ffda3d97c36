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
import logging
import math
import os
import tarfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
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
from media.images import decode_image
from media.tars import split_name

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
# requests' timeout bounds each connect and read, so a server trickling bytes
# would never trip it; a whole download gets this many timeouts at most.
_DOWNLOAD_TIMEOUTS = 6


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
    paths = [Path(text)]
    if "{" in text and not paths[0].exists():
        paths = [Path(p) for p in braceexpand(text)]
    seeds = [seed for one in paths for seed in _read_one(one)]
    _check_unique(seeds, text)
    failed = sum(seed.error is not None for seed in seeds)
    log.info(
        "read %d seeds from %s (%d without a usable caption or image)", len(seeds), text, failed
    )
    return seeds


def _read_one(path: Path) -> list[Seed]:
    path = path.expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"seeds not found: {path}; accepted: {ACCEPTED}")
    if path.is_dir():
        return _read_folder(path)
    reader = _READERS.get(_format_suffix(path))
    if reader is None:
        raise ValueError(f"unknown seeds format: {path}; accepted: {ACCEPTED}")
    return reader(path)


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
    caption = clean_caption(caption_file.read_text(encoding="utf-8", errors="replace"))
    return Seed(image.stem, caption, str(image), None if caption else "missing caption")


def clean_caption(text: str) -> str:
    """Whitespace runs (newlines and tabs included) as single spaces, trimmed: one caption, one line."""
    return " ".join(text.split())


# ------------------------------------------------------------- table formats


def _read_tsv(path: Path) -> list[Seed]:
    """A header naming known columns means a table; otherwise the published CC3M ``caption<TAB>url`` rows."""
    import pandas as pd  # heavy; only table inputs need it

    first = _parse(
        pd.read_csv,
        path,
        sep="\t",
        header=None,
        nrows=1,
        dtype=str,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
    )
    if any(str(name).strip().lower() in _HEADER_NAMES for name in first.iloc[0]):
        return _table_seeds(_read_delimited(path, "\t"), path)
    return _read_cc3m(path)


def _read_cc3m(path: Path) -> list[Seed]:
    import pandas as pd

    # CC3M captions are unquoted and may hold '"': quoting would merge rows.
    table = _parse(
        pd.read_csv, path, sep="\t", header=None, dtype=str, na_filter=False, quoting=csv.QUOTE_NONE
    )
    if table.shape[1] < 2:
        raise ValueError(
            f"{path}: rows have one field; expected caption<TAB>image (CC3M) or a header naming "
            f"an image column ({', '.join(IMAGE_COLUMNS)}) and a caption column"
        )
    return _table_seeds({"caption": table[0].tolist(), "url": table[1].tolist()}, path)


def _read_csv(path: Path) -> list[Seed]:
    return _table_seeds(_read_delimited(path, ","), path)


def _read_delimited(path: Path, sep: str) -> dict[str, list[Any]]:
    import pandas as pd

    table = _parse(
        pd.read_csv,
        path,
        sep=sep,
        dtype=str,
        na_filter=False,
        usecols=lambda name: name.strip().lower() in _HEADER_NAMES,
    )
    return {name: table[name].tolist() for name in table.columns}


def _read_parquet(path: Path) -> list[Seed]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    wanted = [name for name in names if name.strip().lower() in _HEADER_NAMES]
    table = pq.read_table(path, columns=wanted)
    return _table_seeds({name: table.column(name).to_pylist() for name in wanted}, path)


def _read_json(path: Path) -> list[Seed]:
    """JSON lines, or one JSON array of records (img2dataset's ``json`` input format)."""
    import fsspec
    import pandas as pd

    with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8") as f:
        is_array = f.read(4096).lstrip().startswith("[")
    table = _parse(pd.read_json, path, lines=not is_array, dtype=False)
    return _table_seeds({str(name): table[name].tolist() for name in table.columns}, path)


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
    parts = split_name(member.name) if member.isfile() else None
    if parts is None:
        return
    key, extension = parts[0], parts[1].lower()
    sample = samples.setdefault(key, {"images": {}})
    if extension in ("txt", "json"):
        handle = tar.extractfile(member)
        sample[extension] = handle.read().decode("utf-8", errors="replace") if handle else ""
    elif "." + extension in IMAGE_EXTENSIONS:
        sample["images"][extension] = member.name


def _tar_seed(key: str, sample: dict[str, Any], tar: Path) -> Seed:
    meta = _json_object(sample.get("json"), key, tar)
    seed_id = str(meta.get("key") or key)
    caption = clean_caption(sample.get("txt") or str(meta.get("caption") or ""))
    member = next(
        (sample["images"][e[1:]] for e in IMAGE_EXTENSIONS if e[1:] in sample["images"]), None
    )
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
    seeds: Iterable[Seed], size: int, *, workers: int = 16, timeout: float = 10.0
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """``(index, (size, size, 3) uint8, None)`` or ``(index, None, error)`` for every seed, in input order.

    Images load on ``workers`` threads (fetching is I/O bound, and PIL releases
    the GIL while decoding), but at most ``4 * workers`` are in flight or
    waiting to be yielded, so millions of seeds stream in constant memory.
    Seeds that already carry an error are passed through unloaded. One bad
    seed never raises: its error names the image and what is wrong.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    reader = _ImageReader(timeout=timeout)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capmine-seed-images")
    pending: deque[tuple[int, Future | str]] = deque()
    try:
        for index, seed in enumerate(seeds):
            if len(pending) >= 4 * workers:
                yield _settle(*pending.popleft())
            pending.append((index, seed.error or pool.submit(_load_one, reader, seed, size)))
        while pending:
            yield _settle(*pending.popleft())
    finally:
        # Also runs when the consumer stops early: queued loads are dropped and
        # the running ones end within their timeout.
        pool.shutdown(wait=True, cancel_futures=True)
        reader.close()


def _settle(index: int, work: Future | str) -> tuple[int, np.ndarray | None, str | None]:
    """Wait for one load; a string is an error the seed already carried."""
    if isinstance(work, str):
        return index, None, work
    array, error = work.result()
    return index, array, error


def _load_one(reader: _ImageReader, seed: Seed, size: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_image(reader.read(seed.image), size), None
    except (_SourceError, MediaError) as exc:
        message = str(exc) if isinstance(exc, _SourceError) else f"{seed.image}: {exc}"
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
    fs: Any = None


class _ImageReader:
    """The bytes of a seed image, wherever it lives; shared by the loading threads.

    Keeps one ``requests`` session per thread (connection reuse; sessions are
    not thread-safe) and one indexed tar filesystem per tar, whose reads are
    serialised because they seek one shared file handle.
    """

    def __init__(self, timeout: float, max_bytes: int = MAX_IMAGE_BYTES):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._tars: dict[str, _TarSlot] = {}

    def read(self, image: str) -> bytes:
        if not image:
            raise _SourceError("no image given")
        parsed = urlparse(image)
        scheme = parsed.scheme.lower()
        if scheme in ("http", "https"):
            return self._read_http(image)
        if scheme == "tar" and "::" in image:
            return self._read_tar_member(image)
        if scheme == "file":
            return self._read_local(url2pathname(parsed.path), image)
        if _is_local(image):
            return self._read_local(os.path.expanduser(image), image)
        return self._read_fsspec(image)

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        for slot in self._tars.values():
            if slot.fs is not None:
                slot.fs.close()
                slot.fs.fo.close()

    def _read_limited(self, handle: Any, image: str) -> bytes:
        data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise _SourceError(f"{image} is larger than {self.max_bytes // 2**20} MB")
        return data

    def _read_local(self, path: str, image: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return self._read_limited(handle, image)
        except FileNotFoundError as exc:
            raise _SourceError(f"no such file: {image}") from exc
        except OSError as exc:
            raise _SourceError(f"cannot read {image}: {exc.strerror or exc}") from exc

    def _read_fsspec(self, url: str) -> bytes:
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
        slot = self._tar(target)
        with slot.lock:
            try:
                with slot.fs.open(member, "rb") as handle:
                    return self._read_limited(handle, url)
            except FileNotFoundError as exc:
                raise _SourceError(f"no member {member} in {target}") from exc

    def _tar(self, target: str) -> _TarSlot:
        """The tar's indexed filesystem, opened by the first thread that needs it."""
        from fsspec.implementations.tar import TarFileSystem

        with self._lock:
            slot = self._tars.setdefault(target, _TarSlot())
        with slot.lock:
            if slot.fs is None:
                try:
                    slot.fs = TarFileSystem(fo=target)
                except FileNotFoundError as exc:
                    raise _SourceError(f"no such tar: {target}") from exc
                except (OSError, tarfile.TarError) as exc:
                    raise _SourceError(f"cannot open tar {target}: {exc}") from exc
        return slot

    def _read_http(self, url: str) -> bytes:
        try:
            with self._session().get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code >= 400:
                    raise _SourceError(f"HTTP {response.status_code} for {url}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _SourceError(f"{url} is larger than {self.max_bytes // 2**20} MB")
                return self._download(response, url)
        except requests.Timeout as exc:
            raise _SourceError(f"timed out after {self.timeout:g} s fetching {url}") from exc
        except requests.RequestException as exc:
            raise _SourceError(f"cannot fetch {url}: {exc}") from exc

    def _download(self, response: requests.Response, url: str) -> bytes:
        deadline = time.monotonic() + _DOWNLOAD_TIMEOUTS * self.timeout
        data = bytearray()
        for chunk in response.iter_content(chunk_size=64 * 1024):
            data += chunk
            if len(data) > self.max_bytes:
                raise _SourceError(f"{url} is larger than {self.max_bytes // 2**20} MB")
            if time.monotonic() > deadline:
                raise _SourceError(
                    f"download of {url} took over {_DOWNLOAD_TIMEOUTS * self.timeout:g} s"
                )
        return bytes(data)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session
