"""Get a video onto local disk: as it is, over plain HTTP, or through yt-dlp.

Three routes, chosen by the URL alone (no probing request):

* a local path or ``file://`` URL is used in place;
* an ``http(s)`` URL whose path ends in a video extension is streamed with
  ``requests`` into the cache, under a temporary name renamed on success, so a
  half-written file is never mistaken for a video;
* any other ``http(s)`` URL is a page and goes to yt-dlp, used as a library.

Every failure is a :class:`FetchError` with a ``kind`` that says whether trying
again could help (``rate_limited``, ``server_error``, ``network``, ``timeout``)
or not (``not_found``, ``forbidden``, ``too_large``, ``corrupt``,
``unsupported``, ``ytdlp``); the message keeps the underlying error's text.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3

from miners.videos import VIDEO_EXTENSIONS
from shards.keys import video_id_for

log = logging.getLogger(__name__)

USER_AGENT = "capmine/0.1 (video mining; +https://github.com/capmine)"
FETCH_ERROR_KINDS = frozenset(
    {
        "not_found",
        "forbidden",
        "rate_limited",
        "server_error",
        "network",
        "timeout",
        "too_large",
        "corrupt",
        "unsupported",
        "ytdlp",
    }
)
_CHUNK = 1 << 20
_WALL_FACTOR = 30  # whole-download limit, in units of the per-read timeout


class FetchError(Exception):
    """A video that could not be fetched; ``kind`` names why, for counts and retries."""

    def __init__(self, kind: str, url: str, detail: str) -> None:
        if kind not in FETCH_ERROR_KINDS:
            raise ValueError(f"unknown fetch error kind {kind!r}")
        super().__init__(f"{kind}: {url}: {detail}")
        self.kind = kind
        self.url = url
        self.detail = detail


@dataclass
class Fetched:
    """A video on local disk; ``downloaded`` says it is a cache copy that may be removed."""

    path: Path
    downloaded: bool
    info: dict[str, Any] = field(default_factory=dict)


def is_remote(url: str) -> bool:
    """True for URLs that need the network (any scheme but ``file``; ``C:`` is a drive)."""
    scheme = urlparse(url).scheme.lower()
    return len(scheme) > 1 and scheme != "file"


def is_direct_media(url: str) -> bool:
    """True for an ``http(s)`` URL whose path ends in a video extension.

    Decided by extension alone: asking the server for its content type would
    cost a request per video, and page URLs (no video extension) go to yt-dlp,
    which handles direct media too.
    """
    parsed = urlparse(url)
    if parsed.scheme.lower() not in ("http", "https"):
        return False
    return Path(unquote(parsed.path)).suffix.lower() in VIDEO_EXTENSIONS


def fetch_video(
    url: str,
    cache_dir: Path,
    *,
    timeout: float = 60.0,
    max_height: int = 360,
    max_bytes: int | None = 2_000_000_000,
    wall_timeout: float | None = None,
) -> Fetched:
    """The video at ``url`` as a local file, downloading it into ``cache_dir`` when remote.

    ``timeout`` bounds connecting and each read (seconds); ``wall_timeout``
    bounds a whole HTTP download (default ``30 * timeout``) so a server that
    trickles bytes cannot hold a worker forever. ``max_height`` caps yt-dlp's
    format choice (frames are scaled down for CLIP anyway); ``max_bytes`` caps
    the file size (None: no cap). yt-dlp downloads are bounded by ``timeout``
    per socket operation only. Raises :class:`FetchError`.
    """
    scheme = urlparse(url).scheme.lower()
    if not is_remote(url):
        return _local(url)
    if scheme not in ("http", "https"):
        raise FetchError("unsupported", url, f"scheme {scheme!r} is not supported (http, https)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if is_direct_media(url):
        wall = wall_timeout if wall_timeout is not None else timeout * _WALL_FACTOR
        return _download_http(url, cache_dir, timeout=timeout, wall=wall, max_bytes=max_bytes)
    return _download_ytdlp(
        url, cache_dir, timeout=timeout, max_height=max_height, max_bytes=max_bytes
    )


def remove_download(fetched: Fetched) -> None:
    """Delete a cache copy once used; a user's own file (``downloaded`` False) is never touched."""
    if fetched.downloaded:
        fetched.path.unlink(missing_ok=True)


# ---------------------------------------------------------------- local files


def _local(url: str) -> Fetched:
    """A local path or ``file://`` URL, checked to be a non-empty file."""
    parsed = urlparse(url)
    if parsed.scheme.lower() == "file":
        path = Path(url2pathname(parsed.path))
    else:
        path = Path(url).expanduser()
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise FetchError("not_found", url, f"{path} {what}")
    size = path.stat().st_size
    if size == 0:
        raise FetchError("corrupt", url, f"empty file {path}")
    return Fetched(path=path, downloaded=False, info={"bytes": size})


# ---------------------------------------------------------------- direct HTTP


def _http_kind(status: int) -> str:
    """The error kind of an HTTP status; a 4xx not listed is a request we cannot make work."""
    if status in (404, 410):
        return "not_found"
    if status in (401, 403):
        return "forbidden"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "unsupported"


def _download_http(
    url: str, cache_dir: Path, *, timeout: float, wall: float, max_bytes: int | None
) -> Fetched:
    """Stream ``url`` into ``cache_dir/<video_id><ext>``, reusing a finished copy."""
    ext = Path(unquote(urlparse(url).path)).suffix.lower()
    final = cache_dir / f"{video_id_for(url)}{ext}"
    if final.is_file() and final.stat().st_size > 0:
        log.debug("reusing cached %s for %s", final, url)
        return Fetched(final, True, {"extractor": "http", "bytes": final.stat().st_size})
    # a unique temp name lets two workers fetch the same URL without clobbering
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{final.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            info = _stream(url, out, timeout=timeout, wall=wall, max_bytes=max_bytes)
        tmp.chmod(0o644)  # mkstemp makes files owner-only; other workers may read the cache
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("downloaded %s (%d bytes) to %s", url, info["bytes"], final)
    return Fetched(final, True, info)


def _stream(url: str, out: Any, *, timeout: float, wall: float, max_bytes: int | None) -> dict:
    """Write the body of ``url`` to ``out``, checking status, size and time; the info dict."""
    # identity encoding keeps Content-Length comparable with the bytes we count
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    deadline = time.monotonic() + wall
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as resp:
            expected = _check_response(url, resp, max_bytes)
            received = 0
            for chunk in _chunks(resp):
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise FetchError("too_large", url, f"more than max_bytes={max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError("timeout", url, f"download took longer than {wall:g} s")
                out.write(chunk)
            content_type = resp.headers.get("Content-Type", "")
            final_url = resp.url
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise _request_error(url, e) from e
    if expected is not None and received < expected:
        raise FetchError("network", url, f"short body: {received} of {expected} bytes")
    if received == 0:
        raise FetchError("corrupt", url, "empty file (server sent no bytes)")
    return {
        "extractor": "http",
        "http_content_type": content_type,
        "bytes": received,
        "final_url": final_url,
    }


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` returns after one socket read, so the wall-clock
    check runs even when a server trickles bytes (``iter_content`` waits for a full chunk)."""
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from resp.iter_content(_CHUNK)
        return
    while chunk := read1(_CHUNK, decode_content=True):
        yield chunk


def _check_response(url: str, resp: requests.Response, max_bytes: int | None) -> int | None:
    """Raise for a bad status, an HTML body or a declared size over ``max_bytes``; the size."""
    if resp.status_code >= 400:
        kind = _http_kind(resp.status_code)
        raise FetchError(kind, url, f"HTTP {resp.status_code} {resp.reason}")
    content_type = resp.headers.get("Content-Type", "").lower()
    if content_type.startswith("text/html"):
        # a .mp4 URL answered with HTML is a login or error page, not a video
        raise FetchError("corrupt", url, f"server sent {content_type}, not a video")
    length = resp.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    if resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        expected = None  # the length counts compressed bytes; urllib3 still checks those
    if expected is not None and max_bytes is not None and expected > max_bytes:
        raise FetchError("too_large", url, f"{expected} bytes > max_bytes={max_bytes}")
    return expected


def _request_error(url: str, e: Exception) -> FetchError:
    """A FetchError for a requests (or, while streaming, urllib3) failure, keeping its text."""
    text = f"{type(e).__name__}: {e}"
    # requests reports a read timeout during streaming as a ConnectionError
    if isinstance(e, requests.Timeout | urllib3.exceptions.TimeoutError) or "timed out" in text:
        return FetchError("timeout", url, text)
    if isinstance(e, requests.exceptions.ChunkedEncodingError | urllib3.exceptions.ProtocolError):
        return FetchError("network", url, f"body cut short: {text}")
    if isinstance(e, requests.ConnectionError):
        return FetchError("network", url, text)
    if isinstance(e, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        return FetchError("unsupported", url, text)
    return FetchError("network", url, text)


# ---------------------------------------------------------------- yt-dlp

# (kind, pattern) in order: the first match wins, so specific beats general
_YTDLP_KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("not_found", re.compile(r"HTTP Error (404|410)")),
    ("forbidden", re.compile(r"HTTP Error 40[13]")),
    ("rate_limited", re.compile(r"HTTP Error 429|Too Many Requests|rate.?limit", re.I)),
    ("server_error", re.compile(r"HTTP Error 5\d\d")),
    ("unsupported", re.compile(r"Unsupported URL", re.I)),
    (
        "forbidden",
        re.compile(r"Private video|Sign in to|login required|members.only|age.restricted", re.I),
    ),
    # not "Requested format is not available": that is a format problem
    ("not_found", re.compile(r"removed|unavailable|does not exist|video is not available", re.I)),
    ("timeout", re.compile(r"timed out", re.I)),
    ("too_large", re.compile(r"max-filesize", re.I)),
    (
        "network",
        re.compile(
            r"Connection refused|Name or service not known|urlopen error|Connection reset", re.I
        ),
    ),
]


def _ytdlp_kind(message: str) -> str:
    """The error kind named by a yt-dlp error message ("ytdlp" when none fits)."""
    for kind, pattern in _YTDLP_KINDS:
        if pattern.search(message):
            return kind
    return "ytdlp"


class _YtdlpLog:
    """Routes yt-dlp's output to our logger: it must not print, and errors are raised anyway."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def _ytdlp_options(
    video_id: str, cache_dir: Path, *, timeout: float, max_height: int, max_bytes: int | None
) -> dict[str, Any]:
    """yt-dlp options: small format, one file named by video id, quiet, no cookies or cache."""
    h = max_height
    return {
        # best video+audio at most max_height; any size only when nothing is that small
        "format": f"bv*[height<={h}]+ba/b[height<={h}]/bv*+ba/b",
        "merge_output_format": "mp4",  # used only when video and audio need merging
        # "%" in the folder name would read as a template field
        "outtmpl": str(cache_dir).replace("%", "%%") + f"/{video_id}.%(ext)s",
        "socket_timeout": timeout,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "playlist_items": "1",  # a page with several videos yields only its first
        "retries": 1,
        "fragment_retries": 1,
        "extractor_retries": 1,
        "max_filesize": max_bytes,
        "cachedir": False,
        "logger": _YtdlpLog(),
    }


def _cached_ytdlp_file(cache_dir: Path, video_id: str) -> Path | None:
    """A finished yt-dlp download of ``video_id`` in the cache (partial files never match)."""
    for ext in sorted(VIDEO_EXTENSIONS):
        path = cache_dir / f"{video_id}{ext}"
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _download_ytdlp(
    url: str, cache_dir: Path, *, timeout: float, max_height: int, max_bytes: int | None
) -> Fetched:
    """Download a page's video with yt-dlp into ``cache_dir/<video_id>.<ext>``."""
    video_id = video_id_for(url)
    cached = _cached_ytdlp_file(cache_dir, video_id)
    if cached is not None:
        log.debug("reusing cached %s for %s", cached, url)
        return Fetched(cached, True, {"extractor": "ytdlp-cache", "bytes": cached.stat().st_size})
    opts = _ytdlp_options(
        video_id, cache_dir, timeout=timeout, max_height=max_height, max_bytes=max_bytes
    )
    try:
        path, info = _run_ytdlp(url, opts, max_bytes)
    except FetchError:
        _remove_partials(cache_dir, video_id)
        raise
    return Fetched(path, True, _ytdlp_info(info, path))


def _run_ytdlp(
    url: str, opts: dict[str, Any], max_bytes: int | None
) -> tuple[Path, dict[str, Any]]:
    """One yt-dlp download; its errors become FetchErrors that keep yt-dlp's message."""
    import yt_dlp  # heavy: only page URLs need it

    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = _first_entry(url, ydl.extract_info(url, download=True))
            path = _downloaded_path(ydl, info)
    except yt_dlp.utils.YoutubeDLError as e:
        message = str(e)
        raise FetchError(_ytdlp_kind(message), url, message) from e
    if not path.is_file() or path.stat().st_size == 0:
        raise _missing_file_error(url, info, path, max_bytes)
    return path, info


def _remove_partials(cache_dir: Path, video_id: str) -> None:
    """Delete what a failed yt-dlp run left (``.part``, per-format files): the cache
    holds finished videos only, and a failed one had none (the cache was checked first)."""
    for leftover in cache_dir.glob(f"{video_id}.*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def _first_entry(url: str, info: dict[str, Any] | None) -> dict[str, Any]:
    """The video's info dict, unwrapping the playlist a multi-video page gives."""
    if info and info.get("_type") == "playlist":
        entries = [e for e in info.get("entries") or [] if e]
        info = entries[0] if entries else None
    if not info:
        raise FetchError("ytdlp", url, "yt-dlp found no video")
    return info


def _downloaded_path(ydl: Any, info: dict[str, Any]) -> Path:
    """Where yt-dlp wrote the file: the merged output when it merged formats."""
    downloads = info.get("requested_downloads") or []
    if downloads and downloads[0].get("filepath"):
        return Path(downloads[0]["filepath"])
    return Path(ydl.prepare_filename(info))


def _missing_file_error(
    url: str, info: dict[str, Any], path: Path, max_bytes: int | None
) -> FetchError:
    """yt-dlp skips files over max_filesize without raising; say so rather than 'no file'."""
    size = info.get("filesize") or info.get("filesize_approx")
    if max_bytes is not None and size and size > max_bytes:
        return FetchError("too_large", url, f"{size} bytes > max_bytes={max_bytes}")
    return FetchError("ytdlp", url, f"yt-dlp reported success but wrote no file at {path}")


def _ytdlp_info(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """The few JSON-safe facts worth keeping from yt-dlp's large info dict."""
    keep = ("title", "extractor", "webpage_url", "format_id", "ext", "height", "duration")
    out = {k: info[k] for k in keep if info.get(k) is not None}
    out["bytes"] = path.stat().st_size
    return out
