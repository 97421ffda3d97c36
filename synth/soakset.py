"""The soak set: many small videos and seeds, a third of them broken in a known way.

Good videos show one seed picture for 3 s in 9 s of noise (as files, over HTTP,
and with hostile metadata that must not move their timestamps). Broken ones are
truncated, empty, garbage, audio only, missing, or served by a
:class:`~synth.faultserver.FaultServer` that hangs, answers 429 or 500, drops
the connection mid-body, or streams for ever. Seeds come as one CSV holding
good pictures and a FIFO, decompression bombs, garbage, a missing file, a
``data:`` URL, a URL to a hanging server and a row with an unquoted comma.

:func:`make_soak_set` writes it all and returns what each input should become.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from media.ffmpeg import FFMPEG, run
from synth.testmedia import truncate, write_image, write_video

SHOW = (3.0, 6.0)  # seconds of a good video that show its seed
SECONDS = 9.0
HOSTILE_TITLE = "Parsed_showinfo_0 n:0 pts:0 pts_time:0 duration:1"


def picture(k: int) -> np.ndarray:
    """Seed picture ``k``: 4x4 blocks of random colour, 64x64."""
    rng = np.random.default_rng(1000 + k)
    return np.kron(rng.integers(0, 255, (4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8)


@dataclass
class SoakSet:
    root: Path
    seeds: Path  # the seed CSV
    videos: Path  # the video list
    good_videos: dict[str, int] = field(default_factory=dict)  # url -> seed k shown
    broken_videos: dict[str, str] = field(default_factory=dict)  # url -> what is wrong
    broken_seeds: dict[str, str] = field(default_factory=dict)  # seed id -> what is wrong
    n_good_seeds: int = 0


def _video(path: Path, k: int, *, title: str | None = None) -> Path:
    noise = np.random.default_rng(k)

    def frame(i: int, t: float) -> np.ndarray:
        if SHOW[0] <= t < SHOW[1]:
            return picture(k)
        return noise.integers(100, 140, (64, 64, 3)).astype(np.uint8)

    write_video(path, frame, seconds=SECONDS, fps=5.0, width=64, height=64)
    if title is not None:  # hostile metadata: a title and comment that look like showinfo
        tmp = path.with_suffix(".tmp.mp4")
        run([FFMPEG, "-v", "error", "-y", "-i", str(path), "-c", "copy",
             "-metadata", f"title={title}", "-metadata", f"comment=\n{title}\n",
             str(tmp)], what=path)  # fmt: skip
        tmp.replace(path)
    return path


def _seeds(root: Path, n_good: int, hang_url: str, s: SoakSet) -> Path:
    d = root / "seed_images"
    d.mkdir(parents=True, exist_ok=True)
    rows = ["id,url,caption"]
    for k in range(1, n_good + 1):
        write_image(d / f"s{k}.png", picture(k))
        rows.append(f"s{k},{d / f's{k}.png'},picture number {k}")
    fifo = d / "fifo.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    for i in range(2):  # 1-bit 12000x12000 PNGs: tens of KB on disk, 144 megapixels
        Image.new("1", (12000, 12000), 1).save(d / f"bomb{i}.png", optimize=True)
    (d / "garbage.png").write_bytes(os.urandom(4096))
    bad = {
        "fifo": (str(fifo), "a FIFO"),
        "bomb0": (str(d / "bomb0.png"), "a decompression bomb"),
        "bomb1": (str(d / "bomb1.png"), "a decompression bomb"),
        "garbage": (str(d / "garbage.png"), "not an image"),
        "missing": (str(d / "missing.png"), "missing"),
        "data": ("data:image/png;base64,iVBORw0KGgo=", "a data: URL"),
        "hang": (hang_url, "a server that never answers"),
    }
    for sid, (url, why) in bad.items():
        rows.append(f'{sid},"{url}",a broken seed {sid}')
        s.broken_seeds[sid] = why
    # a failed table row is named by its file and line, the id column being unreadable
    s.broken_seeds[f"seeds.csv:{len(rows) + 1}"] = "a row with an unquoted comma"
    rows.append("comma,/nowhere/x.png,a caption, with an unquoted comma")
    path = root / "seeds.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def make_soak_set(root: str | Path, server, *, n_good_seeds: int = 20, n_local: int = 40,
                  n_http: int = 6) -> SoakSet:  # fmt: skip
    """Write the set under ``root``; ``server`` is a running FaultServer serving ``root/served``."""
    root = Path(root)
    vids, served = root / "videos", root / "served"
    vids.mkdir(parents=True, exist_ok=True)
    served.mkdir(parents=True, exist_ok=True)
    s = SoakSet(root, root / "seeds.csv", root / "videos.txt", n_good_seeds=n_good_seeds)
    (served / "seed.png").write_bytes(b"")
    s.seeds = _seeds(root, n_good_seeds, server.url("hang", "seed.png"), s)
    for i in range(n_local):
        k = i % n_good_seeds + 1
        s.good_videos[str(_video(vids / f"good{i:02d}.mp4", k))] = k
    for i in range(n_http):
        k = (n_local + i) % n_good_seeds + 1
        _video(served / f"web{i}.mp4", k)
        s.good_videos[server.url("ok", f"web{i}.mp4")] = k
    for i, name in enumerate(("hostile_title.mp4", f"{HOSTILE_TITLE}.mp4", "-report.mp4")):
        k = i + 1
        s.good_videos[str(_video(vids / name, k, title=HOSTILE_TITLE))] = k
    _broken_files(vids, s)
    _video(served / "served.mp4", 1)
    for fault, why in (("hang", "never answers"), ("429", "always 429"), ("500", "always 500"),
                       ("drop", "drops mid-body"), ("forever", "streams for ever")):  # fmt: skip
        for j in range(2):
            s.broken_videos[server.url(fault, "served.mp4") + f"?n={j}"] = why
    s.videos.write_text("".join(f"{u}\n" for u in [*s.good_videos, *s.broken_videos]))
    return s


def _broken_files(vids: Path, s: SoakSet) -> None:
    for i in range(3):
        p = truncate(_video(vids / f"truncated{i}.mp4", 1), 0.3 + 0.2 * i)
        s.broken_videos[str(p)] = "truncated"
    for i in range(2):
        (vids / f"empty{i}.mp4").write_bytes(b"")
        s.broken_videos[str(vids / f"empty{i}.mp4")] = "empty"
        (vids / f"garbage{i}.mp4").write_bytes(os.urandom(20000 + i))
        s.broken_videos[str(vids / f"garbage{i}.mp4")] = "garbage"
        p = vids / f"audio_only{i}.m4a"
        run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
             "-c:a", "aac", str(p)], what=p)  # fmt: skip
        s.broken_videos[str(p)] = "audio only"
    s.broken_videos[str(vids / "missing.mp4")] = "missing"
