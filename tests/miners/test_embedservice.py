"""The embedding service: frames of many videos in shared batches, the same answers as
each video embedded alone, failures kept to the videos they touched.

Videos are painted one colour a second from a small palette; the test embedder
says which palette colour a frame shows (a one-hot row), so a seed matches
exactly the seconds painted its colour, every one at similarity 1.0.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from miners.embedservice import EmbedError, EmbedService, embed_service
from miners.frames import iter_frames
from miners.index import SeedIndex, TorchSearch
from miners.matching import HitAccumulator
from miners.scan import PeakFrames, scan_video
from miners.videos import VideoInput
from synth.testmedia import write_video

PALETTE = np.array(
    [[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [128, 128, 128]],
    dtype=np.float32,
)
POISON = 5  # the grey: a frame of it makes the failing embedder raise


class PaletteEmbedder:
    """One-hot of the palette colour nearest the frame's mean: exact ties, no model."""

    image_size = 16
    dim = len(PALETTE)

    def __init__(self, fail_on_poison: bool = False):
        self.fail_on_poison = fail_on_poison
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def classes(self, images: np.ndarray) -> np.ndarray:
        means = np.asarray(images, np.float32).reshape(len(images), -1, 3).mean(axis=1)
        return np.argmin(((means[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        assert images.shape[1:] == (16, 16, 3)
        self.calls.append(len(images))
        self.threads.add(threading.current_thread().name)
        k = self.classes(images)
        if self.fail_on_poison and (k == POISON).any():
            raise RuntimeError("poisoned frame")
        return np.eye(self.dim, dtype=np.float32)[k]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), self.dim), np.float32)


def _painted(path: Path, colours: list[int]) -> Path:
    """Second ``s`` painted ``PALETTE[colours[s]]``, 48x32 at 5 fps."""
    return write_video(path, lambda i, t: np.broadcast_to(
        PALETTE[colours[int(t)]].astype(np.uint8), (32, 48, 3)).copy(),
        seconds=len(colours), fps=5, width=48, height=32, tone_hz=None)  # fmt: skip


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service")
    garbage = root / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(20_000))
    return {
        "a": _painted(root / "a.mp4", [0, 0, 1, 2, 1, 3, 3]),  # 7 frames
        "b": _painted(root / "b.mp4", [2, 2, 2, 4, 0]),  # 5
        "c": _painted(root / "c.mp4", [4, 1, 1, 0, 0, 0, 4, 4, 2]),  # 9
        "poisoned": _painted(root / "poisoned.mp4", [1, 1, 5, 1]),
        "garbage": garbage,
    }


SEEDS = SeedIndex(np.eye(len(PALETTE), dtype=np.float32)[[0, 1, 2, 4]])  # not 3 (yellow)


def _alone(path: Path, embedder: PaletteEmbedder, batch_size: int):
    """The scan's answer as it was computed before the service: batch by batch, in order."""
    acc, times = HitAccumulator(), []
    for t, frames in iter_frames(path, fps=1, size=16, batch_size=batch_size):
        rows, seeds, sims = SEEDS.search(embedder.embed_images(frames), 0.5)
        base = len(times)
        times.extend(t.tolist())
        acc.add(rows + base, times, seeds, sims)
    return acc.candidates(path.stem)


def _scan(path: Path, embedder, batch_size: int, tmp_path: Path):
    video = VideoInput(url=str(path), video_id=path.stem)
    return scan_video(video, index=SEEDS, embedder=embedder, threshold=0.5, fps=1.0,
                      batch_size=batch_size, cache_dir=tmp_path, shot_context=2.0)  # fmt: skip


def test_videos_scanned_at_once_give_what_each_gives_alone(videos, tmp_path) -> None:
    embedder = PaletteEmbedder()
    names = ["a", "b", "c", "a", "c", "b"]
    with ThreadPoolExecutor(6) as pool:
        scans = list(pool.map(lambda n: _scan(videos[n], embedder, 4, tmp_path), names))
    for name, scan in zip(names, scans, strict=True):
        assert scan.ok, scan.error
        want = _alone(videos[name], PaletteEmbedder(), 4)
        got = [c.__class__(**{**c.to_dict(), "shot_start": None, "shot_end": None})
               for c in scan.candidates]  # fmt: skip
        assert got == want
        assert scan.n_frames == {"a": 7, "b": 5, "c": 9}[name]
    assert embedder.threads == {"capmine-embed"}  # one thread embeds for every scan
    assert sum(embedder.calls) == 2 * (7 + 5 + 9)


def test_partial_batches_of_several_videos_share_one_batch() -> None:
    embedder = PaletteEmbedder()
    service = EmbedService(embedder, batch_size=8, linger=2.0)
    frames = [np.broadcast_to(PALETTE[k].astype(np.uint8), (3, 16, 16, 3)) for k in (0, 1, 2)]
    futures = [service.submit(f, SEEDS, 0.5) for f in frames]
    answers = [service.result(f) for f in futures]
    assert embedder.calls == [8, 1]  # 3 + 3 + 2 of the third, then its last frame
    for k, (rows, seeds, sims) in zip((0, 1, 2), answers, strict=True):
        assert rows.tolist() == [0, 1, 2]
        assert seeds.tolist() == [k] * 3 and sims.tolist() == [1.0] * 3


def test_a_failing_batch_fails_only_its_submissions() -> None:
    embedder = PaletteEmbedder(fail_on_poison=True)
    service = EmbedService(embedder, batch_size=4, linger=0.0)
    good = np.broadcast_to(PALETTE[0].astype(np.uint8), (4, 16, 16, 3))
    bad = good.copy()
    bad[2] = PALETTE[POISON]
    futures = [service.submit(f, SEEDS, 0.5) for f in (good, bad, good)]
    assert service.result(futures[0])[1].tolist() == [0] * 4
    with pytest.raises(EmbedError, match="poisoned frame"):
        service.result(futures[1])
    assert service.result(futures[2])[1].tolist() == [0] * 4


@pytest.mark.timeout(120)
def test_a_failed_embed_or_decode_fails_one_row_and_the_others_go_on(videos, tmp_path) -> None:
    embedder = PaletteEmbedder(fail_on_poison=True)
    names = ["a", "poisoned", "garbage", "c", "b"]
    with ThreadPoolExecutor(5) as pool:
        scans = dict(zip(names, pool.map(lambda n: _scan(videos[n], embedder, 1, tmp_path), names),
                         strict=True))  # fmt: skip
    assert not scans["poisoned"].ok and scans["poisoned"].error.startswith("embed: ")
    assert "poisoned frame" in scans["poisoned"].error and not scans["poisoned"].candidates
    assert not scans["garbage"].ok and scans["garbage"].error.startswith(("decode", "fetch"))
    for name in ("a", "c", "b"):
        assert scans[name].ok, scans[name].error
        got = [(c.seed_row, c.peak_time, c.n_frames) for c in scans[name].candidates]
        want = [(c.seed_row, c.peak_time, c.n_frames)
                for c in _alone(videos[name], PaletteEmbedder(), 1)]  # fmt: skip
        assert got == want


def test_one_service_per_embedder_and_batch_size() -> None:
    e = PaletteEmbedder()
    assert embed_service(e, 8) is embed_service(e, 8)
    assert embed_service(e, 8) is not embed_service(e, 4)
    assert embed_service(PaletteEmbedder(), 8) is not embed_service(e, 8)


def test_the_service_thread_ends_when_idle_and_starts_again() -> None:
    service = EmbedService(PaletteEmbedder(), batch_size=2, linger=0.0, idle_exit=0.05)
    one = np.broadcast_to(PALETTE[1].astype(np.uint8), (1, 16, 16, 3))
    assert service.result(service.submit(one, SEEDS, 0.5))[1].tolist() == [1]
    for _ in range(100):
        if service._thread is None:
            break
        threading.Event().wait(0.02)
    assert service._thread is None
    assert service.result(service.submit(one, SEEDS, 0.5))[1].tolist() == [1]


# ---------------------------------------------------------------- peaks


def test_peak_frames_pick_the_candidates_peaks_and_hold_one_frame_a_seed() -> None:
    """Random hits with many ties: the kept frames are exactly the candidates' peak times."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        n_frames, n_seeds = 60, 5
        times = [float(t) for t in np.arange(n_frames)]
        acc, peaks = HitAccumulator(), PeakFrames()
        for base in range(0, n_frames, 7):
            n = min(7, n_frames - base)
            hit = rng.random((n, n_seeds)) < 0.4
            rows, seeds = np.nonzero(hit)
            sims = rng.choice(np.float32([0.7, 0.8, 0.9]), len(rows))
            acc.add(rows + base, times, seeds, sims)
            peaks.offer(rows + base, seeds, sims, lambda f: np.full((2, 3, 3), f, np.uint8))
            assert len(peaks) <= n_seeds
        cands = acc.candidates("v")
        kept = peaks.frames(times)
        assert set(kept) == {c.peak_time for c in cands}
        assert all(frame[0, 0, 0] == int(t) for t, frame in kept.items())


def test_a_scan_keeps_each_peak_whole_and_the_earliest_of_equal_frames(videos, tmp_path) -> None:
    """Video c: colour 4 at 0 s and again at 6-7 s; colour 0 at 3-5 s. All sims are 1.0,
    so each peak is the seed's first matching second."""
    scan = _scan(videos["c"], PaletteEmbedder(), 2, tmp_path)
    peaks = {c.seed_row: c.peak_time for c in scan.candidates}
    assert peaks == pytest.approx({3: 0.0, 1: 1.0, 0: 3.0, 2: 8.0})
    assert set(scan.peak_frames) == set(peaks.values())
    whole = {float(t): w for ts, _, ws in iter_frames(videos["c"], fps=1, size=16, whole=True)
             for t, w in zip(ts, ws, strict=True)}  # fmt: skip
    for t, frame in scan.peak_frames.items():
        assert frame.shape == (16, 24, 3)  # 48x32 with its shorter side at 16: the whole frame
        assert np.array_equal(frame, whole[t])
    assert "peak_frames" not in scan.to_dict()


# ---------------------------------------------------------------- search on the device


def test_torch_search_finds_what_faiss_finds() -> None:
    rng = np.random.default_rng(5)
    seeds = rng.normal(size=(300, 32)).astype(np.float32)
    seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
    queries = np.concatenate([seeds[:40] + 0.3 * rng.normal(size=(40, 32)),
                              rng.normal(size=(60, 32))]).astype(np.float32)  # fmt: skip
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    all_sims = queries @ seeds.T
    # a threshold in a gap of the similarities, so float rounding cannot move a pair across it
    s = np.sort(all_sims.ravel())
    near = s[(s > 0.35) & (s < 0.45)]
    gaps = np.diff(near)
    threshold = float(near[np.argmax(gaps)] + gaps.max() / 2)
    assert gaps.max() > 1e-4
    want = SeedIndex(seeds, kind="flat").search(queries, threshold)
    for chunk in (TorchSearch.CHUNK, 64):  # whole, and in pieces of the seed matrix
        search = TorchSearch(seeds, "cpu")
        search.CHUNK = chunk
        got = search.search(queries, threshold)
        assert len(want[0]) > 20
        order = np.lexsort((want[1], want[0]))
        assert np.array_equal(got[0], want[0][order]) and np.array_equal(got[1], want[1][order])
        np.testing.assert_allclose(got[2], want[2][order], rtol=1e-5)
    empty = TorchSearch(seeds, "cpu").search(queries[:0], threshold)
    assert [len(a) for a in empty] == [0, 0, 0]


class TensorPaletteEmbedder(PaletteEmbedder):
    """The palette embedder's answers through the device path's entry, on CPU tensors."""

    device = "cpu"

    def encode_uint8(self, images):
        import torch

        assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8
        return torch.from_numpy(self.embed_images(images.numpy()))


def test_the_device_path_gives_the_numpy_paths_answers(videos, tmp_path) -> None:
    """Pinned-buffer batches, uint8 tensors and the matrix-product search (on CPU here)
    find what embed_images and faiss find."""
    embedder = TensorPaletteEmbedder()
    service = embed_service(embedder, 4)
    service._device = "cpu"  # as on CUDA: tensors in, the seed matrix searched by torch
    names = ["a", "b", "c"]
    with ThreadPoolExecutor(3) as pool:
        scans = list(pool.map(lambda n: _scan(videos[n], embedder, 4, tmp_path), names))
    assert list(service._gpu) == [SEEDS] and isinstance(service._gpu[SEEDS], TorchSearch)
    for name, scan in zip(names, scans, strict=True):
        assert scan.ok, scan.error
        got = [(c.seed_row, c.peak_time, c.similarity, c.n_frames) for c in scan.candidates]
        want = [(c.seed_row, c.peak_time, c.similarity, c.n_frames)
                for c in _alone(videos[name], PaletteEmbedder(), 4)]  # fmt: skip
        assert got == want


class DyingEmbedder(PaletteEmbedder):
    """Ends the thread that calls it the first time (SystemExit is not an Exception)."""

    died = False

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        if not self.died:
            self.died = True
            raise SystemExit("gone")
        return super().embed_images(images)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_service_thread_answers_with_an_error_and_is_started_again() -> None:
    service = EmbedService(DyingEmbedder(), batch_size=2, linger=0.0)
    one = np.broadcast_to(PALETTE[2].astype(np.uint8), (1, 16, 16, 3))
    with pytest.raises(EmbedError, match="ended without an answer"):
        service.result(service.submit(one, SEEDS, 0.5), poll=0.1)
    assert service.result(service.submit(one, SEEDS, 0.5))[1].tolist() == [2]
