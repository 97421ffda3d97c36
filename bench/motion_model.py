"""The motion filter's global model, shift only (old) against shift + scale (new), in one run.

Generates Ken Burns moves (:mod:`synth.kenburns`) over real photos (frames of
bigbuckbunny and bikes) and a painted one, a moving subject over a still, and
cuts the real footage of :mod:`synth.realclips` (bigbuckbunny and carphone
whole, each bikes shot of 1 s or more). Each clip's frames are read once as the
filter reads them; both models score the same frames. Prints one row a clip:
``motion``, ``pan_explained`` old and new, the new ``zoom`` (mean |log scale| a
step), both verdicts, and the seconds a clip each model took (frames decoded
beforehand, one core)::

    .venv/bin/python bench/motion_model.py               # about a minute on two cores
    .venv/bin/python bench/motion_model.py --seconds 10  # longer Ken Burns clips
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, synth/ among them

import numpy as np  # noqa: E402

from filters.motion import MotionFilter, motion_scores  # noqa: E402
from media.video import read_frames, trim  # noqa: E402
from synth.kenburns import (  # noqa: E402
    painted_photo,
    real_photo,
    write_ken_burns,
    write_moving_subject,
)
from synth.realclips import real_clip  # noqa: E402

# (move, zoom_rate per 10 s, pan_rate: share of the width per 10 s)
MOVES = [
    ("still", 1.0, 0.0),
    ("zoom_in", 1.1, 0.0),
    ("zoom_in", 1.3, 0.0),
    ("zoom_in", 1.5, 0.0),
    ("zoom_out", 1.1, 0.0),
    ("zoom_out", 1.3, 0.0),
    ("zoom_out", 1.5, 0.0),
    ("pan", 1.0, 0.05),
    ("pan", 1.0, 0.2),
    ("zoom_pan", 1.2, 0.1),
    ("zoom_pan", 1.5, 0.2),
]
PHOTOS = {
    "bunny": lambda: real_photo("bigbuckbunny", 2.0),
    "bikes": lambda: real_photo("bikes", 2.0),
    "painted": lambda: painted_photo(),
}


def clips(folder: Path, seconds: float, fps: float) -> list[tuple[str, str, Path]]:
    """(kind, name, mp4) of every clip benched; kind 'still' must drop, 'real' must pass."""
    out = []
    for pname, make in PHOTOS.items():
        photo = make()
        for move, zoom, pan in MOVES:
            name = f"{pname}:{move}" + (
                "" if move == "still" else f"@{zoom if 'zoom' in move else pan}"
            )
            if move == "zoom_pan":
                name = f"{pname}:zoom_pan@{zoom}/{pan}"
            path = folder / f"{name.replace(':', '_').replace('/', '_')}.mp4"
            write_ken_burns(path, photo, seconds=seconds, move=move, fps=fps, zoom_rate=zoom,
                            pan_rate=pan, tone_hz=None)  # fmt: skip
            out.append(("still", name, path))
        path = folder / f"{pname}_subject.mp4"
        write_moving_subject(path, photo, seconds=seconds, fps=fps, tone_hz=None)
        out.append(("real", f"{pname}:moving_subject", path))
    for name in ("bigbuckbunny", "carphone"):
        out.append(("real", name, real_clip(name).path))
    bikes = real_clip("bikes")
    for i, (a, b) in enumerate(bikes.shots()):
        if b - a >= 1.0:
            path = trim(bikes.path, a + 0.02, b - a - 0.04, folder / f"bikes_shot{i}.mp4")
            out.append(("real", f"bikes shot {i} ({a:.2f}-{b:.2f} s)", path))
    return out


def verdict(f: MotionFilter, scores: dict[str, float]) -> str:
    return f.drop_reason(scores) or "pass"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of the Ken Burns clips")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--repeat", type=int, default=3, help="timing runs a clip (best taken)")
    args = ap.parse_args()
    f = MotionFilter()
    old_t, new_t, wrong = [], [], []
    print(f"{'clip':38} {'motion':>7} {'pan_expl old':>12} {'new':>6} {'zoom':>6} "
          f"{'old verdict':>11} {'new verdict':>11} {'old s':>6} {'new s':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for kind, name, path in clips(Path(tmp), args.seconds, args.fps):
            frames = read_frames(path, f.frames, size=(f.width, f.height), grey=True)
            runs = {}
            new_model = (f.max_zoom, f.zoom_steps, f.blur, f.noise_floor)
            for label, model in (("old", (1.0, 1, 0.0, 0.0)), ("new", new_model)):
                best = float("inf")
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    s = motion_scores(frames, f.max_shift, *model)
                    best = min(best, time.perf_counter() - t0)
                runs[label] = (s, best)
            (old, to), (new, tn) = runs["old"], runs["new"]
            old_t.append(to)
            new_t.append(tn)
            vo, vn = verdict(f, old), verdict(f, new)
            if (vn == "pass") != (kind == "real"):
                wrong.append(name)
            print(f"{name:38} {new['motion']:7.4f} {old['pan_explained']:12.3f} "
                  f"{new['pan_explained']:6.3f} {new['zoom']:6.3f} {vo:>11} {vn:>11} "
                  f"{to:6.3f} {tn:6.3f}")  # fmt: skip
    print(f"\nseconds a clip (8 frames 128x128, mean / max): old {np.mean(old_t):.3f} / "
          f"{np.max(old_t):.3f}, new {np.mean(new_t):.3f} / {np.max(new_t):.3f}")  # fmt: skip
    print(f"wrong verdicts (new): {wrong or 'none'}")


if __name__ == "__main__":
    main()
