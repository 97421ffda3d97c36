"""Who may use an OUT folder: capmine's marker, and the lock one run holds on it.

An OUT folder belongs to capmine alone and to one run at a time:

* ``OUT/.capmine`` marks a folder capmine took. A non-empty folder without it
  is refused untouched (a user's folder is never written into or cleaned);
  a capmine run from before the marker existed, known by its ``seeds.json``
  or ``runs.json``, is adopted and marked.
* ``OUT/.capmine.lock`` is locked (``flock``, exclusive) by the process that
  drives a run, for the whole run, and names it (pid, host, start time). A
  second run on the same OUT stops at once and says which run holds it. The
  kernel drops the lock when its process ends, however it ends (SIGKILL
  included), so a killed run's folder is simply taken over.
* A capmine subfolder of OUT that is a symbolic link is refused: clean-ups
  never follow links.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = ".capmine"
LOCK = ".capmine.lock"
LOG = "capmine.log"
# Subfolders capmine writes into and cleans: never a link.
SUBFOLDERS = (
    "shards",
    "staging",
    "scans",
    "seed_chunks",
    "downloads",
    "dropped",
    "embeddings",
    "report",
)
# Files that identify a capmine run made before the marker existed.
LEGACY = {"seeds.json": "fingerprint", "runs.json": "runs"}


class OutFolderError(ValueError):
    """OUT cannot be used: not capmine's, in use by another run, or holding a link."""


_held: dict[str, list[Any]] = {}  # real path of OUT -> [lock fd, depth], for this process
_held_guard = threading.Lock()


def _is_legacy_run(root: Path) -> bool:
    for name, key in LEGACY.items():
        path = root / name
        if path.is_file() and not path.is_symlink():
            try:
                if key in json.loads(path.read_text()):
                    return True
            except (OSError, ValueError):
                continue
    return False


def check_subfolders(root: Path) -> None:
    """Refuse OUT when one of capmine's subfolders is a symbolic link (or not a folder)."""
    for name in SUBFOLDERS:
        path = root / name
        if path.is_symlink():
            hint = " (downloads may live elsewhere with --cache-dir)" if name == "downloads" else ""
            raise OutFolderError(
                f"{path} is a symbolic link: capmine neither writes nor deletes through links "
                f"in OUT; make it a real folder{hint}"
            )
        if path.exists() and not path.is_dir():
            raise OutFolderError(f"{path} is not a folder; capmine needs it for its own files")


def check_owned(root: str | Path) -> bool:
    """Raise unless capmine may use ``root``; True when it must be marked (new or adopted)."""
    root = Path(root)
    if not root.exists():
        return True
    if not root.is_dir():
        raise OutFolderError(f"{root} is not a folder")
    check_subfolders(root)
    if (root / MARKER).is_file():
        return False
    others = [n for n in os.listdir(root) if n not in (MARKER, LOCK)]
    if not others:
        return True
    if _is_legacy_run(root):
        log.info("%s: a capmine run from before %s existed; adopting it", root, MARKER)
        return True
    shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
    raise OutFolderError(
        f"{root} is not empty ({shown}) and is not a capmine output folder (no {MARKER}); "
        "capmine writes only into an empty folder or its own: choose another --out"
    )


def _holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another capmine run, starting"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"capmine {holder.get('command', 'run')}, pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {started}")  # fmt: skip


@contextlib.contextmanager
def claim_out(root: str | Path, command: str = "mine") -> Iterator[Path]:
    """Hold OUT for one run: check it is capmine's, lock it, mark it; released on exit.

    Re-entrant within a process (the CLI and the flow it runs both claim the
    same OUT); a second process gets :class:`OutFolderError` at once.
    """
    root = Path(root)
    key = os.path.realpath(root)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield root
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    mark = check_owned(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise OutFolderError(
            f"{root} is in use by {describe_holder(holder)}; one run at a time per OUT: "
            "wait for it to finish or stop it"
        ) from None
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": command}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        check_owned(root)  # again under the lock: nothing slipped in meanwhile
        if mark or not (root / MARKER).is_file():
            from shards.writer import atomic_write_json

            atomic_write_json(root / MARKER, {"capmine": 1, "created": time.time()})
    except BaseException:
        os.close(fd)
        raise
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield root
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock
