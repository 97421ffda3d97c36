"""A generated clip set whose bad clips are known: the filters' acceptance check.

Every clip is made with ffmpeg's lavfi sources, turned grey and tinted one
colour, so its dominant colour is known by construction; its caption names a
colour. :class:`ColourLayoutEmbedder` embeds a frame as its colour (the mean
RGB with grey removed) next to its coarse grey layout, and a caption as the
colours it names, in the colour half only: a caption that names the clip's
tint agrees with its frames (cosine about 0.7), one that names the opposite
tint disagrees (about -0.7). The layout half tells clips apart for dedup.

Good clips move, sound, are one shot (or a long matched shot next to a short
one) and agree with their captions. Each bad clip is bad in exactly one way,
with the reason a filter should give it:

=============  ====================================================  ====================
kind           how it is made                                        expected reason
=============  ====================================================  ====================
silent         a moving picture; digital silence or a -81 dBFS tone  ``silent``
static         the first frame of a moving source, held               ``static``
cut            two sources; the matched shot lasts under 3 s          ``crosses_cut``
duplicate      a copy (bytes, or re-encoded a little brighter)        ``duplicate``
mismatch       a moving clip captioned with the opposite colour       ``caption_mismatch``
=============  ====================================================  ====================
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from media.audio import AUDIO_RATE
from media.ffmpeg import FFMPEG, run
from shards.record import Caption, ClipRecord

SIZE = "128x72"
RATE = 10  # frames per second


# Tints: the factor each RGB channel of the grey picture is multiplied by.
TINTS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.25, 0.25),
    "green": (0.25, 1.0, 0.25),
    "blue": (0.25, 0.25, 1.0),
    "yellow": (1.0, 1.0, 0.25),
    "cyan": (0.25, 1.0, 1.0),
    "magenta": (1.0, 0.25, 1.0),
}
OPPOSITE = {
    "red": "cyan", "cyan": "red", "green": "magenta", "magenta": "green",
    "blue": "yellow", "yellow": "blue",
}  # fmt: skip
# Pure colours the caption words stand for (the text tower's "meaning").
COLOUR_WORDS = {
    name: tuple(255 if f == 1.0 else 0 for f in factors) for name, factors in TINTS.items()
}

EXPECTED = {
    "good": None,
    "silent": "silent",
    "static": "static",
    "cut": "crosses_cut",
    "duplicate": "duplicate",
    "mismatch": "caption_mismatch",
}


class ColourLayoutEmbedder:
    """Frames embed as [mean colour minus grey, 8x8 grey layout minus its mean], each half
    unit length, the whole scaled to unit; captions as the colours they name, colour half only.
    """

    grid = 8
    image_size = 32
    dim = 3 + grid * grid

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected (N, 32, 32, 3) images, got {images.shape}")
        x = images.astype(np.float32) / 255.0
        colour = x.reshape(len(x), -1, 3).mean(axis=1)
        colour -= colour.mean(axis=1, keepdims=True)
        g, cell = self.grid, self.image_size // self.grid
        layout = x.mean(axis=3).reshape(len(x), g, cell, g, cell).mean(axis=(2, 4))
        layout = layout.reshape(len(x), -1)
        layout -= layout.mean(axis=1, keepdims=True)
        return _unit(np.concatenate([_unit(colour), _unit(layout)], axis=1))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                if word in COLOUR_WORDS:
                    rgb = np.asarray(COLOUR_WORDS[word], np.float32)
                    out[i, :3] += _unit((rgb - rgb.mean())[None])[0]
        return _unit(out)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def colour_layout_embedder() -> ColourLayoutEmbedder:
    """Factory for ``--embedder synth.clipset:colour_layout_embedder``."""
    return ColourLayoutEmbedder()


@dataclass
class Shot:
    """``seconds`` of lavfi ``source`` tinted ``tint``; ``still`` holds its first frame."""

    source: str
    tint: str
    seconds: float
    still: bool = False
    vf: str = "null"  # a flip gives a source a second layout


@dataclass
class ClipSpec:
    """One clip of the set: its shots, caption, sound, and the kind that says its fate."""

    key: str
    kind: str  # "good" or a bad kind of EXPECTED
    shots: list[Shot] = field(default_factory=list)
    caption: str = ""
    tone: float = 440.0  # Hz
    volume_db: float = 0.0  # gain on the sound (lavfi's sine is -21 dBFS RMS at 0 dB)
    silence: bool = False  # anullsrc (digital zeros) instead of the sine
    match_at: float | None = None  # seconds into the clip; None: the middle
    similarity: float = 0.9
    copy_of: str | None = None  # duplicate: the good clip copied
    near: bool = False  # duplicate: re-encoded a little brighter instead of copied

    @property
    def expected(self) -> str | None:
        return EXPECTED[self.kind]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shots)


# Moving sources, (lavfi source, flip), each a layout of its own so that no two good
# clips look alike. Left out: sierpinski and scrolling cellauto (a global shift
# explains their motion: pan_still, rightly), gradients (flat once grey), the fastest
# mandelbrot zooms (end_pts 1-2 s: media.cuts sees a cut as the zoom runs out) and slow
# ones (under a grey level a frame).
MOVING = [
    ("testsrc2", "null"),
    ("life=seed=1:ratio=0.2", "null"),
    ("mandelbrot=end_pts=60:start_x=-0.743643887:start_y=0.131825904", "null"),
    ("testsrc", "null"),
    ("life=seed=5:ratio=0.5", "null"),
    ("cellauto=rule=110:seed=2:scroll=0", "null"),
    ("testsrc2", "hflip"),
    ("mandelbrot=end_pts=60:start_x=0.28:start_y=0.008", "null"),
    ("life=seed=7:ratio=0.3", "null"),
    ("testsrc", "vflip"),
]

# Cuts join sources of MOVING (by index) that are not life. PySceneDetect, the shots
# filter's first detector, missed a cut next to life (every life frame changed as much
# as a cut). media.cuts finds those; life's first step from its random start can
# itself read as a cut (seed 5, ratio 0.5: at 0.1 s, as a lone untinted clip).
GOOD_CUTS = {3: 7, 9: 2}  # good clip -> the source of its short unmatched shot
CUTS = [(0, 7), (2, 9), (3, 6), (7, 0)]  # (matched source, the other) of the cut clips


def _shot(i: int, tint: str, seconds: float, still: bool = False) -> Shot:
    source, vf = MOVING[i % len(MOVING)]
    return Shot(source, tint, seconds, still, vf)


def clip_specs(n_good: int = 20, n_bad: int = 4) -> list[ClipSpec]:
    """The set: ``n_good`` good clips (two of them with a cut outside a long matched shot)
    and ``n_bad`` of each bad kind. Deterministic.

    Good clip ``i`` is source ``i % 10`` in tint ``(i + 3 (i // 10) + 3 ((i % 10) // 6)) % 6``: a flipped source never
    shares a tint with its unflipped twin, so no two good clips are look-alikes.
    """
    tints = list(TINTS)
    specs: list[ClipSpec] = []

    def caption(tint: str, i: int) -> str:
        nouns = ["pattern", "scene", "shape", "picture", "screen"]
        return f"a {tint} {nouns[i % len(nouns)]} moving"

    for i in range(n_good):
        tint = tints[(i + 3 * (i // 10) + 3 * ((i % 10) // 6)) % len(tints)]
        spec = ClipSpec(
            f"good{i:02d}", "good", [_shot(i, tint, 4.0 + (i % 3))], caption(tint, i),
            tone=220.0 + 40 * i, volume_db=-2.0 * (i % 10),
        )  # fmt: skip
        if i in GOOD_CUTS:  # a cut, but the matched shot is long: shrunk to it and kept
            spec.shots = [_shot(i, tint, 4.5), _shot(GOOD_CUTS[i], OPPOSITE[tint], 1.5)]
            spec.match_at = 2.0
        specs.append(spec)
    for i in range(n_bad):
        tint = tints[(i + 2) % len(tints)]
        specs.append(
            ClipSpec(
                f"silent{i}",
                "silent",
                [_shot(i + 3, tint, 4.0)],
                caption(tint, i),
                silence=i % 2 == 0,
                volume_db=-60.0,
            )  # fmt: skip
        )
    for i in range(n_bad):
        tint = tints[(i + 4) % len(tints)]
        shot = _shot(i + 6, tint, 4.0, still=True)
        specs.append(ClipSpec(f"static{i}", "static", [shot], caption(tint, i)))
    for i in range(n_bad):
        tint = tints[(i + 1) % len(tints)]
        other = OPPOSITE[tint]
        a, b = CUTS[i % len(CUTS)]
        if i % 2:  # the match in a 2 s middle shot
            shots = [_shot(a, tint, 2.0), _shot(b, other, 2.0), _shot(a, tint, 2.0)]
            at = 3.0
        else:  # the match in a 1.5 s last shot
            shots = [_shot(a, tint, 3.5), _shot(b, other, 1.5)]
            at = 4.5
        specs.append(ClipSpec(f"cut{i}", "cut", shots, caption(other, i), match_at=at))
    for i in range(n_bad):
        original = specs[(5 * i + 1) % n_good]
        specs.append(
            ClipSpec(
                f"dup{i}",
                "duplicate",
                original.shots,
                original.caption,
                similarity=0.8 - 0.05 * i,
                copy_of=original.key,
                near=i % 2 == 1,
            )  # fmt: skip
        )
    for i in range(n_bad):
        tint = tints[(i + 3) % len(tints)]
        specs.append(
            ClipSpec(
                f"mismatch{i}",
                "mismatch",
                [_shot(i + 9, tint, 5.0)],
                caption(OPPOSITE[tint], i),
                tone=300.0 + 50 * i,
            )  # fmt: skip
        )
    return specs


def _ffmpeg(*args: str) -> None:
    """One ffmpeg call (its last argument the output) through the media layer's runner."""
    run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], what=args[-1])


def _lavfi(src: str) -> str:
    sep = ":" if "=" in src else "="
    return f"{src}{sep}size={SIZE}:rate={RATE}"


def _shot_graph(i: int, shot: Shot) -> str:
    r, g, b = TINTS[shot.tint]
    hold = "loop=loop=-1:size=1:start=0," if shot.still else ""
    return (
        f"[{i}:v]{shot.vf},{hold}trim=duration={shot.seconds},setpts=PTS-STARTPTS,format=gray,"
        f"format=rgb24,lutrgb=r=val*{r}:g=val*{g}:b=val*{b},format=yuv420p,setsar=1[v{i}];"
    )


def make(spec: ClipSpec, folder: Path, start: float = 10.0) -> ClipRecord:
    """Encode one clip (mp4 with AAC, mono 16 kHz flac, jpg at the match) and its record.

    The record's window is [start, start + seconds) of a source video of its own.
    """
    mp4, flac, jpg = (folder / f"{spec.key}.{ext}" for ext in ("mp4", "flac", "jpg"))
    seconds = spec.seconds
    args: list[str] = []
    for shot in spec.shots:
        args += ["-f", "lavfi", "-t", f"{shot.seconds + 1}", "-i", _lavfi(shot.source)]
    n = len(spec.shots)
    audio = (
        f"anullsrc=channel_layout=mono:sample_rate={AUDIO_RATE}"
        if spec.silence
        else f"sine=frequency={spec.tone}:sample_rate={AUDIO_RATE}"
    )
    args += ["-f", "lavfi", "-t", f"{seconds}", "-i", audio]
    graph = "".join(_shot_graph(i, s) for i, s in enumerate(spec.shots))
    graph += "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[out];"
    graph += f"[{n}:a]volume={spec.volume_db}dB,asplit[a1][a2]"
    _ffmpeg(
        *args, "-filter_complex", graph,
        "-map", "[out]", "-map", "[a1]", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", f"{seconds}", str(mp4),
        "-map", "[a2]", "-ac", "1", "-t", f"{seconds}", str(flac),
    )  # fmt: skip
    at = seconds / 2 if spec.match_at is None else spec.match_at
    _ffmpeg("-ss", f"{at}", "-i", str(mp4), "-frames:v", "1", str(jpg))
    return _record(spec, start, at, mp4, flac, jpg)


def _record(spec: ClipSpec, start: float, at: float, mp4: Path, flac: Path, jpg: Path):
    video_id = f"video_{spec.key}"
    return ClipRecord(
        key=spec.key, video=f"{video_id}.mp4", video_id=video_id,
        start=start, end=start + spec.seconds, match_time=start + at,
        similarity=spec.similarity,
        captions=[Caption(f"seed_{spec.key}", spec.caption, spec.similarity, start + at)],
        source={"width": 128, "height": 72, "fps": float(RATE)},
        mp4=str(mp4), flac=str(flac), jpg=str(jpg),
    )  # fmt: skip


def make_copy(spec: ClipSpec, original: ClipRecord, folder: Path) -> ClipRecord:
    """A duplicate of ``original``: its bytes, or re-encoded 3 % brighter (a near copy)."""
    mp4, flac, jpg = (folder / f"{spec.key}.{ext}" for ext in ("mp4", "flac", "jpg"))
    if spec.near:
        _ffmpeg("-i", original.mp4, "-vf", "eq=brightness=0.03", "-c:v", "libx264",
                "-preset", "ultrafast", "-crf", "23", "-c:a", "copy", str(mp4))  # fmt: skip
    else:
        shutil.copy(original.mp4, mp4)
    shutil.copy(original.flac, flac)
    shutil.copy(original.jpg, jpg)
    at = original.match_time - original.start
    return _record(spec, original.start, at, mp4, flac, jpg)


def generate(folder: Path, specs: Iterable[ClipSpec] | None = None, workers: int = 4):
    """Encode the set into ``folder``, clips in parallel (ffmpeg does the work, so threads do).

    Returns (records, specs by key), records in spec order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    specs = list(clip_specs() if specs is None else specs)
    by_key = {s.key: s for s in specs}
    with ThreadPoolExecutor(workers) as pool:
        made = dict(
            zip(
                [s.key for s in specs if not s.copy_of],
                pool.map(lambda s: make(s, folder), [s for s in specs if not s.copy_of]),
                strict=True,
            )
        )
        copies = [s for s in specs if s.copy_of]
        for s, rec in zip(
            copies, pool.map(lambda s: make_copy(s, made[s.copy_of], folder), copies), strict=True
        ):
            made[s.key] = rec
    return [made[s.key] for s in specs], by_key


def acceptance_spec(**bounds: dict[str, Any]) -> list[dict[str, Any]]:
    """The default chain (filters/default.yaml) plus ``agreement`` and ``dedup``, as a mining
    run with an embedder uses it; ``bounds`` overrides parameters by filter name.

    ``vad`` is left out: it has no bound by default, drops nothing, and would only add
    a torch import and a model load to the check.
    """
    from filters.registry import DEFAULT_YAML, load_spec

    spec = [item for item in load_spec(DEFAULT_YAML) if item["name"] != "vad"]
    spec.insert(len(spec) - 1, {"name": "agreement"})  # after the media filters, before caps
    spec.append({"name": "dedup"})
    return [{**item, **bounds.get(item["name"], {})} for item in spec]


def accuracy(records: list[ClipRecord], specs: dict[str, ClipSpec]) -> dict:
    """Per bad kind: the share dropped with its expected reason; the share of good clips kept."""
    kinds: dict[str, list[bool]] = {}
    wrong: dict[str, str | None] = {}
    for r in records:
        spec = specs[r.key]
        right = r.status == "ok" if spec.expected is None else r.reason == spec.expected
        kinds.setdefault(spec.kind, []).append(right)
        if not right:
            wrong[r.key] = r.reason if r.status != "ok" else "kept"
    bad = [ok for kind, oks in kinds.items() if kind != "good" for ok in oks]
    return {
        "good_kept": sum(kinds["good"]) / len(kinds["good"]),
        "bad_dropped_right_reason": sum(bad) / len(bad),
        "per_kind": {k: round(sum(v) / len(v), 3) for k, v in kinds.items() if k != "good"},
        "counts": {k: len(v) for k, v in kinds.items()},
        "wrong": wrong,
    }


EMBEDDER = "synth.clipset:colour_layout_embedder"


def mine(folder: Path, spec: list[dict[str, Any]] | None = None, workers: int = 4):
    """Generate the set in ``folder`` and filter it as a mining run does: the per-clip chain,
    then the run-level one over everything. Returns (records, specs by key, per_clip, run_level).
    """
    from filters.base import FilterContext
    from filters.registry import split_chain

    records, specs = generate(folder / "media", workers=workers)
    per_clip, run_level = split_chain(acceptance_spec() if spec is None else spec)
    embedder = ColourLayoutEmbedder()
    per_clip(records, FilterContext(embedder=embedder, tmp_dir=folder / "recut"))
    run_level(records, FilterContext(embedder=embedder, tmp_dir=folder / "recut"))
    return records, specs, per_clip, run_level


def write_run(out: Path, records: list[ClipRecord], n_shards: int = 2) -> None:
    """``records`` as a finished run in ``out``: shards dealt round-robin, and seeds.json."""
    import json

    from shards.writer import write_shard

    for i in range(n_shards):
        write_shard(out / "shards", i, records[i::n_shards])
    (out / "seeds.json").write_text(json.dumps({"embedder": EMBEDDER}))


# Stricter bounds for the re-filter check, each between scores of the good clips, so that
# some good clips fail them: tones down to -39 dBFS (the default is -50) and motion down
# to about 0.016 (the default is 0.004, a grey level a frame).
STRICT = {"audio": {"min_rms_db": -34.0}, "motion": {"min_motion": 0.017}}
