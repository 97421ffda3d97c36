"""Seed reading on hostile or broken input: nothing blocks, bombs are refused from the
header, one bad row fails one row, and only allowed sources are read."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media.images import PixelBudget
from miners import seeds as seeds_module
from miners.remote import Protocols, PublicOnlyAdapter, is_public, protocols_of
from miners.seeds import Seed, _ImageReader, load_seed_images, read_seeds

RED = (200, 30, 40)
SIZE = 8
ROOT = Path(__file__).resolve().parents[2]


def png_bytes(color=RED, width: int = 12, height: int = 10) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), color, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(side: int = 12000) -> bytes:
    """A 1-bit PNG of side x side black pixels, built without decoding it: a few KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\0" * (1 + (side + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(row * side, 9)) + chunk(b"IEND", b""))  # fmt: skip


def load(seeds: list[Seed], **kwargs) -> list[tuple[int, np.ndarray | None, str | None]]:
    return list(load_seed_images(seeds, SIZE, **kwargs))


def within(seconds: float, work: Callable[[], object]) -> tuple[bool, object]:
    """Run ``work`` on a daemon thread: (finished in time, its result or exception)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box.get("value")


def release_fifo(path: Path) -> None:
    """Open the FIFO's write end once, so a reader blocked on it (the old behaviour) goes on."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


# ---------------------------------------------------------------- 1. reads never block


def test_fifo_device_and_folder_seed_images_are_error_rows(tmp_path: Path):
    fifo = tmp_path / "seed.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    seeds = [Seed("fifo", "c", str(fifo)), Seed("dev", "c", "/dev/zero"),
             Seed("dir", "c", str(folder)), Seed("url", "c", f"file://{fifo}")]  # fmt: skip
    try:
        finished, results = within(10, lambda: load(seeds, workers=2, timeout=2))
    finally:
        release_fifo(fifo)
    assert finished, "loading a FIFO seed blocked"
    errors = [error for _, _, error in results]
    assert errors[0] == f"{fifo} is not a regular file"
    assert errors[1] == "/dev/zero is not a regular file"
    assert errors[2] == f"{folder} is not a regular file"
    assert errors[3] == f"file://{fifo} is not a regular file"


def test_dev_stdin_on_an_open_pipe_is_an_error_row():
    child = (
        "from miners.seeds import Seed, load_seed_images\n"
        "print(list(load_seed_images([Seed('0', 'c', '/dev/stdin')], 8, timeout=2))[0][2])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip
    try:
        proc.wait(timeout=30)  # stdin stays open: a blocking read would never end
        out = proc.stdout.read()
    finally:
        proc.kill()
        proc.stdin.close()
    assert "/dev/stdin is not a regular file" in out


def test_seeds_argument_must_be_a_regular_file(tmp_path: Path):
    fifo = tmp_path / "seeds.tsv"
    os.mkfifo(fifo)
    try:
        finished, result = within(10, lambda: read_seeds(fifo))
    finally:
        release_fifo(fifo)
    assert finished, "reading a FIFO seeds table blocked"
    assert isinstance(result, ValueError) and "not a regular file" in str(result)
    assert str(fifo) in str(result)


class _BadServer:
    """A TCP server on 127.0.0.1 that accepts and then stalls, or trickles a byte at a time."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.clients.append(conn)
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        try:
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                while not self.stop.wait(0.1):
                    conn.sendall(b"x")
            else:
                self.stop.wait()
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for conn in self.clients:
            conn.close()


@pytest.fixture(params=["silent", "trickle"])
def bad_server(request) -> Iterator[_BadServer]:
    server = _BadServer(request.param)
    yield server
    server.close()


def test_a_stuck_server_ends_as_an_error_row_within_the_timeout(bad_server: _BadServer):
    seeds = [Seed(str(i), "c", f"http://127.0.0.1:{bad_server.port}/{i}.png") for i in range(3)]
    t0 = time.monotonic()
    finished, results = within(15, lambda: load(seeds, workers=3, timeout=1.0))
    took = time.monotonic() - t0
    assert finished, f"a {bad_server.mode} server held the seed loader"
    assert took < 4.0, took  # timeout + grace, with room for a loaded machine
    assert all(array is None and "timed out after 1 s" in error for _, array, error in results)


def test_a_stuck_backend_cannot_hold_the_loader(tmp_path: Path):
    import fsspec
    from fsspec.spec import AbstractFileSystem

    release = threading.Event()

    class Stuck(AbstractFileSystem):
        protocol = "capminestuck"

        def _open(self, path, mode="rb", **kwargs):
            release.wait(30)  # an object store client retrying for ever
            raise OSError("released")

    fsspec.register_implementation("capminestuck", Stuck, clobber=True)
    try:
        seeds = [Seed("0", "c", "capminestuck://bucket/a.png")]
        t0 = time.monotonic()
        (result,) = load(seeds, timeout=0.5, allowed_protocols=["capminestuck"])
        assert time.monotonic() - t0 < 3.0
        assert "timed out after 0.5 s" in result[2]
    finally:
        release.set()


# ---------------------------------------------------------------- 2. bombs


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bombs_are_refused_fast_by_the_loader(tmp_path: Path):
    data = bomb_png()
    assert len(data) < 40_000
    seeds = []
    for i in range(16):
        (tmp_path / f"{i}.png").write_bytes(data)
        seeds.append(Seed(str(i), "c", str(tmp_path / f"{i}.png")))
    t0 = time.monotonic()
    results = load(seeds, workers=16)
    assert time.monotonic() - t0 < 2.0
    for i, array, error in results:
        assert array is None
        assert error.startswith(f"{tmp_path / f'{i}.png'}: image is 12000x12000 (144.0 megapixels)")
        assert "max_image_pixels" in error


def test_max_image_pixels_is_an_option(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(png_bytes(width=40, height=40))
    seeds = [Seed("a", "c", str(tmp_path / "a.png"))]
    assert load(seeds)[0][2] is None
    assert "40x40" in load(seeds, max_image_pixels=1000)[0][2]


def test_pixel_budget_bounds_pixels_in_flight():
    budget = PixelBudget(100)
    lock = threading.Lock()
    now = peak = 0

    def decode(pixels: int) -> None:
        nonlocal now, peak
        with budget.hold(pixels):
            with lock:
                now += min(pixels, 100)
                peak = max(peak, now)
            time.sleep(0.01)
            with lock:
                now -= min(pixels, 100)

    threads = [threading.Thread(target=decode, args=(p,)) for p in [60, 60, 30, 500, 10] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak <= 100 and now == 0


# ---------------------------------------------------------------- 3. seed tables


def test_cc3m_row_with_a_stray_tab_fails_that_row(tmp_path: Path):
    (tmp_path / "red.png").write_bytes(png_bytes())
    path = tmp_path / "cc3m.tsv"
    path.write_text("a red square\tred.png\na red\tsquare\tred.png\n\nanother red one\tred.png\n")
    seeds = read_seeds(path)
    assert [s.id for s in seeds] == ["0", "1", "2"]
    assert [s.error for s in seeds] == [
        None,
        f"{path}:2: expected 2 fields (caption<TAB>image, as CC3M), found 3",
        None,
    ]
    assert seeds[2].caption == "another red one"


def test_csv_row_with_an_unquoted_comma_fails_that_row(tmp_path: Path):
    path = tmp_path / "seeds.csv"
    path.write_text("url,caption\nred.png,a red square\nred.png,a red, square\nred.png,red\n")
    seeds = read_seeds(path)
    assert [s.caption for s in seeds] == ["a red square", "", "red"]
    assert seeds[1].error == f"{path}:3: expected 2 fields (one a column of the header), found 3"
    assert [s.id for s in seeds] == ["0", "1", "2"]

    with_ids = tmp_path / "ids.csv"
    with_ids.write_text('id,url,caption\na,red.png,"one, quoted"\nb,red.png\n')
    seeds = read_seeds(with_ids)
    assert (seeds[0].caption, seeds[0].error) == ("one, quoted", None)
    assert seeds[1].id == "ids.csv:3" and seeds[1].error.startswith(f"{with_ids}:3: expected 3")


def test_bad_parquet_error_names_the_file(tmp_path: Path):
    path = tmp_path / "seeds.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(ValueError, match=str(path)):
        read_seeds(path)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_members_with_a_leading_slash_are_read(tmp_path: Path):
    path = _tar(tmp_path / "a.tar", {"/000.jpg": png_bytes(), "/000.txt": b"a red square",
                                     "./001.png": png_bytes(), "./001.txt": b"red"})  # fmt: skip
    seeds = read_seeds(path)
    assert [(s.id, s.caption, s.error) for s in seeds] == [
        ("000", "a red square", None), ("001", "red", None)]  # fmt: skip
    results = load(seeds)
    assert all(error is None and array is not None for _, array, error in results), results


def test_oversized_tar_members_are_error_rows(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(seeds_module, "MAX_TEXT_BYTES", 1000)
    path = _tar(tmp_path / "a.tar", {"000.png": png_bytes(), "000.txt": b"x" * 1001,
                                     "001.png": png_bytes(), "001.json": b"{}" + b" " * 1000,
                                     "002.png": png_bytes(), "002.txt": b"fine"})  # fmt: skip
    seeds = read_seeds(path)
    assert seeds[0].error == f"member 000.txt of {path} is over 0.000953674 MB"
    assert "001.json" in seeds[1].error
    assert seeds[2].error is None
    reader = _ImageReader(timeout=1, max_bytes=50)
    with pytest.raises(seeds_module._SourceError, match="larger than"):
        reader.read(seeds[2].image)
    reader.close()


# ---------------------------------------------------------------- 4. allowed sources


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "data"),
        ("zip://a.png::/tmp/x.zip", "zip"),
        ("local:///etc/hostname", "local"),
        ("simplecache::file:///tmp/a.png", "simplecache"),
        ("memory://a.png", "memory"),
        ("ftp://127.0.0.1/a.png", "ftp"),
    ],
)
def test_protocols_outside_the_allow_list_are_refused(url: str, protocol: str):
    (result,) = load([Seed("0", "c", url)])
    assert result[1] is None
    assert f"scheme {protocol!r} not allowed" in result[2]


def test_the_allow_list_is_an_option():
    import fsspec

    with fsspec.open("memory://capmine-allowed.png", "wb") as f:
        f.write(png_bytes())
    seed = Seed("0", "c", "memory://capmine-allowed.png")
    assert load([seed], allowed_protocols=["memory"])[0][2] is None
    assert "not allowed" in load([Seed("1", "c", "/tmp/x.png")], allowed_protocols=["https"])[0][2]
    assert Protocols(["gcs"]).allows("gs") and Protocols(["az"]).allows("abfs")
    assert protocols_of("simplecache::s3://b/k") == ["simplecache", "s3"]
    assert protocols_of("C:\\seeds\\a.png") == ["file"]


class _Redirects:
    """Serve ``/go`` as a redirect to ``location`` and ``/red.png`` as a picture."""

    def __init__(self, location: str):
        import http.server

        body = png_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the handler's API
                if self.path == "/go":
                    self.send_response(302)
                    self.send_header("Location", location.format(port=server.server_port))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server = server
        self.url = f"http://127.0.0.1:{server.server_port}/go"
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("location", ["file:///etc/hostname", "ftp://127.0.0.1/a.png"])
def test_redirects_go_to_http_only(location: str):
    server = _Redirects(location)
    try:
        (result,) = load([Seed("0", "c", server.url)], timeout=5)
    finally:
        server.close()
    assert result[2] is not None and "not allowed" in result[2], result[2]


def test_redirects_to_http_are_followed():
    server = _Redirects("http://127.0.0.1:{port}/red.png")
    try:
        (result,) = load([Seed("0", "c", server.url)], timeout=5)
    finally:
        server.close()
    assert result[2] is None and result[1] is not None


def test_private_addresses_are_refused_when_asked(http_root):
    (http_root.root / "red.png").write_bytes(png_bytes())
    seed = Seed("0", "c", http_root.url("red.png"))
    assert load([seed], timeout=5)[0][2] is None  # off by default: tests and mirrors use 127.0.0.1
    (result,) = load([seed], timeout=5, block_private_addresses=True)
    assert "127.0.0.1" in result[2] and "not a public address" in result[2]


def test_private_addresses_are_checked_after_each_redirect(monkeypatch):
    checked = []

    def check(url: str) -> None:
        checked.append(url)
        if url.endswith("/red.png"):
            raise seeds_module.RemoteError(f"{url}: not a public address")

    monkeypatch.setattr(seeds_module, "check_public_host", check)
    monkeypatch.setattr(
        seeds_module, "PublicOnlyAdapter", __import__("requests").adapters.HTTPAdapter
    )
    server = _Redirects("http://127.0.0.1:{port}/red.png")
    try:
        (result,) = load([Seed("0", "c", server.url)], timeout=5, block_private_addresses=True)
    finally:
        server.close()
    assert [u.rsplit("/", 1)[1] for u in checked] == ["go", "red.png"]
    assert "not a public address" in result[2]


def test_public_only_adapter_checks_the_connected_address(http_root):
    import requests

    session = requests.Session()
    session.mount("http://", PublicOnlyAdapter())
    with pytest.raises(requests.ConnectionError, match="not a public address"):
        session.get(http_root.url("x"), timeout=5)
    session.close()


def test_which_addresses_are_public():
    private = ["10.0.0.1", "192.168.1.1", "172.16.0.1", "127.0.0.1", "169.254.169.254", "::1",
               "fe80::1", "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "fc00::1"]  # fmt: skip
    assert not any(is_public(a) for a in private)
    assert is_public("8.8.8.8") and is_public("2001:4860:4860::8888")


def test_mine_options_reach_the_seed_loader(monkeypatch):
    from flows.params import MineParams

    params = MineParams(seeds="s", videos="v", out="o", allowed_protocols="file, HTTPS",
                        max_image_pixels=1000, block_private_addresses=True)  # fmt: skip
    assert params.allowed_protocols == ["file", "https"]
    assert params.model_dump(mode="json")["max_image_pixels"] == 1000
    defaults = MineParams(seeds="s", videos="v", out="o")
    assert defaults.allowed_protocols == ["file", "http", "https", "s3", "gs", "az"]
    assert defaults.max_image_pixels == 50_000_000 and not defaults.block_private_addresses


def test_a_bad_jsonl_line_fails_that_seed_alone(tmp_path):
    from miners.seeds import read_seeds

    path = tmp_path / "seeds.jsonl"
    path.write_text('{"url": "a.png", "caption": "a red square"}\n'
                    '{"url": "b.png", "caption": "broken\n'
                    '[1, 2]\n'
                    '{"url": "c.png", "caption": "a blue circle"}\n')  # fmt: skip
    seeds = read_seeds(path)
    assert [s.caption for s in seeds if s.error is None] == ["a red square", "a blue circle"]
    bad = [s for s in seeds if s.error]
    assert [s.id for s in bad] == ["seeds.jsonl:2", "seeds.jsonl:3"]
    assert bad[0].error.startswith(f"{path}:2: not JSON") and "not a JSON object" in bad[1].error
