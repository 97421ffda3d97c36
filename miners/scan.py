"""One video scanned: fetched, its frames sampled and embedded, its seed candidates found.

:func:`scan_video` does the work for one video and returns a :class:`ScanResult`;
a video that cannot be fetched or decoded is a failed result, never an
exception. Where results are kept, and when a kept one is reused, is the run
folder's business (:mod:`runs.stages`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from media import MediaError
from media.cuts import detect_cuts, shot_at
from media.probe import probe
from miners.embedders import Embedder
from miners.embedservice import EmbedError, EmbedService, embed_service
from miners.fetch import SOCKET_TIMEOUT, Fetched, FetchError, fetch_video, remove_download
from miners.frames import iter_frames
from miners.index import SeedIndex
from miners.matching import Candidate, HitAccumulator
from miners.videos import VideoInput
from shards.record import STATUS_FAILED, STATUS_OK

IN_FLIGHT = 2  # a video's batches being embedded while it decodes the next


@dataclass
class ScanResult:
    """What one video's scan found; the row of ``videos.parquet`` and the input of the clip plan."""

    video: str  # path or URL, as listed
    video_id: str
    meta: dict[str, Any] = field(default_factory=dict)  # the list's extra columns
    status: str = STATUS_OK
    error: str | None = None
    duration: float | None = None  # seconds
    n_frames: int = 0  # frames sampled
    n_matches: int = 0  # (frame, seed) pairs at or above the threshold
    candidates: list[Candidate] = field(default_factory=list)  # best segment per seed, best first
    local_path: str | None = None  # where the video lies for cutting (None once removed)
    downloaded: bool = False  # True: a cache copy capmine may delete
    source: dict[str, Any] = field(default_factory=dict)  # width, height, fps, has_audio
    timings: dict[str, float] = field(default_factory=dict)  # fetch, decode, embed, shots seconds
    settings: dict[str, Any] | None = None  # what made it: a scan with other settings is redone
    seconds: float | None = None  # wall time of the scan
    # whole frames of the candidates' peaks by time, shorter side at the embedder's size;
    # held in memory only (the run folder writes them as stills), never saved with the scan
    peak_frames: dict[float, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def failed(cls, video: VideoInput, error: str) -> ScanResult:
        """The result of a video whose scan failed: still a row, with its error."""
        return cls(video=video.url, video_id=video.video_id, meta=dict(video.meta),
                   status=STATUS_FAILED, error=error)  # fmt: skip

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(dataclasses.replace(self, peak_frames={}))
        del d["peak_frames"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanResult:
        d = dict(d)
        d["candidates"] = [Candidate(**c) for c in d.get("candidates", [])]
        return cls(**d)


def scan_video(
    video: VideoInput,
    *,
    index: SeedIndex,
    embedder: Embedder,
    threshold: float,
    fps: float = 1.0,
    batch_size: int = 64,
    cache_dir: Path,
    fetch_timeout: float = 600.0,
    max_height: int = 360,
    shot_context: float = 10.0,
    max_bytes: int | None = 2_000_000_000,
    sampler: str = "exact",
    hwaccel: str = "none",
    decode_threads: int = 0,
) -> ScanResult:
    """Fetch ``video``, sample and embed its frames at ``fps``, find its seed candidates,
    and the shot holding each candidate's peak.

    Shots are looked for ``shot_context`` seconds (the longest clip) either side
    of each matching run, so a window placed from them never reaches past a cut
    (:func:`miners.matching.place_window`). A video whose shots cannot be read
    fails: no clip of it goes on with its scene unknown.

    ``fetch_timeout`` bounds each download attempt as a whole (seconds), and
    ``max_bytes`` its size, both while it runs (:func:`miners.fetch.fetch_video`).

    ``sampler`` and ``hwaccel`` choose how frames are decoded, and
    ``decode_threads`` how many threads ffmpeg's decoder takes (0: ffmpeg
    decides; see :func:`miners.frames.iter_frames`).

    A download that matched nothing is deleted at once (there is nothing to
    cut from it); one that matched is kept for cutting.

    Frames are embedded and searched by the process's embedding service for
    ``embedder`` (:mod:`miners.embedservice`), shared with every video scanned
    at once; a batch the embedder fails on fails this video (``embed: ...``).
    ``result.peak_frames`` holds the whole frame of each candidate's peak, for
    its still (:meth:`runs.folder.RunFolder.save_peak_stills`).
    """
    result = ScanResult(video=video.url, video_id=video.video_id, meta=dict(video.meta),
                        timings={"fetch": 0.0, "decode": 0.0, "embed": 0.0, "shots": 0.0})  # fmt: skip
    t0 = time.monotonic()
    fetched = None
    try:
        fetched = fetch_video(
            video.url, cache_dir, timeout=min(fetch_timeout, SOCKET_TIMEOUT),
            wall_timeout=fetch_timeout, max_bytes=max_bytes, max_height=max_height,
        )  # fmt: skip
        result.timings["fetch"] = time.monotonic() - t0
        result.local_path, result.downloaded = str(fetched.path), fetched.downloaded
        _describe(result, fetched)
        _match_frames(result, fetched.path, index, embedder, threshold, fps, batch_size,
                      sampler=sampler, hwaccel=hwaccel, threads=decode_threads)  # fmt: skip
        result.timings["decode"] = time.monotonic() - t0 - result.timings["fetch"]
        result.timings["decode"] -= result.timings["embed"]
        ts = time.monotonic()
        _find_shots(result, fetched.path, shot_context)
        result.timings["shots"] = time.monotonic() - ts
    except FetchError as e:
        result.status, result.error = STATUS_FAILED, f"fetch {e}"
    except ShotError as e:
        result.status, result.error = STATUS_FAILED, f"shots: {e}"
        result.candidates = []
    except MediaError as e:
        result.status, result.error = STATUS_FAILED, f"decode: {e}"
    except EmbedError as e:
        result.status, result.error = STATUS_FAILED, f"embed: {e}"
    if not result.ok:
        result.candidates, result.peak_frames = [], {}
    if fetched is not None and fetched.downloaded and not result.candidates:
        remove_download(fetched)  # nothing to cut from it
        result.local_path = None
    result.seconds = time.monotonic() - t0
    return result


def _describe(result: ScanResult, fetched: Fetched) -> None:
    """Duration and stream facts of the fetched file, from ffprobe."""
    info = probe(fetched.path)
    result.duration = info.duration
    result.source = {"width": info.width, "height": info.height, "fps": info.fps,
                     "has_audio": info.has_audio}  # fmt: skip


def _match_frames(
    result: ScanResult,
    path: Path,
    index: SeedIndex,
    embedder: Embedder,
    threshold: float,
    fps: float,
    batch_size: int,
    *,
    sampler: str = "exact",
    hwaccel: str = "none",
    threads: int = 0,
) -> None:
    """Sample every frame batch and hand it to the process's embedding service
    (:mod:`miners.embedservice`), keeping on decoding while up to ``IN_FLIGHT``
    batches are embedded; hits, in frame order, into candidates, counts and the
    peaks' whole frames in ``result``."""
    service = embed_service(embedder, batch_size)
    acc, peaks, times = HitAccumulator(), PeakFrames(), []
    pending: deque[tuple[int, np.ndarray, Future]] = deque()
    t_wait = 0.0
    try:
        for batch_times, frames, wholes in iter_frames(
            path,
            fps=fps,
            size=embedder.image_size,
            batch_size=batch_size,
            whole=True,
            sampler=sampler,
            hwaccel=hwaccel,
            threads=threads,
        ):
            pending.append((len(times), wholes, service.submit(frames, index, threshold)))
            times.extend(batch_times.tolist())
            while len(pending) > IN_FLIGHT:
                t_wait += _collect(service, pending.popleft(), acc, peaks, times)
        while pending:
            t_wait += _collect(service, pending.popleft(), acc, peaks, times)
    finally:
        for _, _, future in pending:  # a decode error: what is still queued is not embedded
            future.cancel()
    result.n_frames, result.n_matches = len(times), acc.n_hits
    result.candidates = acc.candidates(result.video_id)
    result.peak_frames = peaks.frames(times)
    result.timings["embed"] = t_wait


def _collect(
    service: EmbedService,
    item: tuple[int, np.ndarray, Future],
    acc: HitAccumulator,
    peaks: PeakFrames,
    times: list[float],
) -> float:
    """Wait for one batch's hits and add them; returns the seconds waited."""
    base, wholes, future = item
    t0 = time.monotonic()
    rows, seeds, sims = service.result(future)
    waited = time.monotonic() - t0
    acc.add(rows + base, times, seeds, sims)
    peaks.offer(rows + base, seeds, sims, lambda f: wholes[f - base])
    return waited


class PeakFrames:
    """The whole frame of each seed's best hit so far: the highest similarity, the
    earliest frame on a tie (as :meth:`HitAccumulator.candidates` picks the peak).

    A frame is held once however many seeds peak on it, and dropped when no
    seed does any more: at most one frame per matched seed, whatever the
    video's length.
    """

    def __init__(self) -> None:
        self._best: dict[int, tuple[float, int]] = {}  # seed row -> (similarity, frame number)
        self._frames: dict[int, np.ndarray] = {}  # frame number -> whole frame
        self._users: dict[int, int] = {}  # frame number -> seeds peaking on it

    def offer(self, frame_index: np.ndarray, seed_rows: np.ndarray, sims: np.ndarray,
              frame_of: Callable[[int], np.ndarray]) -> None:  # fmt: skip
        """``frame_index[i]`` matched ``seed_rows[i]`` at ``sims[i]``; ``frame_of(f)`` is frame f."""
        for f, s, v in zip(frame_index.tolist(), seed_rows.tolist(), sims.tolist(), strict=True):
            best = self._best.get(s)
            if best is not None and (v < best[0] or (v == best[0] and f >= best[1])):
                continue
            if best is not None:
                self._release(best[1])
            self._best[s] = (v, f)
            self._users[f] = self._users.get(f, 0) + 1
            if f not in self._frames:
                self._frames[f] = frame_of(f).copy()  # not a view: the batch can go

    def _release(self, f: int) -> None:
        self._users[f] -= 1
        if not self._users[f]:
            del self._users[f], self._frames[f]

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self, times: list[float]) -> dict[float, np.ndarray]:
        """Each held frame by its time (a frame without a time is left out)."""
        return {times[f]: frame for f, frame in self._frames.items() if not math.isnan(times[f])}


class ShotError(MediaError):
    """The cuts around a match could not be read."""


def _find_shots(result: ScanResult, path: Path, context: float) -> None:
    """Give each candidate the shot holding its peak: hard cuts are looked for in
    ``context`` seconds around its matching run (overlapping spans decoded once)."""
    if not result.candidates:
        return
    end_of_video = result.duration or max(c.seg_end for c in result.candidates) + context
    spans: list[list[float]] = []
    for c in sorted(result.candidates, key=lambda c: c.seg_start):
        a, b = max(0.0, c.seg_start - context), min(end_of_video, c.seg_end + context)
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    cuts: list[tuple[float, float, list[float]]] = []
    for a, b in spans:
        try:
            cuts.append((a, b, detect_cuts(path, a, b)))
        except MediaError as e:
            raise ShotError(f"{path} [{a:.2f}, {b:.2f}] s: {e}") from e
    placed = []
    for c in result.candidates:
        a, b, found = next(s for s in cuts if s[0] <= c.peak_time <= s[1])
        shot = shot_at(c.peak_time, found, a, b)
        placed.append(dataclasses.replace(c, shot_start=shot[0], shot_end=shot[1]))
    result.candidates = placed
