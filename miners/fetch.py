"""Get a video onto local disk: as it is, over plain HTTP, or through yt-dlp.

Three routes, chosen by the URL alone (no probing request):

* a local path or ``file://`` URL is used in place;
* an ``http(s)`` URL whose path ends in a video extension is streamed with
  ``requests`` into the cache, under a temporary name renamed on success, so a
  half-written file is never mistaken for a video;
* any other ``http(s)`` URL is a page and goes to yt-dlp, used as a library.

Every failure is a :class:`FetchError` whose ``kind`` says whether trying again
could help. :data:`TRANSIENT` kinds (``rate_limited``, ``server_error``,
``network``, ``timeout``) are retried with exponential backoff
(:class:`RetryPolicy`); the others fail at once: ``not_found``, ``forbidden``,
``private``, ``removed``, ``geo_blocked``, ``bot_check``, ``too_large``,
``unsupported``, ``ytdlp`` and ``corrupt``. A body cut short (fewer bytes than
Content-Length, a chunked stream that breaks off) is ``network``, so retried;
``corrupt`` is a complete answer that is not a video (an empty body, an HTML
page for a ``.mp4`` URL, an empty local file), which another try would repeat.
The message keeps the underlying error's text and, after retries, says how many
attempts were made.

Remote fetches go through a :class:`HostLimiter`: request starts to one host
are spaced by a minimum interval and concurrency is bounded per host and in
all. The module's :data:`DEFAULT_LIMITER` is shared by the threads of a process
(each Dask worker process has its own); local files are never limited.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
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
        "private",
        "removed",
        "geo_blocked",
        "bot_check",
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
# kinds another try may cure; "corrupt" is not one (see the module docstring)
TRANSIENT = frozenset({"rate_limited", "server_error", "network", "timeout"})
_CHUNK = 1 << 20
_WALL_FACTOR = 30  # whole-download limit, in units of the per-read timeout
# seconds one connect or read may stall when a caller gives only a whole-download limit
SOCKET_TIMEOUT = 60.0
# yt-dlp live_status values of a stream with no end yet: nothing finite to download
_LIVE = frozenset({"is_live", "is_upcoming"})


class FetchError(Exception):
    """A video that could not be fetched; ``kind`` names why, for counts and retries.

    ``retry_after`` is the server's Retry-After in seconds, when it sent one;
    ``attempts`` is how many tries the fetch made.
    """

    def __init__(
        self,
        kind: str,
        url: str,
        detail: str,
        *,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        if kind not in FETCH_ERROR_KINDS:
            raise ValueError(f"unknown fetch error kind {kind!r}")
        super().__init__(f"{kind}: {url}: {detail}")
        self.kind = kind
        self.url = url
        self.detail = detail
        self.retry_after = retry_after
        self.attempts = attempts

    @property
    def transient(self) -> bool:
        """True when trying again later may succeed."""
        return self.kind in TRANSIENT

    def __reduce__(self):  # keyword fields survive pickling (Dask moves errors between processes)
        return _rebuild_error, (self.kind, self.url, self.detail, self.retry_after, self.attempts)


def _rebuild_error(
    kind: str, url: str, detail: str, retry_after: float | None, attempts: int
) -> FetchError:
    return FetchError(kind, url, detail, retry_after=retry_after, attempts=attempts)


@dataclass(frozen=True)
class RetryPolicy:
    """How a fetch retries transient errors: exponential backoff with jitter.

    After failed attempt ``i`` (0-based) it waits ``base_delay * 2**i`` seconds,
    plus up to ``jitter`` times that at random (so workers that failed together
    do not come back together), never more than ``max_delay``. A server's
    Retry-After (429, 503) replaces the backoff, capped at ``max_delay``.
    ``sleep`` is injectable so tests need not wait.
    """

    attempts: int = 3  # tries in all, the first included; 1 means no retry
    base_delay: float = 1.0  # seconds before the first retry
    max_delay: float = 30.0  # seconds, cap on any one wait, Retry-After included
    jitter: float = 0.2  # fraction of the backoff added at random
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.jitter < 0:
            raise ValueError("base_delay, max_delay and jitter must not be negative")

    def delay(self, failed: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``failed`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = self.base_delay * 2**failed
        return min(backoff * (1.0 + self.jitter * random.random()), self.max_delay)


DEFAULT_RETRY = RetryPolicy()


class HostLimiter:
    """Per-host politeness for a process: spaced request starts, bounded concurrency.

    A request to a host starts at least ``min_interval`` seconds after the
    previous start to that host; at most ``per_host`` requests run on one host
    and ``total`` in all. Thread-safe; a limiter pickles as a fresh one with the
    same settings (its locks and counters stay in the process that made them).
    The settings may be changed on a live limiter; they are read on each use.
    """

    def __init__(self, min_interval: float = 0.5, per_host: int = 4, total: int = 16) -> None:
        if min_interval < 0 or per_host < 1 or total < 1:
            raise ValueError("min_interval must be >= 0, per_host and total >= 1")
        self.min_interval = min_interval  # seconds between request starts to one host
        self.per_host = per_host  # requests running at once on one host
        self.total = total  # requests running at once on all hosts
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._running: dict[str, int] = {}
        self._next_start: dict[str, float] = {}  # monotonic time a host's next start may be

    def __getstate__(self) -> dict[str, Any]:
        return {"min_interval": self.min_interval, "per_host": self.per_host, "total": self.total}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        """Hold one of ``url``'s host slots, from its allotted start time until the block ends."""
        host = host_key(url)
        start = self._acquire(host)
        try:
            wait = start - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield
        finally:
            self._release(host)

    def _acquire(self, host: str) -> float:
        """Take a concurrency slot and reserve the next start time on ``host``."""
        with self._cond:
            self._cond.wait_for(lambda: self._has_room(host))
            self._running[host] = self._running.get(host, 0) + 1
            now = time.monotonic()
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self.min_interval
            return start

    def _has_room(self, host: str) -> bool:
        """Under both caps; called with the lock held."""
        running = self._running.get(host, 0)
        return running < self.per_host and sum(self._running.values()) < self.total

    def _release(self, host: str) -> None:
        with self._cond:
            self._running[host] -= 1
            if not self._running[host]:
                del self._running[host]
            if len(self._next_start) > 1024:  # forget idle hosts whose spacing has passed
                now = time.monotonic()
                for h in [h for h, t in self._next_start.items() if t <= now]:
                    if h not in self._running:
                        del self._next_start[h]
            self._cond.notify_all()


DEFAULT_LIMITER = HostLimiter()


def host_key(url: str) -> str:
    """The host a URL's requests go to, with its port when one is given (``a.org:8080``)."""
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    try:
        port = parsed.port
    except ValueError:  # a malformed port: the netloc still names a host
        return parsed.netloc.lower()
    return f"{host}:{port}" if port else host


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
    retry: RetryPolicy | None = DEFAULT_RETRY,
    limiter: HostLimiter | None = DEFAULT_LIMITER,
) -> Fetched:
    """The video at ``url`` as a local file, downloading it into ``cache_dir`` when remote.

    ``timeout`` bounds connecting and each read (seconds); ``wall_timeout``
    bounds each download attempt (default ``30 * timeout``, counted once the
    limiter lets it start) so a server that trickles bytes or streams for ever
    cannot hold a worker: past it the download stops as ``timeout``. It is also
    the budget for retries: no retry starts (or is waited for) past
    ``wall_timeout`` after the first attempt. ``max_height`` caps yt-dlp's
    format choice (frames are scaled down for CLIP anyway); ``max_bytes`` caps
    the bytes downloaded (None: no cap), checked against a declared size and
    again as bytes arrive, so a stream without a size stops as ``too_large``.
    Both limits hold for plain HTTP and yt-dlp alike, and a stopped download
    leaves no partial file. A live stream (yt-dlp's ``is_live``) has no end to
    download and is ``unsupported``. Transient errors are retried as ``retry``
    says (None: one attempt); remote requests go through ``limiter`` (None:
    unlimited). Raises :class:`FetchError`.
    """
    scheme = urlparse(url).scheme.lower()
    if not is_remote(url):
        return _local(url)
    if scheme not in ("http", "https"):
        raise FetchError("unsupported", url, f"scheme {scheme!r} is not supported (http, https)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    wall = wall_timeout if wall_timeout is not None else timeout * _WALL_FACTOR
    deadline = time.monotonic() + wall

    def attempt() -> Fetched:
        if is_direct_media(url):
            return _download_http(
                url, cache_dir, timeout=timeout, wall=wall, max_bytes=max_bytes,
                limiter=limiter,
            )  # fmt: skip
        return _download_ytdlp(
            url, cache_dir, timeout=timeout, wall=wall, max_height=max_height,
            max_bytes=max_bytes, limiter=limiter,
        )  # fmt: skip

    return _with_retries(url, attempt, retry, deadline)


def _with_retries(
    url: str, attempt: Callable[[], Fetched], retry: RetryPolicy | None, deadline: float
) -> Fetched:
    """``attempt()``, tried again after transient errors while ``retry`` and time allow."""
    attempts = retry.attempts if retry is not None else 1
    for failed in range(attempts):
        try:
            return attempt()
        except FetchError as e:
            tries = failed + 1
            delay = retry.delay(failed, e.retry_after) if retry is not None else 0.0
            if tries >= attempts or not e.transient or time.monotonic() + delay >= deadline:
                if tries == 1:
                    raise
                raise FetchError(
                    e.kind, url, f"{e.detail}, after {tries} attempts",
                    retry_after=e.retry_after, attempts=tries,
                ) from e  # fmt: skip
            log.info("retrying %s in %.1f s (attempt %d of %d): %s", url, delay, tries, attempts, e)
            retry.sleep(delay)  # type: ignore[union-attr]  # retry is set when attempts > 1
    raise AssertionError("unreachable: the last attempt returns or raises")


def _slot(limiter: HostLimiter | None, url: str) -> AbstractContextManager[None]:
    return limiter.slot(url) if limiter is not None else nullcontext()


def remove_download(fetched: Fetched) -> None:
    """Delete a cache copy once used; a user's own file (``downloaded`` False) is never touched."""
    if fetched.downloaded:
        fetched.path.unlink(missing_ok=True)


class SourceCache:
    """Local paths of source videos, for cutting; re-fetches a download that was removed.

    Shared by the threads cutting one shard: each source is looked up (or
    fetched again) once.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        timeout: float = 60.0,
        max_height: int = 360,
        wall_timeout: float | None = None,
        max_bytes: int | None = 2_000_000_000,
    ):
        self.cache_dir, self.timeout, self.max_height = Path(cache_dir), timeout, max_height
        self.wall_timeout, self.max_bytes = wall_timeout, max_bytes
        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}

    def path(self, video_id: str, url: str, local_path: str | None) -> Path:
        """Where ``url`` lies on disk: ``local_path`` while it exists, else fetched again."""
        with self._lock:
            if video_id not in self._paths:
                if local_path and Path(local_path).exists():
                    self._paths[video_id] = Path(local_path)
                else:
                    fetched = fetch_video(
                        url, self.cache_dir, timeout=self.timeout, max_height=self.max_height,
                        wall_timeout=self.wall_timeout, max_bytes=self.max_bytes,
                    )  # fmt: skip
                    self._paths[video_id] = fetched.path
            return self._paths[video_id]


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
    if status == 451:  # unavailable for legal reasons: a block where we are
        return "geo_blocked"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "unsupported"


def _download_http(
    url: str,
    cache_dir: Path,
    *,
    timeout: float,
    wall: float,
    max_bytes: int | None,
    limiter: HostLimiter | None,
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
        with os.fdopen(fd, "wb") as out, _slot(limiter, url):
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
        retry_after = None
        if resp.status_code in (429, 503):
            retry_after = _retry_after(resp.headers.get("Retry-After"))
        detail = f"HTTP {resp.status_code} {resp.reason}"
        if retry_after is not None:
            detail += f" (Retry-After {retry_after:g} s)"
        raise FetchError(kind, url, detail, retry_after=retry_after)
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


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date; None when unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


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
    # "Sign in to confirm you're not a bot": the IP is flagged; a quick retry will not help
    (
        "bot_check",
        re.compile(r"not a (ro)?bot|captcha|unusual traffic|confirm you are (a )?human", re.I),
    ),
    (
        "geo_blocked",
        re.compile(r"geo.?(restrict|block)|(in|from) your (country|location|region)", re.I),
    ),
    ("private", re.compile(r"private (video|account|playlist)|(video|account) is private", re.I)),
    ("not_found", re.compile(r"HTTP Error (404|410)")),
    ("forbidden", re.compile(r"HTTP Error 40[13]")),
    ("rate_limited", re.compile(r"HTTP Error 429|Too Many Requests|rate.?limit", re.I)),
    ("timeout", re.compile(r"HTTP Error 408")),
    ("server_error", re.compile(r"HTTP Error 5\d\d|temporarily unavailable", re.I)),
    ("unsupported", re.compile(r"Unsupported URL", re.I)),
    ("forbidden", re.compile(r"Sign in to|login required|members.only|age.restricted", re.I)),
    # not "Requested format is not available": that is a format problem
    (
        "removed",
        re.compile(
            r"removed|terminated|no longer available|been deleted|unavailable|"
            r"video is not available",
            re.I,
        ),
    ),
    ("not_found", re.compile(r"does not exist", re.I)),
    ("timeout", re.compile(r"timed out", re.I)),
    ("too_large", re.compile(r"max-filesize", re.I)),
    (
        "network",
        re.compile(
            r"Connection refused|Name or service not known|urlopen error|Connection reset|"
            r"Connection aborted|Remote end closed|IncompleteRead|Network is unreachable|"
            r"Temporary failure in name resolution",
            re.I,
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
    url: str,
    cache_dir: Path,
    *,
    timeout: float,
    wall: float,
    max_height: int,
    max_bytes: int | None,
    limiter: HostLimiter | None,
) -> Fetched:
    """Download a page's video with yt-dlp into ``cache_dir/<video_id>.<ext>``.

    The whole yt-dlp run counts as one request to the page's host for ``limiter``:
    its own requests (the page, then the media, often on a CDN) follow each other.
    ``wall`` (seconds from the slot's start) and ``max_bytes`` stop it while it
    downloads (:class:`_Bounds`).
    """
    video_id = video_id_for(url)
    cached = _cached_ytdlp_file(cache_dir, video_id)
    if cached is not None:
        log.debug("reusing cached %s for %s", cached, url)
        return Fetched(cached, True, {"extractor": "ytdlp-cache", "bytes": cached.stat().st_size})
    opts = _ytdlp_options(
        video_id, cache_dir, timeout=timeout, max_height=max_height, max_bytes=max_bytes
    )
    try:
        with _slot(limiter, url):
            bounds = _Bounds(url, wall=wall, max_bytes=max_bytes)
            opts["progress_hooks"] = [bounds.progress]
            opts["match_filter"] = bounds.refuse_live
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
    except _Stop as e:
        raise e.error from None
    except yt_dlp.utils.YoutubeDLError as e:
        message = str(e)
        raise FetchError(_ytdlp_kind(message), url, message) from e
    if not path.is_file() or path.stat().st_size == 0:
        raise _missing_file_error(url, info, path, max_bytes)
    return path, info


class _Stop(Exception):
    """Raised from a yt-dlp hook to end the run with ``error``.

    A plain Exception on purpose: yt-dlp turns OSError and its own errors into
    messages (and may go on), but lets any other exception through.
    """

    def __init__(self, error: FetchError) -> None:
        super().__init__(str(error))
        self.error = error


class _Bounds:
    """The limits of one yt-dlp run, checked from its hooks as it goes.

    yt-dlp's own ``max_filesize`` only compares a size the server declares; a
    chunked stream declares none and would be downloaded for ever. Here every
    progress report counts the bytes on disk (all of the run's files: video and
    audio formats download one after the other) and the time since the start.
    """

    def __init__(self, url: str, *, wall: float, max_bytes: int | None) -> None:
        self.url, self.wall, self.max_bytes = url, wall, max_bytes
        self.deadline = time.monotonic() + wall
        self._bytes: dict[str, int] = {}  # bytes written, by file

    def progress(self, d: dict[str, Any]) -> None:
        """yt-dlp's progress hook: stop past the byte cap or the deadline."""
        self.refuse_live(d.get("info_dict") or {})
        name = str(d.get("tmpfilename") or d.get("filename") or "")
        self._bytes[name] = int(d.get("downloaded_bytes") or 0)
        received = sum(self._bytes.values())
        if self.max_bytes is not None and received > self.max_bytes:
            raise _Stop(
                FetchError("too_large", self.url, f"more than max_bytes={self.max_bytes} bytes")
            )
        self._check_time()

    def refuse_live(self, info: dict[str, Any], *, incomplete: bool = False) -> None:
        """yt-dlp's match_filter (None: go on): a live stream is refused before it starts."""
        if info.get("is_live") or info.get("live_status") in _LIVE:
            status = info.get("live_status") or "is_live"
            raise _Stop(FetchError("unsupported", self.url, f"a live stream ({status})"))
        self._check_time()

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Stop(
                FetchError("timeout", self.url, f"download took longer than {self.wall:g} s")
            )


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
