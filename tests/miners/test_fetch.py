"""fetch_video over local files, a 127.0.0.1 HTTP server and yt-dlp's generic extractor."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from miners.fetch import (
    Fetched,
    FetchError,
    _ytdlp_kind,  # the message-to-kind table, checked without a network
    fetch_video,
    is_direct_media,
    is_remote,
    remove_download,
)
from synth.testmedia import grey_frame, write_video

SECONDS = 2.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 5 fps, 64x48 H.264 mp4 with a tone: grey level 40 * second."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    return write_video(path, lambda i, t: grey_frame(40 * int(t)), seconds=SECONDS, fps=5)


def _duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    probe = json.loads(out.stdout)
    assert "video" in [s["codec_type"] for s in probe["streams"]]
    return float(probe["format"]["duration"])


Respond = Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]


@contextmanager
def serve(respond: Respond, *, http11: bool = False) -> Iterator[str]:
    """A 127.0.0.1 server answering every GET with ``respond``; yields its base URL.

    ``respond`` gets a release event that is set on exit, so a handler that hangs
    waits on it and its thread ends with the test. ``http11`` speaks HTTP/1.1
    (chunked bodies need it), and a write the client stopped reading gives up
    after 5 s.
    """
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        if http11:
            protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
            if http11:
                self.request.settimeout(5)
            respond(self, release)

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _status(code: int) -> Respond:
    def respond(h: http.server.BaseHTTPRequestHandler, _: threading.Event) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return respond


# ---------------------------------------------------------------- URL kinds


def test_is_remote_and_is_direct_media() -> None:
    assert is_remote("https://x.org/a.mp4") and is_remote("s3://bucket/a.mp4")
    assert not is_remote("/data/a.mp4") and not is_remote("file:///data/a.mp4")
    assert not is_remote("C:\\videos\\a.mp4") and not is_remote("rel/a.mp4")
    assert is_direct_media("http://x.org/v/a.MP4?sig=1")
    assert is_direct_media("https://x.org/a%20b.webm")
    assert not is_direct_media("https://www.youtube.com/watch?v=abc")
    assert not is_direct_media("https://x.org/page.html")
    assert not is_direct_media("/data/a.mp4")


# ---------------------------------------------------------------- local files


def test_local_path_and_file_url(clip: Path, tmp_path: Path) -> None:
    for url in (str(clip), clip.as_uri()):
        fetched = fetch_video(url, tmp_path / "cache")
        assert fetched.path == clip and not fetched.downloaded
    assert not (tmp_path / "cache").exists()  # nothing cached for local files


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="gone.mp4") as err:
        fetch_video(str(tmp_path / "gone.mp4"), tmp_path)
    assert err.value.kind == "not_found"


def test_empty_local_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(FetchError, match="empty file") as err:
        fetch_video(str(empty), tmp_path)
    assert err.value.kind == "corrupt"


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        fetch_video("ftp://127.0.0.1/a.mp4", tmp_path)
    assert err.value.kind == "unsupported"


# ---------------------------------------------------------------- direct HTTP


def test_direct_mp4_download_and_cache_reuse(clip: Path, tmp_path: Path, http_root) -> None:
    (http_root.root / "clip.mp4").write_bytes(clip.read_bytes())
    cache = tmp_path / "cache"
    url = http_root.url("clip.mp4")
    fetched = fetch_video(url, cache)
    assert fetched.downloaded and fetched.path.parent == cache and fetched.path.suffix == ".mp4"
    assert fetched.path.read_bytes() == clip.read_bytes()
    assert fetched.info["bytes"] == clip.stat().st_size
    assert fetched.info["http_content_type"] == "video/mp4"
    assert list(cache.iterdir()) == [fetched.path]  # no temp file left
    (http_root.root / "clip.mp4").unlink()  # a second fetch must not need the server
    assert fetch_video(url, cache).path == fetched.path


def test_direct_404_is_not_found(tmp_path: Path, http_root) -> None:
    url = http_root.url("missing.mp4")
    with pytest.raises(FetchError, match="missing.mp4.*404") as err:
        fetch_video(url, tmp_path)
    assert err.value.kind == "not_found"


def test_direct_too_large(clip: Path, tmp_path: Path, http_root) -> None:
    (http_root.root / "clip.mp4").write_bytes(clip.read_bytes())
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="max_bytes=100") as err:
        fetch_video(http_root.url("clip.mp4"), cache, max_bytes=100)
    assert err.value.kind == "too_large"
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "kind"),
    [(429, "rate_limited"), (500, "server_error"), (503, "server_error"), (403, "forbidden"),
     (410, "not_found")],
)  # fmt: skip
def test_http_status_kinds(code: int, kind: str, tmp_path: Path) -> None:
    with serve(_status(code)) as base:
        with pytest.raises(FetchError, match=f"v.mp4.*{code}") as err:
            fetch_video(base + "v.mp4", tmp_path, retry=None)  # one attempt: its kind
    assert err.value.kind == kind
    assert list(tmp_path.iterdir()) == []


def test_short_body_leaves_no_partial_file(tmp_path: Path) -> None:
    def respond(h: http.server.BaseHTTPRequestHandler, _: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b"\0" * 1000)
        h.wfile.flush()
        h.close_connection = True

    with serve(respond) as base:
        with pytest.raises(FetchError, match="v.mp4") as err:
            fetch_video(base + "v.mp4", tmp_path, retry=None)
    assert err.value.kind == "network"  # transient: test_fetch_retry checks it is retried
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("after_headers", [False, True])
def test_hanging_server_times_out(after_headers: bool, tmp_path: Path) -> None:
    def respond(h: http.server.BaseHTTPRequestHandler, release: threading.Event) -> None:
        if after_headers:
            h.send_response(200)
            h.send_header("Content-Type", "video/mp4")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.write(b"\0" * 10)
            h.wfile.flush()
        release.wait(3.0)  # hang, until the test ends at the latest

    with serve(respond) as base:
        start = time.monotonic()
        with pytest.raises(FetchError, match="v.mp4") as err:
            fetch_video(base + "v.mp4", tmp_path, timeout=0.5, retry=None)
        assert time.monotonic() - start < 2.5
    assert err.value.kind == "timeout"
    assert list(tmp_path.iterdir()) == []


def test_trickling_server_hits_wall_clock_limit(tmp_path: Path) -> None:
    def respond(h: http.server.BaseHTTPRequestHandler, release: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):  # a byte every 0.1 s, each read well inside the read timeout
            if release.wait(0.1):
                return
            try:
                h.wfile.write(b"\0")
                h.wfile.flush()
            except OSError:
                return

    with serve(respond) as base:
        start = time.monotonic()
        with pytest.raises(FetchError, match="longer than") as err:
            fetch_video(base + "v.mp4", tmp_path, timeout=2.0, wall_timeout=0.8)
        assert time.monotonic() - start < 2.5
    assert err.value.kind == "timeout"
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_network(tmp_path: Path) -> None:
    with serve(_status(200)) as base:
        pass  # the port is closed again when the server is gone
    with pytest.raises(FetchError) as err:
        fetch_video(base + "v.mp4", tmp_path, timeout=2.0, retry=None)
    assert err.value.kind == "network"


# ---------------------------------------------------------------- yt-dlp


def test_ytdlp_finds_html5_video_on_page(clip: Path, tmp_path: Path, http_root) -> None:
    (http_root.root / "clip.mp4").write_bytes(clip.read_bytes())
    (http_root.root / "page.html").write_text(
        "<html><head><title>A grey clip</title></head><body>"
        '<video controls src="clip.mp4"></video></body></html>'
    )
    cache = tmp_path / "cache"
    fetched = fetch_video(http_root.url("page.html"), cache, timeout=10)
    assert fetched.downloaded and fetched.path.parent == cache
    assert fetched.path.read_bytes() == clip.read_bytes()
    assert abs(_duration(fetched.path) - SECONDS) < 0.3
    assert fetched.info["title"].startswith("A grey clip")
    assert fetched.info["bytes"] == clip.stat().st_size
    assert list(cache.iterdir()) == [fetched.path]
    for served in http_root.root.iterdir():  # a second fetch must not need the server
        served.unlink()
    assert fetch_video(http_root.url("page.html"), cache).path == fetched.path


def test_ytdlp_page_without_video_keeps_message(tmp_path: Path, http_root) -> None:
    (http_root.root / "empty.html").write_text("<html><body>no video here</body></html>")
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="Unsupported URL") as err:
        fetch_video(http_root.url("empty.html"), cache, timeout=10)
    assert err.value.kind == "unsupported"
    assert "empty.html" in str(err.value)
    assert list(cache.iterdir()) == []


def test_ytdlp_404_page_is_not_found(tmp_path: Path, http_root) -> None:
    with pytest.raises(FetchError, match="404") as err:
        fetch_video(http_root.url("nowhere.html"), tmp_path, timeout=10)
    assert err.value.kind == "not_found"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", "private"),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed", "removed"),
        ("ERROR: [youtube] abc: Sign in to confirm your age", "forbidden"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests",
         "rate_limited"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 502: Bad Gateway",
         "server_error"),
        ("ERROR: Unsupported URL: http://127.0.0.1/x", "unsupported"),
        ("ERROR: [youtube] abc: Requested format is not available", "ytdlp"),
    ],
)  # fmt: skip
def test_ytdlp_messages_map_to_kinds(message: str, kind: str) -> None:
    assert _ytdlp_kind(message) == kind


# ---------------------------------------------------------------- cleanup


def test_remove_download_only_deletes_downloads(clip: Path, tmp_path: Path) -> None:
    own = tmp_path / "own.mp4"
    own.write_bytes(clip.read_bytes())
    cached = tmp_path / "cached.mp4"
    cached.write_bytes(clip.read_bytes())
    remove_download(Fetched(own, downloaded=False, info={}))
    remove_download(Fetched(cached, downloaded=True, info={}))
    assert own.exists() and not cached.exists()
    remove_download(Fetched(cached, downloaded=True, info={}))  # already gone: no error
