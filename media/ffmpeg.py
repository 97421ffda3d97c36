"""The one way capmine runs ffmpeg and ffprobe.

Every call has a deadline, every failure is a :class:`MediaError` whose
message names the input and ends with the tool's own last lines of stderr, so
the row written for a bad video says what went wrong. :func:`run` runs a
command to completion; :class:`Pipe` streams a long decode, reading stdout
while a thread drains stderr line by line (else ffmpeg blocks on a full pipe).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
DEFAULT_TIMEOUT = 120.0  # seconds for one call over a short clip or one probe
_ERROR_TAGS = ("[error]", "[fatal]", "[panic]")  # -loglevel level+info tags each line


def file_arg(path: str | Path) -> str:
    """A local file as ffmpeg/ffprobe must be given it: ``file:`` + the absolute path.

    A bare name is read by the tools as an option when it starts with ``-``
    (``-report`` writes a log file) and as a protocol when it holds a colon
    (``concat:``, ``http:``); the ``file:`` prefix makes it a plain file always.
    """
    return "file:" + os.path.abspath(os.fspath(path))


class FilterLog:
    """The stderr lines of one filter instance, told apart from everything else ffmpeg prints.

    ffmpeg prints an input's file name, title and comments to the same stderr,
    and those are the input's to choose, newlines included; a log line is only
    this filter's when it starts with its instance name. The name carries a
    random part no input can know: use :attr:`name` in the filter graph (as
    ``showinfo@capmine...``) and :meth:`body` to read its lines.
    """

    def __init__(self, filter_name: str):
        self.filter = filter_name
        self.name = f"{filter_name}@capmine{secrets.token_hex(8)}"
        # "[NAME @ 0x55d0...] [info] text"; the level tag is there with -loglevel level+...
        self._prefix = re.compile(
            rf"\[{re.escape(self.name)} @ (?:0x)?[0-9a-fA-F]+\] (?:\[[a-z]+\] )?"
        )

    def body(self, line: str) -> str | None:
        """What the filter said on ``line``, or None when the line is not this filter's."""
        m = self._prefix.match(line)
        return line[m.end() :] if m else None


class MediaError(Exception):
    """Media that cannot be probed, decoded or encoded: bad data, not a bad run.

    The message names the input (a path, or what was being read) and ends
    with ffprobe's or ffmpeg's own last lines of stderr.
    """


def stderr_tail(stderr: bytes | str | None, lines: int = 5) -> str:
    """The last non-empty lines of a tool's stderr, where its error message is."""
    if not stderr:
        return ""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def run(
    cmd: Sequence[str],
    *,
    what: str | Path,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: bytes | None = None,
) -> bytes:
    """Run ``cmd`` (ffmpeg or ffprobe) to completion and return its stdout.

    ``what`` names the input in the error; ``stdin`` is fed to the tool (else
    it reads nothing: a stray prompt must not hang a worker).
    """
    tool = Path(cmd[0]).name
    try:
        proc = subprocess.run(
            list(cmd),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise MediaError(f"{what}: {tool} timed out after {timeout:g} s") from e
    except OSError as e:  # the binary itself is missing or not executable
        raise MediaError(f"{what}: cannot run {tool}: {e}") from e
    if proc.returncode != 0:
        raise MediaError(f"{what}: {tool} failed: {stderr_tail(proc.stderr) or 'no message'}")
    return proc.stdout


class Pipe:
    """A running ffmpeg whose stdout is read by the caller and whose stderr a thread drains.

    Each stderr line goes to ``on_line``; a line it does not consume (returns
    False) is kept for :meth:`tail`. ``on_close`` runs once stderr ends.
    ``timeout`` bounds the whole run: past it ffmpeg is killed and
    :meth:`finish` says so. Leaving the ``with`` block, normally or on a
    closed generator, kills and reaps ffmpeg, so no process outlives its reader.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        what: str | Path,
        timeout: float | None,
        on_line: Callable[[str], bool] | None = None,
        on_close: Callable[[], None] | None = None,
    ):
        self.cmd = list(cmd)
        self.what = what
        self.timeout = timeout
        self.timed_out = False
        self.returncode: int | None = None
        self._on_line = on_line or (lambda line: False)
        self._on_close = on_close or (lambda: None)
        self._lines: deque[str] = deque(maxlen=50)

    def __enter__(self) -> Pipe:
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._reader.start()
        self._timer = None
        if self.timeout is not None:
            self._timer = threading.Timer(self.timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def _expire(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def read_into(self, out: memoryview) -> bool:
        """Fill ``out`` from stdout; False at the end (a torn last chunk is dropped)."""
        got = 0
        assert self.proc.stdout is not None
        while got < len(out):
            n = self.proc.stdout.readinto(out[got:])
            if not n:
                return False
            got += n
        return True

    def finish(self) -> None:
        """Wait for ffmpeg to exit; a failure or a timeout is the input's error."""
        self.returncode = self.proc.wait()
        self._reader.join()
        if self.returncode == 0:
            return
        if self.timed_out:
            raise MediaError(f"{self.what}: ffmpeg timed out after {self.timeout:g} s")
        raise MediaError(
            f"{self.what}: ffmpeg exited {self.returncode}: {self.tail() or 'no message'}"
        )

    def problems(self, *, errors_only: bool = False) -> list[str]:
        """Lines ffmpeg tagged as errors (and warnings, unless ``errors_only``: some
        are routine, such as swscale's note on yuvj420p). Needs ``-loglevel level+...``."""
        tags = _ERROR_TAGS if errors_only else ("[warning]", *_ERROR_TAGS)
        return [line for line in self._lines if any(tag in line for tag in tags)]

    def tail(self) -> str:
        """ffmpeg's own complaints if it made any, else its last lines."""
        return stderr_tail("\n".join(self.problems() or self._lines))

    def _drain(self, stderr: IO[bytes]) -> None:
        try:
            for raw in iter(stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if not self._on_line(line):
                    self._lines.append(line)
        finally:
            self._on_close()
