"""A 127.0.0.1 HTTP server that serves a folder, and misbehaves on request.

The first path segment picks the behaviour; the rest names a file of the folder:

=====================  ==========================================================
``/ok/NAME``           the file, with its length
``/hang/NAME``         accepts, then never answers (until the server stops)
``/429/NAME``          ``429 Too Many Requests`` with ``Retry-After: 1``, always
``/500/NAME``          ``500 Internal Server Error``, always
``/drop/NAME``         declares the whole length, sends a third, closes the socket
``/forever/NAME``      chunked, no length, the file's bytes over and over, for ever
=====================  ==========================================================

For the soak bench and tests: every fault a video host shows, on a server the
run may reach (nothing but 127.0.0.1 is ever contacted).
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

FAULTS = ("ok", "hang", "429", "500", "drop", "forever")


class FaultServer:
    """``with FaultServer(folder) as s: s.url("hang", "a.mp4")``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stop = threading.Event()
        self.requests: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
                server.serve(self)

            def log_message(self, format, *args):  # noqa: A002 - keep output quiet
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, fault: str, name: str) -> str:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{fault}/{name}"

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        fault, _, name = h.path.lstrip("/").partition("?")[0].partition("/")
        self.requests[fault] = self.requests.get(fault, 0) + 1
        path = self.root / Path(name).name
        if fault not in FAULTS or not path.is_file():
            return _send(h, 404, b"not found")
        body = path.read_bytes()
        try:
            if fault == "ok":
                _send(h, 200, body, {"Content-Type": "video/mp4"})
            elif fault == "hang":
                self.stop.wait()
            elif fault == "429":
                _send(h, 429, b"slow down", {"Retry-After": "1"})
            elif fault == "500":
                _send(h, 500, b"oops")
            elif fault == "drop":
                h.send_response(200)
                h.send_header("Content-Type", "video/mp4")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body[: len(body) // 3])
                h.wfile.flush()
                h.close_connection = True
            else:
                self._forever(h, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def _forever(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        while not self.stop.is_set():
            h.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            h.wfile.flush()


def _send(h: http.server.BaseHTTPRequestHandler, code: int, body: bytes, headers=None) -> None:
    h.send_response(code)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)
