"""The run report seen in a real browser: headless Chromium's screenshot and DOM of a page.

The tests check ``report.html`` through these, and ``make docs`` makes the
README's picture with them::

    python -m runs.browser demo/out/report.html docs/report.png

Chromium is Debian's ``chromium`` package (``make test-deps`` installs it). Each
call gets a fresh profile folder and no network: Chromium's own background
traffic (updates, sync) is switched off, and the page itself names no URL.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--disable-default-apps", "--disable-extensions",
         "--mute-audio")  # fmt: skip


class BrowserError(RuntimeError):
    """Chromium is missing, or did not render the page."""


def chromium() -> str:
    """The Chromium binary on PATH."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError(
        "chromium is not installed: `make test` installs Debian's chromium package "
        "(through `make test-deps`), or run `sudo apt-get install chromium`"
    )


@contextlib.contextmanager
def _profile() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="capmine-chromium-") as tmp:
        yield tmp


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run Chromium in its own process group, so a hung one is ended with all its children."""
    with _profile() as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BrowserError(f"chromium did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace")[-800:]
        raise BrowserError(f"chromium exited with {proc.returncode}: {tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def screenshot(
    page: str | Path, png: str | Path, *, width: int = 1280, height: int = 2000,
    timeout: float = 90.0,
) -> Path:  # fmt: skip
    """A PNG of the top ``width`` x ``height`` pixels of ``page`` (a local HTML file)."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}",
          Path(page).resolve().as_uri()], timeout)  # fmt: skip
    if not png.is_file():
        raise BrowserError(f"chromium wrote no screenshot of {page}")
    return png


def dump_dom(page: str | Path, *, timeout: float = 90.0) -> str:
    """The DOM of ``page`` as Chromium serialises it once the page has loaded."""
    done = _run(["--dump-dom", Path(page).resolve().as_uri()], timeout)
    return done.stdout.decode("utf-8", "replace")


def shrink_png(src: str | Path, dst: str | Path, *, width: int = 800, colours: int = 96) -> int:
    """``src`` scaled to ``width`` pixels wide and reduced to ``colours`` colours, as a PNG at
    ``dst`` (written whole, then renamed); returns its size in bytes."""
    with Image.open(src) as im:
        rgb = im.convert("RGB")
    if rgb.width > width:
        rgb = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.LANCZOS)
    small = rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(dst)
    return len(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runs.browser",
                                description="A small PNG of a run report, for the README.")  # fmt: skip
    p.add_argument("page", help="report.html")
    p.add_argument("png", help="the PNG to write")
    p.add_argument("--height", type=int, default=2300, help="pixels of the page shown (2300)")
    p.add_argument("--width", type=int, default=760, help="width of the PNG in pixels (760)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capmine-shot-") as tmp:
        full = screenshot(args.page, Path(tmp) / "full.png", height=args.height)
        size = shrink_png(full, args.png, width=args.width)
    print(f"{args.png}: {size / 1000:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
