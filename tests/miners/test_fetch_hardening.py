"""Bad input to the video side: endless streams, live pages, odd local files, option-like names.

Each endless server writes until the client goes away (or the test ends), with
no declared size, so only a byte cap or a wall-clock deadline can stop a fetch.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from media import MediaError
from media.audio import decode_audio
from media.cuts import decode_region
from media.probe import duration, probe
from media.video import read_frames, trim
from miners.cut import cut_clip
from miners.fetch import FetchError, fetch_video
from miners.frames import frame_at, iter_frames
from miners.videos import read_videos
from synth.testmedia import grey_frame, write_video
from tests.miners.test_fetch import Respond
from tests.miners.test_fetch import serve as _serve


def serve(respond: Respond) -> contextlib.AbstractContextManager[str]:
    """The fetch tests' 127.0.0.1 server, speaking HTTP/1.1 for chunked bodies."""
    return _serve(respond, http11=True)


class Endless:
    """Streams video/mp4 for ever, chunked, ``rate`` bytes a second (None: as fast as it can)."""

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        self.sent = 0
        self.lock = threading.Lock()

    def __call__(self, h: http.server.BaseHTTPRequestHandler, release: threading.Event) -> None:
        h.close_connection = True  # one response a connection: no reading after a hang-up
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b"\0" * (1 << 16 if self.rate is None else max(1, int(self.rate / 10)))
        try:
            while not release.is_set():
                h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                h.wfile.flush()
                with self.lock:
                    self.sent += len(block)
                if self.rate is not None:
                    release.wait(0.1)
        except OSError:
            return  # the client hung up: the fetch gave up, as it should


def _cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0


# ---------------------------------------------------------------- endless downloads


@pytest.mark.parametrize("route", ["stream.mp4", "stream"], ids=["http", "ytdlp"])
def test_endless_stream_stops_at_the_byte_cap(route: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server = Endless()
    with serve(server) as base:
        start = time.monotonic()
        with pytest.raises(FetchError, match="max_bytes") as err:
            fetch_video(base + route, cache, timeout=2, wall_timeout=30, max_bytes=2_000_000)
        assert time.monotonic() - start < 15
    assert err.value.kind == "too_large"
    assert server.sent < 50_000_000  # stopped near the cap, not at the wall clock
    assert _cache_bytes(cache) == 0 and list(cache.iterdir()) == []  # partial file removed


@pytest.mark.parametrize("route", ["stream.mp4", "stream"], ids=["http", "ytdlp"])
def test_endless_stream_stops_at_the_deadline(route: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with serve(Endless(rate=200_000)) as base:  # under the cap for as long as the test runs
        start = time.monotonic()
        with pytest.raises(FetchError, match="longer than") as err:
            fetch_video(base + route, cache, timeout=2, wall_timeout=2, max_bytes=None, retry=None)
        assert time.monotonic() - start < 8
    assert err.value.kind == "timeout"
    assert list(cache.iterdir()) == []


def test_live_stream_is_unsupported(tmp_path: Path) -> None:
    """An HLS playlist without an end is a live stream: refused before any segment."""
    segments: list[str] = []

    def respond(h: http.server.BaseHTTPRequestHandler, release: threading.Event) -> None:
        if h.path.endswith(".m3u8"):
            body = (
                b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n"
                b"#EXTINF:2.0,\nseg7.ts\n#EXTINF:2.0,\nseg8.ts\n"
            )
            h.send_response(200)
            h.send_header("Content-Type", "application/vnd.apple.mpegurl")
        else:
            segments.append(h.path)
            body = b"\0" * 1000
            h.send_response(200)
            h.send_header("Content-Type", "video/mp2t")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    cache = tmp_path / "cache"
    with serve(respond) as base:
        with pytest.raises(FetchError, match="live") as err:
            fetch_video(base + "live.m3u8", cache, timeout=5, retry=None)
    assert err.value.kind == "unsupported"
    assert segments == []
    assert list(cache.iterdir()) == []


# ---------------------------------------------------------------- local files


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files_are_local_videos(kind: str, tmp_path: Path) -> None:
    if kind == "fifo":
        path = tmp_path / "pipe.mp4"
        os.mkfifo(path)  # opening it would block for ever: it must not be opened
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "folder.mp4"
        path.mkdir()
    start = time.monotonic()
    with pytest.raises(FetchError, match=str(path)) as err:
        fetch_video(str(path), tmp_path / "cache")
    assert err.value.kind == "not_found" and "is not a file" in str(err.value)
    assert time.monotonic() - start < 2


# ---------------------------------------------------------------- option-like names


def _reports(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("*report*") if p.suffix == ".log"]


def test_option_like_names_reach_no_tool_as_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``file:-report`` and ``-report.mp4`` in a list: read as files next to the list,
    or an error naming them; ffmpeg and ffprobe never take them for ``-report``."""
    cwd, lists = tmp_path / "cwd", tmp_path / "lists"
    cwd.mkdir()
    lists.mkdir()
    monkeypatch.chdir(cwd)
    video = write_video(
        lists / "-report.mp4", lambda i, t: grey_frame(40 * int(t)), seconds=2, fps=5
    )
    (cwd / "-report").write_bytes(video.read_bytes())  # a decoy where a cwd-relative read lands
    listing = lists / "videos.txt"
    listing.write_text("file:-report\n-report.mp4\nfile:-report.mp4\n")
    urls = [v.url for v in read_videos(listing)]
    assert urls == [str(lists / "-report"), str(video)]  # the last two are one video

    with pytest.raises(FetchError, match=str(lists / "-report")):
        fetch_video(urls[0], tmp_path / "cache")
    path = fetch_video(urls[1], tmp_path / "cache").path
    assert path == video
    # every tool call site, with the bare relative name: as a file, never an option
    monkeypatch.chdir(lists)
    rel = Path("-report.mp4")
    assert probe(rel).duration == pytest.approx(2.0, abs=0.2)
    assert duration(rel) == pytest.approx(2.0, abs=0.2)
    times = np.concatenate([t for t, _ in iter_frames(rel, fps=1, size=16)])
    np.testing.assert_allclose(times, [0.0, 1.0], atol=1e-6)
    assert frame_at(rel, 1.0).mean() == pytest.approx(40, abs=4)
    assert len(decode_region(rel, fps=5)[1]) == 10
    assert len(read_frames(rel, 2, size=(16, 16))) == 2
    assert len(decode_audio(rel)) > 16000
    trimmed = trim(rel, 0.0, 1.0, Path("-trimmed.mp4"))
    assert duration(trimmed) == pytest.approx(1.0, abs=0.2)
    Path("-out").mkdir()
    res = cut_clip(rel, 0.0, 1.0, Path("-out"), "k", match_time=0.5, has_audio=True, height=48)
    assert res.mp4.is_file() and res.flac is not None and res.flac.is_file()
    with pytest.raises(MediaError, match="-missing"):
        probe("-missing.mp4")
    assert _reports(cwd, lists, tmp_path) == []
    assert not [p for p in Path.cwd().iterdir() if p.name.startswith(("ffprobe-", "ffmpeg-"))]


# ---------------------------------------------------------------- the run's options


def test_scan_limits_reach_the_download(tmp_path: Path) -> None:
    """scan_video's fetch_timeout bounds the whole download and max_bytes its size:
    an endless stream is a failed row, not a scan that never ends."""
    from miners.scan import scan_video
    from miners.videos import VideoInput
    from shards.keys import video_id_for

    cache = tmp_path / "cache"
    with serve(Endless(rate=200_000)) as base:
        url = base + "stream"
        video = VideoInput(url=url, video_id=video_id_for(url))
        kw = {"index": None, "embedder": None, "threshold": 0.5, "cache_dir": cache}
        start = time.monotonic()
        capped = scan_video(video, fetch_timeout=30, max_bytes=300_000, **kw)  # type: ignore[arg-type]
        timed = scan_video(video, fetch_timeout=1.5, max_bytes=None, **kw)  # type: ignore[arg-type]
        assert time.monotonic() - start < 15
    assert capped.status == timed.status == "failed"
    assert capped.error.startswith("fetch too_large") and timed.error.startswith("fetch timeout")
    assert list(cache.iterdir()) == []


def test_mine_params_download_limits() -> None:
    from flows.params import MineParams

    params = MineParams(seeds="s.tsv", videos="v.txt", out="out")
    assert params.fetch_timeout == 600.0 and params.max_download_mb == 2000.0
    with pytest.raises(ValueError):
        MineParams(seeds="s.tsv", videos="v.txt", out="out", max_download_mb=0)
