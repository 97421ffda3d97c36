"""Synthetic class shards for trainer tests: the class is in the pixels and in the tone.

Class ``k`` has its own colour layout (two named colours over a block pattern
seeded by ``k``), its own tone (``300 * 1.25**k`` Hz plus a little noise, in the
mp4's audio and the flac) and a caption that names both. Clips of a class differ
by a small random shift and noise, so an encoder has to learn the class, not
memorise a file. The shards are written with the project's own
:func:`shards.writer.write_shard`, exactly as a mining run writes them.

Speed: each class gets a few encoded variants (one ffmpeg call each, run in a
thread pool); every clip then reuses one of its class's variants and gets its own
jittered ``jpg``. 96 clips take a couple of seconds.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shards.record import Caption, ClipRecord
from shards.writer import shard_name, write_shard
from synth.encode import encode_frames

SIZE = 64  # video frames and jpgs are SIZE x SIZE
FPS = 8
SAMPLE_RATE = 16000
VARIANTS = 3  # encoded mp4/flac variants per class (and audio setting)

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 50, 220),
    "yellow": (230, 220, 30),
    "purple": (150, 40, 180),
    "cyan": (30, 210, 210),
    "orange": (240, 140, 20),
    "white": (245, 245, 245),
}
NAMES = list(PALETTE)


def tone_hz(k: int) -> float:
    """The tone of class ``k``: a major third (x1.25) above class ``k - 1``."""
    return 300.0 * 1.25**k


def class_colours(k: int) -> tuple[str, str]:
    return NAMES[k % len(NAMES)], NAMES[(k + 3) % len(NAMES)]


def class_captions(k: int) -> tuple[str, str]:
    """The best caption of class ``k`` and a paraphrase of it."""
    top, bottom = class_colours(k)
    hz = int(round(tone_hz(k)))
    pitch = "low" if k < 3 else "middle" if k < 6 else "high"
    first = f"class {k}: {top} above {bottom} with a {hz} hertz tone"
    second = f"class {k}: a {pitch} {hz} hz hum over {top} and {bottom} colours"
    return first, second


def class_image(k: int, rng: np.random.Generator, *, shift: int = 3, noise: float = 8.0):
    """Class ``k``'s picture: top half one colour, bottom half another, and a 4x4 block
    pattern (seeded by ``k``) that makes layouts of different classes near orthogonal
    under a coarse colour-layout embedder; shifted by up to ``shift`` px, plus noise."""
    top, bottom = class_colours(k)
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    img[: SIZE // 2] = PALETTE[top]
    img[SIZE // 2 :] = PALETTE[bottom]
    blocks = np.random.default_rng(1000 + k).random((4, 4)) < 0.5
    cell = SIZE // 4
    mask = np.kron(blocks, np.ones((cell, cell))).astype(bool)
    img[mask] = img[mask] * 0.35  # darken the class's blocks
    dy, dx = rng.integers(-shift, shift + 1, size=2)
    img = np.roll(img, (int(dy), int(dx)), axis=(0, 1))
    img += rng.normal(0.0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tone_wav(path: Path, hz: float, seconds: float, rng: np.random.Generator) -> None:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave_f = 0.5 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
    wave_f += rng.normal(0.0, 0.02, t.shape)
    pcm = (np.clip(wave_f, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def _encode_variant(
    folder: Path, k: int, v: int, audio: bool, seconds: float, seed: int
) -> tuple[Path, Path | None]:
    """One mp4 (and flac when ``audio``) of class ``k``; frames move by a pixel or two."""
    rng = np.random.default_rng([seed, k, v, int(audio)])
    stem = f"c{k}_v{v}_{'a' if audio else 'n'}"
    mp4 = folder / f"{stem}.mp4"
    flac = folder / f"{stem}.flac" if audio else None
    n = int(round(seconds * FPS))
    base = class_image(k, rng)
    frames = [
        np.roll(base, (int(i % 3) - 1, 0), axis=(0, 1)) for i in range(n)
    ]  # slight motion, same class layout
    sound: list[str] = []
    also: list[str] = []  # the flac: a second output of the same sound
    if audio:
        wav = folder / f"{stem}.wav"
        _tone_wav(wav, tone_hz(k), seconds, rng)
        sound = ["-i", str(wav)]
        also = ["-map", "1:a", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "flac", str(flac)]
    # One x264 thread a variant: the variants themselves run in a thread pool.
    encode_frames(
        mp4, frames, fps=FPS, width=SIZE, height=SIZE, audio=sound, threads=1,
        audio_bitrate="48k", also=also,
    )  # fmt: skip
    return mp4, flac


def _write_jpg(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92)
    path.write_bytes(buf.getvalue())
    return path


def make_class_shards(
    root: Path,
    *,
    n_classes: int = 8,
    per_class: int = 12,
    n_shards: int = 2,
    seconds: float = 2.0,
    seed: int = 0,
    with_audio_fraction: float = 1.0,
) -> dict:
    """Write ``n_classes * per_class`` clips into ``root/shards/{00000..}.tar`` and
    ``root/seeds.json`` (the embedder, as a mining run records it).

    Clips are shuffled across shards, so every shard holds every class. Per class,
    ``round(per_class * (1 - with_audio_fraction))`` clips have no audio (no flac,
    a silent mp4). Returns ``{"shards": [tar paths], "pattern": brace pattern,
    "classes": [best caption per class], "labels": {key: class}}``.
    """
    root = Path(root)
    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_silent = int(round(per_class * (1.0 - with_audio_fraction)))
    silent = {
        k: set(rng.choice(per_class, n_silent, replace=False).tolist()) for k in range(n_classes)
    }
    media = Path(tempfile.mkdtemp(prefix=".media-", dir=root))
    try:
        variants = _encode_variants(media, n_classes, per_class, n_silent, seconds, seed)
        labelled = [
            (k, _class_clip(media, k, i, variants, rng, audio=i not in silent[k], seconds=seconds))
            for k in range(n_classes)
            for i in range(per_class)
        ]
        records = [rec for _, rec in labelled]
        order = rng.permutation(len(records))
        tars = []
        for s in range(n_shards):
            write_shard(shard_dir, s, [records[j] for j in order[s::n_shards]])
            tars.append(str(shard_dir / f"{shard_name(s)}.tar"))
    finally:
        shutil.rmtree(media, ignore_errors=True)

    (root / "seeds.json").write_text(
        json.dumps({"embedder": "miners.embedders:pixel_embedder"}, indent=2) + "\n"
    )
    pattern = f"{shard_dir}/{{{shard_name(0)}..{shard_name(n_shards - 1)}}}.tar"
    return {
        "shards": tars,
        "pattern": pattern,
        "classes": [class_captions(k)[0] for k in range(n_classes)],
        "labels": {rec.key: k for k, rec in labelled},
    }


def _encode_variants(
    media: Path, n_classes: int, per_class: int, n_silent: int, seconds: float, seed: int
) -> dict[tuple[int, int, bool], tuple[Path, Path | None]]:
    """Every class's encoded variants, with sound and (when some clips are silent) without."""
    jobs = [
        (k, v, audio)
        for k in range(n_classes)
        for audio in (True, False)
        if (audio and n_silent < per_class) or (not audio and n_silent > 0)
        for v in range(min(VARIANTS, per_class))
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = pool.map(lambda j: _encode_variant(media, *j, seconds, seed), jobs)
        return dict(zip(jobs, done, strict=True))


def _class_clip(
    media: Path,
    k: int,
    i: int,
    variants: dict[tuple[int, int, bool], tuple[Path, Path | None]],
    rng: np.random.Generator,
    *,
    audio: bool,
    seconds: float,
) -> ClipRecord:
    """Clip ``i`` of class ``k``: one of the class's variants, its own jittered jpg and similarity."""
    first, second = class_captions(k)
    mp4, flac = variants[(k, i % VARIANTS, audio)]
    key = f"class{k:02d}_{i:04d}"
    jpg = _write_jpg(media / f"{key}.jpg", class_image(k, rng))
    sim = round(float(0.8 + 0.1 * rng.random()), 4)
    return ClipRecord(
        key=key,
        video=f"synthetic://class{k}/{i}.mp4",
        video_id=f"class{k:02d}-{i:04d}",
        start=0.0,
        end=seconds,
        match_time=seconds / 2,
        similarity=sim,
        captions=[
            Caption(f"seed{k}a", first, sim, seconds / 2),
            Caption(f"seed{k}b", second, sim - 0.05, seconds / 2),
        ],
        source={"width": SIZE, "height": SIZE, "fps": FPS, "has_audio": audio},
        mp4=str(mp4),
        flac=str(flac) if flac else None,
        jpg=str(jpg),
    )


def corrupt_copy(
    src: str | Path, dst: str | Path, *, bad_mp4: int = 0, bad_flac: int = 0
) -> dict[str, list[str]]:
    """Copy the tar ``src`` to ``dst`` with garbage in place of the mp4 of its first
    ``bad_mp4`` samples and the flac of the next ``bad_flac`` samples that have one.
    Returns the damaged keys: ``{"mp4": [...], "flac": [...]}``."""
    import tarfile

    from shards.reader import iter_samples

    damaged: dict[str, list[str]] = {"mp4": [], "flac": []}
    garbage = b"this is not a media file " * 40
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
        for sample in iter_samples(src):
            key = sample["__key__"]
            if len(damaged["mp4"]) < bad_mp4:
                sample["mp4"] = garbage
                damaged["mp4"].append(key)
            elif "flac" in sample and len(damaged["flac"]) < bad_flac:
                sample["flac"] = garbage
                damaged["flac"].append(key)
            for ext, value in sample.items():
                if ext == "__key__":
                    continue
                if ext == "json":
                    value = json.dumps(value).encode()
                elif isinstance(value, str):
                    value = value.encode()
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(value)
                out.addfile(info, io.BytesIO(value))
    return damaged
