"""Retries, backoff, Retry-After and per-host limits of fetch_video, against 127.0.0.1 servers.

Each server counts its requests and records when each began and how many ran at
once, so a test asserts what the server saw: how many tries, how far apart.
"""

from __future__ import annotations

import http.server
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.utils import formatdate
from pathlib import Path

import pytest

from miners.fetch import (
    DEFAULT_LIMITER,
    DEFAULT_RETRY,
    TRANSIENT,
    FetchError,
    HostLimiter,
    RetryPolicy,
    _ytdlp_kind,
    fetch_video,
    host_key,
)

BODY = bytes(range(256)) * 40  # 10 KiB, not a video: fetch_video does not decode

Handler = http.server.BaseHTTPRequestHandler
Respond = Callable[[Handler, int, threading.Event], None]  # (handler, request number, release)


class Recorder:
    """What a test server saw: request starts (monotonic) and the most requests at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[float] = []
        self.running = 0
        self.max_running = 0

    @property
    def count(self) -> int:
        return len(self.starts)

    def begin(self) -> int:
        with self.lock:
            self.starts.append(time.monotonic())
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            return len(self.starts)

    def end(self) -> None:
        with self.lock:
            self.running -= 1


@contextmanager
def serve(respond: Respond, rec: Recorder | None = None) -> Iterator[tuple[str, Recorder]]:
    """A 127.0.0.1 server answering each GET with ``respond``; yields (base URL, recorder).

    Handlers that hang wait on the release event, set on exit, so their threads end.
    """
    rec = rec or Recorder()
    release = threading.Event()

    class H(Handler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
            n = rec.begin()
            try:
                respond(self, n, release)
            finally:
                rec.end()

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", rec
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def send(h: Handler, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h.send_response(code)
    h.send_header("Content-Type", "video/mp4")
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def ok(h: Handler) -> None:
    send(h, 200, BODY)


def fast(attempts: int = 3, **kw) -> tuple[RetryPolicy, list[float]]:
    """A policy that records its waits instead of sleeping."""
    sleeps: list[float] = []
    kw = {"base_delay": 0.01, "jitter": 0.0} | kw
    return RetryPolicy(attempts=attempts, sleep=sleeps.append, **kw), sleeps


NO_LIMIT = None  # limiter=None: tests of retries need no spacing


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- defaults and kinds


def test_defaults() -> None:
    assert TRANSIENT == {"rate_limited", "server_error", "network", "timeout"}
    assert (DEFAULT_RETRY.attempts, DEFAULT_RETRY.base_delay, DEFAULT_RETRY.max_delay) == (3, 1, 30)
    assert (DEFAULT_LIMITER.min_interval, DEFAULT_LIMITER.per_host, DEFAULT_LIMITER.total) == (
        0.5,
        4,
        16,
    )
    assert FetchError("corrupt", "u", "d").transient is False
    assert FetchError("network", "u", "d").transient is True


def test_backoff_doubles_with_bounded_jitter_and_cap() -> None:
    plain = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.0)
    assert [plain.delay(i) for i in range(6)] == [1, 2, 4, 8, 16, 30]
    jittery = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.5)
    for i in range(4):
        waits = [jittery.delay(i) for _ in range(50)]
        assert all(2**i <= w <= 1.5 * 2**i for w in waits) and len(set(waits)) > 1
    assert plain.delay(0, retry_after=7.0) == 7.0
    assert plain.delay(0, retry_after=600.0) == 30.0  # capped
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_errors_limiters_and_policies_pickle() -> None:
    err = pickle.loads(pickle.dumps(FetchError("rate_limited", "u", "d", retry_after=3.0)))
    assert (err.kind, err.url, err.detail, err.retry_after) == ("rate_limited", "u", "d", 3.0)
    lim = pickle.loads(pickle.dumps(HostLimiter(min_interval=0.1, per_host=2, total=3)))
    assert (lim.min_interval, lim.per_host, lim.total) == (0.1, 2, 3)
    with lim.slot("http://a.org/x"):  # fresh locks work
        pass
    assert pickle.loads(pickle.dumps(DEFAULT_RETRY)) == DEFAULT_RETRY


def test_host_key() -> None:
    assert host_key("https://Media.Example.org/a.mp4") == "media.example.org"
    assert host_key("http://127.0.0.1:8080/a.mp4") == "127.0.0.1:8080"
    assert host_key("http://user:pw@x.org/a") == "x.org"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video",
         "private"),
        ("ERROR: [instagram] abc: This account is private", "private"),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader",
         "removed"),
        ("ERROR: [youtube] abc: Video unavailable", "removed"),
        ("ERROR: [youtube] abc: This video is no longer available because the YouTube account "
         "associated with this video has been terminated.", "removed"),
        ("ERROR: [youtube] abc: Video unavailable. The uploader has not made this video "
         "available in your country", "geo_blocked"),
        ("ERROR: [vimeo] 1: This video is not available from your location due to geo restriction",
         "geo_blocked"),
        ("ERROR: [x] 1: The video is geo restricted", "geo_blocked"),
        ("ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies", "bot_check"),
        ("ERROR: [youtube] abc: Sign in to confirm you're not a bot", "bot_check"),
        ("ERROR: [x] 1: Please confirm you are not a robot", "bot_check"),
        ("ERROR: [x] 1: Unable to download webpage: got a captcha page", "bot_check"),
        ("ERROR: [youtube] abc: Sign in to confirm your age", "forbidden"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable",
         "server_error"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found", "not_found"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests",
         "rate_limited"),
        ("ERROR: unable to download video data: <urlopen error [Errno 111] Connection refused>",
         "network"),
        ("ERROR: [download] Got error: IncompleteRead(1000 bytes read, 9000 more expected)",
         "network"),
        ("ERROR: [generic] x: Unable to download webpage: The read operation timed out", "timeout"),
        ("ERROR: [youtube] abc: Requested format is not available", "ytdlp"),
    ],
)  # fmt: skip
def test_ytdlp_messages_map_to_new_kinds(message: str, kind: str) -> None:
    assert _ytdlp_kind(message) == kind


# ---------------------------------------------------------------- retries, direct HTTP


def test_429_twice_then_200_succeeds_after_backoff(tmp_path: Path) -> None:
    def respond(h: Handler, n: int, _: threading.Event) -> None:
        send(h, 429) if n <= 2 else ok(h)

    policy, sleeps = fast(attempts=3)
    with serve(respond) as (base, rec):
        fetched = fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert rec.count == 3
    assert sleeps == [0.01, 0.02]  # base * 2**i
    assert fetched.path.read_bytes() == BODY
    assert files(tmp_path) == [fetched.path.name]  # no temp file from the failed tries


def test_500_always_fails_after_exactly_attempts(tmp_path: Path) -> None:
    policy, sleeps = fast(attempts=4)
    with serve(lambda h, n, _: send(h, 500)) as (base, rec):
        with pytest.raises(FetchError, match=r"HTTP 500.*after 4 attempts") as err:
            fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert rec.count == 4 and len(sleeps) == 3
    assert err.value.kind == "server_error" and err.value.attempts == 4
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("code", "kind"), [(404, "not_found"), (410, "not_found"), (403, "forbidden"),
                       (451, "geo_blocked"), (400, "unsupported")],
)  # fmt: skip
def test_permanent_status_is_not_retried(code: int, kind: str, tmp_path: Path) -> None:
    policy, sleeps = fast(attempts=3)
    with serve(lambda h, n, _: send(h, code)) as (base, rec):
        with pytest.raises(FetchError) as err:
            fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert rec.count == 1 and sleeps == []
    assert err.value.kind == kind and err.value.attempts == 1
    assert "attempts" not in str(err.value)


@pytest.mark.parametrize("what", ["empty", "html"])
def test_corrupt_answer_is_not_retried(what: str, tmp_path: Path) -> None:
    def respond(h: Handler, n: int, _: threading.Event) -> None:
        if what == "empty":
            send(h, 200)
        else:
            body = b"<html>sign in</html>"
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

    policy, _ = fast(attempts=3)
    with serve(respond) as (base, rec):
        with pytest.raises(FetchError) as err:
            fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert err.value.kind == "corrupt" and rec.count == 1
    assert files(tmp_path) == []


def test_hang_times_out_and_is_retried(tmp_path: Path) -> None:
    def respond(h: Handler, n: int, release: threading.Event) -> None:
        release.wait(3.0)

    policy, sleeps = fast(attempts=2)
    with serve(respond) as (base, rec):
        start = time.monotonic()
        with pytest.raises(FetchError, match="after 2 attempts") as err:
            fetch_video(base + "v.mp4", tmp_path, timeout=0.3, retry=policy, limiter=NO_LIMIT)
        assert time.monotonic() - start < 2.0
    assert err.value.kind == "timeout" and rec.count == 2 and len(sleeps) == 1
    assert files(tmp_path) == []


def _cut_short(h: Handler) -> None:
    """Promise 100 kB, send 1 kB, hang up."""
    h.send_response(200)
    h.send_header("Content-Type", "video/mp4")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.write(BODY[:1000])
    h.wfile.flush()
    h.close_connection = True


def _chunked_then_drop(h: Handler) -> None:
    """A chunked body whose connection drops before the last chunk."""
    h.protocol_version = "HTTP/1.1"
    h.send_response(200)
    h.send_header("Content-Type", "video/mp4")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    h.wfile.write(b"%x\r\n%s\r\n" % (1000, BODY[:1000]))
    h.wfile.write(b"3e8\r\n" + BODY[:10])  # a chunk promised and cut off
    h.wfile.flush()
    h.close_connection = True


@pytest.mark.parametrize("drop", [_cut_short, _chunked_then_drop], ids=["length", "chunked"])
def test_body_cut_short_is_network_and_retried(drop, tmp_path: Path) -> None:
    policy, _ = fast(attempts=3)
    with serve(lambda h, n, _: drop(h)) as (base, rec):
        with pytest.raises(FetchError, match="after 3 attempts") as err:
            fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert err.value.kind == "network" and rec.count == 3
    assert files(tmp_path) == []  # no partial file


def test_body_cut_short_then_whole_keeps_only_the_whole_file(tmp_path: Path) -> None:
    def respond(h: Handler, n: int, _: threading.Event) -> None:
        _cut_short(h) if n == 1 else ok(h)

    policy, _ = fast(attempts=3)
    with serve(respond) as (base, rec):
        fetched = fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert rec.count == 2 and fetched.path.read_bytes() == BODY
    assert files(tmp_path) == [fetched.path.name]


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_seconds_is_honoured_and_capped(code: int, tmp_path: Path) -> None:
    def respond(h: Handler, n: int, _: threading.Event) -> None:
        wait = {1: "7", 2: "600"}.get(n)
        send(h, code, headers={"Retry-After": wait}) if wait else ok(h)

    policy, sleeps = fast(attempts=3, max_delay=20.0)
    with serve(respond) as (base, rec):
        fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert rec.count == 3 and sleeps == [7.0, 20.0]


def test_retry_after_http_date(tmp_path: Path) -> None:
    when = formatdate(time.time() + 10, usegmt=True)

    def respond(h: Handler, n: int, _: threading.Event) -> None:
        send(h, 429, headers={"Retry-After": when}) if n == 1 else ok(h)

    policy, sleeps = fast(attempts=2)
    with serve(respond) as (base, _):
        fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=NO_LIMIT)
    assert len(sleeps) == 1 and 7.0 <= sleeps[0] <= 10.5  # a date has whole seconds


def test_no_retry_past_the_wall_budget(tmp_path: Path) -> None:
    policy, sleeps = fast(attempts=5, base_delay=1.0)
    with serve(lambda h, n, _: send(h, 503)) as (base, rec):
        with pytest.raises(FetchError) as err:
            fetch_video(base + "v.mp4", tmp_path, wall_timeout=0.5, retry=policy, limiter=NO_LIMIT)
    assert err.value.kind == "server_error" and rec.count == 1 and sleeps == []


def test_retry_none_makes_one_attempt(tmp_path: Path) -> None:
    with serve(lambda h, n, _: send(h, 500)) as (base, rec):
        with pytest.raises(FetchError) as err:
            fetch_video(base + "v.mp4", tmp_path, retry=None, limiter=NO_LIMIT)
    assert rec.count == 1 and "attempts" not in str(err.value)


# ---------------------------------------------------------------- retries, yt-dlp


def test_ytdlp_route_retries_transient_only(tmp_path: Path) -> None:
    policy, sleeps = fast(attempts=2)
    with serve(lambda h, n, _: send(h, 503)) as (base, rec):
        with pytest.raises(FetchError, match="503.*after 2 attempts") as err:
            fetch_video(base + "page", tmp_path / "a", timeout=5, retry=policy, limiter=NO_LIMIT)
    assert err.value.kind == "server_error" and len(sleeps) == 1
    per_try = rec.count / 2  # yt-dlp's generic extractor may ask more than once per try
    policy, sleeps = fast(attempts=2)
    with serve(lambda h, n, _: send(h, 404)) as (base, rec):
        with pytest.raises(FetchError) as err:
            fetch_video(base + "page", tmp_path / "b", timeout=5, retry=policy, limiter=NO_LIMIT)
    assert err.value.kind == "not_found" and sleeps == [] and rec.count <= per_try
    assert files(tmp_path / "a") == [] and files(tmp_path / "b") == []


# ---------------------------------------------------------------- host limiter


def _fetch_all(urls: list[str], cache: Path, limiter: HostLimiter) -> None:
    with ThreadPoolExecutor(len(urls)) as pool:
        futures = [pool.submit(fetch_video, u, cache, retry=None, limiter=limiter) for u in urls]
        for f in futures:
            f.result()


def test_request_starts_to_one_host_are_spaced(tmp_path: Path) -> None:
    interval = 0.2
    limiter = HostLimiter(min_interval=interval, per_host=8, total=8)
    with serve(lambda h, n, _: ok(h)) as (base, rec):
        _fetch_all([f"{base}v{i}.mp4" for i in range(5)], tmp_path, limiter)
    gaps = [b - a for a, b in zip(rec.starts, rec.starts[1:], strict=False)]
    assert rec.count == 5 and min(gaps) >= interval - 0.03, gaps  # slack: the server's clock read
    assert rec.starts[-1] - rec.starts[0] >= 4 * interval - 0.03


def test_retries_go_through_the_limiter(tmp_path: Path) -> None:
    limiter = HostLimiter(min_interval=0.2)
    policy, _ = fast(attempts=3, base_delay=0.0)
    with serve(lambda h, n, _: send(h, 500)) as (base, rec):
        with pytest.raises(FetchError):
            fetch_video(base + "v.mp4", tmp_path, retry=policy, limiter=limiter)
    gaps = [b - a for a, b in zip(rec.starts, rec.starts[1:], strict=False)]
    assert rec.count == 3 and min(gaps) >= 0.17, gaps


def _slow_ok(h: Handler, n: int, release: threading.Event) -> None:
    release.wait(0.25)  # hold the request open so they overlap
    ok(h)


def test_concurrency_is_capped_per_host(tmp_path: Path) -> None:
    limiter = HostLimiter(min_interval=0.0, per_host=2, total=16)
    with serve(_slow_ok) as (base, rec):
        _fetch_all([f"{base}v{i}.mp4" for i in range(6)], tmp_path, limiter)
    assert rec.count == 6 and rec.max_running == 2


def test_concurrency_is_capped_over_all_hosts(tmp_path: Path) -> None:
    limiter = HostLimiter(min_interval=0.0, per_host=4, total=3)
    rec = Recorder()  # shared by both servers: counts what runs at once on either
    with serve(_slow_ok, rec) as (a, _), serve(_slow_ok, rec) as (b, _):
        urls = [f"{base}v{i}.mp4" for base in (a, b) for i in range(4)]
        _fetch_all(urls, tmp_path, limiter)
    assert rec.count == 8 and rec.max_running == 3


def test_other_hosts_are_not_held_back_by_spacing(tmp_path: Path) -> None:
    limiter = HostLimiter(min_interval=1.0)
    with serve(lambda h, n, _: ok(h)) as (a, _), serve(lambda h, n, _: ok(h)) as (b, _):
        start = time.monotonic()
        _fetch_all([a + "v.mp4", b + "v.mp4"], tmp_path, limiter)
        assert time.monotonic() - start < 0.9


class _Refuses(HostLimiter):
    def slot(self, url: str):
        raise AssertionError(f"limiter used for {url}")


def test_local_files_and_cached_downloads_skip_the_limiter(tmp_path: Path) -> None:
    local = tmp_path / "own.mp4"
    local.write_bytes(BODY)
    assert fetch_video(str(local), tmp_path / "cache", limiter=_Refuses()).path == local
    with serve(lambda h, n, _: ok(h)) as (base, _):
        fetch_video(base + "v.mp4", tmp_path / "cache", limiter=None)
        again = fetch_video(base + "v.mp4", tmp_path / "cache", limiter=_Refuses())
    assert again.path.read_bytes() == BODY


def test_waiting_for_a_slot_does_not_eat_the_wall_clock(tmp_path: Path) -> None:
    limiter = HostLimiter(min_interval=0.6)  # the second fetch waits 0.6 s to start
    with serve(lambda h, n, _: ok(h)) as (base, rec):
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(fetch_video, f"{base}v{i}.mp4", tmp_path, wall_timeout=0.4,
                            retry=None, limiter=limiter)
                for i in range(2)
            ]  # fmt: skip
            assert all(f.result().path.read_bytes() == BODY for f in futures)
    assert rec.count == 2 and rec.starts[1] - rec.starts[0] >= 0.57
