"""Memory and time of loading decompression-bomb seeds, and one large real-size photo.

A bomb is a 1-bit PNG of SIDE x SIDE pixels, all white: about 17 KB on disk for
12000 x 12000, 144 megapixels once decoded. The script writes BOMBS of them and
one 6000 x 4000 JPEG, then loads the seed list (bombs and photo) with
``load_seed_images`` on WORKERS threads in a fresh Python process, and prints
one JSON object: the peak resident memory of that process (``peak_rss_mb``),
the wall time, how many seeds were refused and the first error, and the time
and memory of loading the photo alone.

    .venv/bin/python bench/seed_bombs.py                 # 8 bombs, 16 workers
    .venv/bin/python bench/seed_bombs.py --bombs 16 --workers 16

Run it on an older checkout (``PYTHONPATH=that/checkout``) for the figures
before the pixel cap; the child process imports ``miners.seeds`` from
PYTHONPATH, or from this checkout when that is unset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
from miners.seeds import Seed, load_seed_images
paths, workers = json.loads(sys.argv[1]), int(sys.argv[2])
seeds = [Seed(str(i), "bomb", p) for i, p in enumerate(paths)]
t0 = time.monotonic()
results = list(load_seed_images(seeds, 224, workers=workers))
errors = [e for _, _, e in results if e]
print(json.dumps({
    "seconds": round(time.monotonic() - t0, 2),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "loaded": sum(a is not None for _, a, _ in results),
    "refused": len(errors),
    "first_error": errors[0] if errors else None,
}))
"""


def _bomb(path: Path, side: int) -> None:
    from PIL import Image

    Image.new("1", (side, side), 1).save(path, format="PNG", optimize=True)


def _photo(path: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)  # smooth after upscaling
    Image.fromarray(small).resize((6000, 4000), Image.Resampling.BILINEAR).save(
        path, format="JPEG", quality=90
    )


def _run(paths: list[str], workers: int, cwd: str) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(paths), str(workers)],
        env=env,
        cwd=cwd,  # not this checkout: ``-c`` puts the working folder first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bombs", type=int, default=8, help="bomb seeds in the list (default: 8)")
    parser.add_argument("--side", type=int, default=12000, help="bomb side, pixels (12000)")
    parser.add_argument("--workers", type=int, default=16, help="seed workers (default: 16)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capmine-bombs-") as tmp:
        bomb = Path(tmp) / "bomb.png"
        _bomb(bomb, args.side)
        bombs = []
        for i in range(args.bombs):  # distinct files, as a list of seeds would have
            copy = Path(tmp) / f"bomb{i}.png"
            copy.write_bytes(bomb.read_bytes())
            bombs.append(str(copy))
        photo = Path(tmp) / "photo.jpg"
        _photo(photo)
        report = {
            "pythonpath": os.environ.get("PYTHONPATH", str(ROOT)),
            "bomb_bytes": bomb.stat().st_size,
            "bomb_pixels": args.side * args.side,
            "workers": args.workers,
            "bombs": _run(bombs, args.workers, tmp),
            "photo_6000x4000_jpeg": _run([str(photo)], 1, tmp),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
