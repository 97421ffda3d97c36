"""Footage of the planted set: each planned video's frames, drawn and encoded.

A camera window moves over the planted or distractor picture (on every other
plant a subject crosses it too: real motion, not a still under a camera); between them,
filler drifts: blob noise checked against the seeds, so that it matches none.
Sensor noise lies over every frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from miners.embedders import PixelEmbedder
from synth.encode import encode_frames, tone
from synth.scenes import Picture, camera_box
from synth.timeline import VideoPlan

FILLER_MAX_COS = 0.3  # a filler frame vs. any seed
NOISE_SIGMA = 4.0  # mild per-pixel sensor noise, grey levels
CRF = 26  # x264 quality: small files, shapes and colours intact
AUDIO_RATE = 44100  # Hz of the tone that names a video


def filler_texture(np_rng: np.random.Generator, width: int, height: int, margin: int) -> np.ndarray:
    """Coloured blob noise around mid grey, ``margin`` pixels larger than the frame on each side.

    Blobs are about 12 px, small against an 8x8 layout cell, and their colours
    average to grey, so a filler frame has no large colour layout to match.
    """
    w, h = width + 2 * margin, height + 2 * margin
    low = np_rng.normal(128.0, 55.0, size=(h // 12 + 2, w // 12 + 2, 3))
    small = Image.fromarray(np.clip(low, 0, 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def pick_filler(
    np_rng: np.random.Generator,
    width: int,
    height: int,
    margin: int,
    embedder: PixelEmbedder,
    seeds: np.ndarray,
) -> tuple[np.ndarray, float]:
    """A filler texture whose frames along its drift match no seed, and their worst cosine to one."""
    for _ in range(100):
        tex = filler_texture(np_rng, width, height, margin)
        frames = [tex[o : o + height, o : o + width] for o in _drift_offsets(margin)]
        score = float((embed_frames(frames, embedder) @ seeds.T).max())
        if score < FILLER_MAX_COS:
            return tex, score
    raise RuntimeError("no filler texture far enough from the seeds")


def _drift_offsets(margin: int) -> list[int]:
    """Where a filler's drift is checked: its ends and three points between."""
    return [round(2 * margin * k / 4) for k in range(5)]


def embed_frames(frames: list[np.ndarray], embedder: PixelEmbedder) -> np.ndarray:
    """Frames through the pipeline's preprocessing (shorter side, centre crop) into the embedder."""
    n = embedder.image_size
    out = []
    for frame in frames:
        image = Image.fromarray(frame)
        w, h = image.size
        k = min(w, h)
        box = ((w - k) / 2, (h - k) / 2, (w + k) / 2, (h + k) / 2)
        out.append(np.asarray(image.resize((n, n), Image.Resampling.BILINEAR, box=box)))
    return embedder.embed_images(np.stack(out))


def moving_subject(frame: np.ndarray, u: float, t: float, radius: float = 0.1) -> np.ndarray:
    """``frame`` with a pale disc crossing it left to right as ``u`` goes 0 to 1, bobbing
    up and down: something in the scene that moves, which no camera move explains."""
    h, w = frame.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    cx, cy = (0.15 + 0.7 * u) * w, h * (0.5 + 0.2 * math.sin(math.pi * t))
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= (radius * h) ** 2
    out = frame.copy()
    out[inside] = (250, 240, 200)
    return out


def render_frames(
    plan: VideoPlan,
    pictures: dict[str, Picture],
    fillers: list[np.ndarray],
    noise: np.ndarray,
    *,
    seconds: float,
    fps: float,
    width: int,
    height: int,
    margin: int,
) -> Iterator[np.ndarray]:
    """The video's frames in order: camera windows over pictures, drifting filler, plus sensor noise."""
    aspect = width / height
    filler_i = 0
    n = int(round(seconds * fps))
    seg_i = 0
    for i in range(n):
        t = i / fps
        while seg_i + 1 < len(plan.segments) and t >= plan.segments[seg_i].end:
            seg_i += 1
            filler_i += plan.segments[seg_i - 1].kind == "filler"
        seg = plan.segments[seg_i]
        u = (t - seg.start) / max(seg.end - seg.start, 1e-6)
        if seg.kind == "filler":
            tex = fillers[filler_i % len(fillers)]
            o = int(round(2 * margin * u))  # drifts diagonally across the texture
            frame = tex[o : o + height, o : o + width].astype(np.int16)
            frame += int(12 * math.sin(2 * math.pi * t / 7))  # a slow brightness pulse
        else:
            e = u * u * (3 - 2 * u)  # ease in and out, as a camera operator would
            z0, px0, py0, z1, px1, py1 = seg.camera
            z, px, py = z0 + (z1 - z0) * e, px0 + (px1 - px0) * e, py0 + (py1 - py0) * e
            scene = pictures[seg.ref].scene
            box = camera_box(scene.size, aspect, z, px, py, square=False)
            frame = np.asarray(
                scene.resize((width, height), Image.Resampling.BILINEAR, box=box), dtype=np.int16
            )
            if seg.subject:
                frame = moving_subject(frame, u, t)
        yield np.clip(frame + noise[i % len(noise)], 0, 255).astype(np.uint8)


def write_videos(
    videos_dir: Path,
    plans: list[VideoPlan],
    pictures: dict[str, Picture],
    np_rng: np.random.Generator,
    embedder: PixelEmbedder,
    seed_matrix: np.ndarray,
    *,
    seconds: float,
    fps: float,
    width: int,
    height: int,
) -> tuple[list[dict], float]:
    """Encode every planned video; its manifest rows, and the filler's worst cosine to a seed."""
    margin = max(8, int(4 * seconds))  # filler drift room, px: about 4 px/s over a whole video
    noise = np_rng.normal(0.0, NOISE_SIGMA, size=(8, height, width, 3)).astype(np.int16)
    rows, filler_max = [], -1.0
    for plan in plans:
        fillers = []
        for _ in range(sum(s.kind == "filler" for s in plan.segments)):
            tex, score = pick_filler(np_rng, width, height, margin, embedder, seed_matrix)
            fillers.append(tex)
            filler_max = max(filler_max, score)
        path = videos_dir / f"{plan.name}.mp4"
        frames = render_frames(
            plan,
            pictures,
            fillers,
            noise,
            seconds=seconds,
            fps=fps,
            width=width,
            height=height,
            margin=margin,
        )
        encode_video(
            path, frames, fps=fps, width=width, height=height, seconds=seconds, tone_hz=plan.tone_hz
        )
        rows.append({
            "video": str(path), "seconds": seconds, "audio": plan.tone_hz is not None, "tone_hz": plan.tone_hz,
            "segments": [{"kind": s.kind, "ref": s.ref, "start": s.start, "end": s.end} for s in plan.segments],
        })  # fmt: skip
    return rows, filler_max


def encode_video(
    path: Path,
    frames: Iterator[np.ndarray],
    *,
    fps: float,
    width: int,
    height: int,
    seconds: float,
    tone_hz: float | None,
) -> None:
    """Encode a planted-set video: H.264 at ``CRF`` and, given a tone, AAC audio of it."""
    sound = [] if tone_hz is None else tone(tone_hz, seconds=seconds, sample_rate=AUDIO_RATE)
    encode_frames(path, frames, fps=fps, width=width, height=height, audio=sound, crf=CRF)
