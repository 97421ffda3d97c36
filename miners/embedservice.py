"""One embedder fed by every decoder: a thread per embedder that batches frames across videos.

Scan threads submit their frame batches (:meth:`EmbedService.submit`) and go
on decoding; the service thread combines what waits, from any number of
videos, into full batches of ``batch_size`` frames, embeds each batch once,
searches the seed index, and hands each submission its own hits through a
future. So the embedder is called by one thread only (torch's threads are not
oversubscribed by several callers), it sees full batches (a video's last,
partial batch rides with another video's frames), and decoding overlaps
embedding.

On CUDA, with an embedder that can take a uint8 tensor (:class:`OpenClipEmbedder`),
a batch goes through pinned host memory with an asynchronous copy, is
normalised on the device, and is searched there by a matrix product against
the seed matrix when that fits (:class:`miners.index.TorchSearch`); otherwise,
and for any plug-in embedder, the service calls ``embed_images`` and the
index's own (faiss) search.

A failure of the embedder or the search fails the submissions whose frames
were in that batch (:class:`EmbedError` from their futures), and only those.
The service is per process (a Dask worker gets its own) and its thread ends
after ``idle_exit`` seconds without work, to start again on the next submission.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miners.embedders import Embedder
from miners.index import SeedIndex, TorchSearch

log = logging.getLogger(__name__)

Hits = tuple[np.ndarray, np.ndarray, np.ndarray]  # (frame rows, seed rows, similarities)
LINGER = 0.05  # seconds a short batch waits for more frames before it is embedded as it is
MAX_QUEUED = 16  # submissions waiting; a submitter blocks beyond (each video keeps few in flight)
IDLE_EXIT = 30.0  # seconds without work before the service thread ends
GPU_SEARCH_SHARE = 0.25  # the seed matrix is searched on the GPU below this share of free memory


class EmbedError(RuntimeError):
    """The embedder or the search failed on a batch that held a submission's frames."""


@dataclass(eq=False)
class _Job:
    frames: np.ndarray  # (n, S, S, 3) uint8, any strides
    index: SeedIndex
    threshold: float
    future: Future = field(default_factory=Future)
    taken: int = 0  # rows handed to batches
    done: int = 0  # rows searched
    parts: list[Hits] = field(default_factory=list)


class EmbedService:
    """The embedding thread of one embedder; see the module's docstring."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        batch_size: int = 64,
        linger: float = LINGER,
        max_queued: int = MAX_QUEUED,
        idle_exit: float = IDLE_EXIT,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.embedder = embedder
        self.batch_size = batch_size
        self.linger = linger
        self.idle_exit = idle_exit
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._device = _device_path(embedder)
        self._pinned: Any = None  # torch uint8 host buffer of one batch, on CUDA
        self._gpu: weakref.WeakKeyDictionary[SeedIndex, TorchSearch | None] = (
            weakref.WeakKeyDictionary()
        )
        self.batches: list[int] = []  # frames of each embedded batch, the last 1000

    # ------------------------------------------------------------ submitters

    def submit(self, frames: np.ndarray, index: SeedIndex, threshold: float) -> Future:
        """Queue ``frames`` for embedding and search; the future gives ``(rows, seeds, sims)``
        with rows counted within ``frames``. ``frames`` must not change until then."""
        job = _Job(frames, index, float(threshold))
        if len(frames) == 0:
            job.future.set_result(_no_hits())
            return job.future
        while True:
            self._ensure_thread()
            try:
                self._queue.put(job, timeout=1.0)
                break
            except queue.Full:  # the thread is busy; looked at again, in case it died
                continue
        self._ensure_thread()  # it may have ended, idle, just before the put
        return job.future

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="capmine-embed", daemon=True)
                self._thread.start()

    def result(self, future: Future, poll: float = 5.0) -> Hits:
        """Wait for ``future``; raises :class:`EmbedError` on a failed batch, or when the
        service thread is gone with the submission unanswered."""
        while True:
            try:
                return future.result(timeout=poll)
            except TimeoutError:
                with self._lock:
                    gone = self._thread is None or not self._thread.is_alive()
                if gone and not future.done():
                    raise EmbedError("the embedding thread ended without an answer") from None

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        pending: deque[_Job] = deque()
        while self._gather(pending):
            pieces = self._take(pending)
            if pieces:
                self._process(pieces)

    def _gather(self, pending: deque[_Job]) -> bool:
        """Wait for work, then for more until a batch is full or nothing came for ``linger``;
        False when idle long enough to end."""
        if not pending:
            try:
                pending.append(self._queue.get(timeout=self.idle_exit))
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return False
                return True
        deadline = time.monotonic() + self.linger
        while sum(len(j.frames) - j.taken for j in pending) < self.batch_size:
            try:
                pending.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return True

    def _take(self, pending: deque[_Job]) -> list[tuple[_Job, int, int]]:
        """Up to ``batch_size`` rows from the waiting jobs, oldest first, splitting the last."""
        pieces, room = [], self.batch_size
        while pending and room:
            job = pending[0]
            if job.taken == 0 and not job.future.set_running_or_notify_cancel():
                pending.popleft()  # its video gave up (a decode error): not embedded
                continue
            n = min(room, len(job.frames) - job.taken)
            pieces.append((job, job.taken, job.taken + n))
            job.taken += n
            room -= n
            if job.taken == len(job.frames):
                pending.popleft()
        return pieces

    def _process(self, pieces: list[tuple[_Job, int, int]]) -> None:
        """Embed one batch, search it, and answer each job whose rows are all searched."""
        try:
            emb = self._embed([job.frames[a:b] for job, a, b in pieces])
            found = self._search(emb, pieces)
        except Exception as e:  # the batch's jobs fail with it; the service goes on
            log.warning("embedding a batch of %d submissions failed: %s", len(pieces), e)
            error = EmbedError(f"{type(e).__name__}: {e}")
            for job, _, _ in pieces:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.batches = [*self.batches[-999:], sum(b - a for _, a, b in pieces)]
        for (job, a, b), (rows, seeds, sims) in zip(pieces, found, strict=True):
            job.parts.append((rows + a, seeds, sims))
            job.done += b - a
            if job.done == len(job.frames) and not job.future.done():
                job.future.set_result(
                    tuple(np.concatenate(p) for p in zip(*job.parts, strict=True))
                )
                job.frames, job.parts = job.frames[:0], []

    def _embed(self, chunks: list[np.ndarray]) -> Any:
        """The batch's unit embeddings: a numpy array, or a CUDA tensor on the device path."""
        if self._device is None:
            return self.embedder.embed_images(np.concatenate(chunks))
        import torch

        n = sum(len(c) for c in chunks)
        if self._pinned is None or len(self._pinned) < n:
            shape = (max(n, self.batch_size), *chunks[0].shape[1:])
            self._pinned = torch.empty(shape, dtype=torch.uint8)
            if self._device.startswith("cuda"):  # page-locked: the copy to the GPU can overlap
                self._pinned = self._pinned.pin_memory()
        host, row = self._pinned.numpy(), 0
        for c in chunks:
            host[row : row + len(c)] = c
            row += len(c)
        # the copy is asynchronous; the buffer is reused only after this batch's
        # hits came back to the host, which waits for it
        return self.embedder.encode_uint8(self._pinned[:n])

    def _search(self, emb: Any, pieces: list[tuple[_Job, int, int]]) -> list[Hits]:
        """Each piece's hits, rows counted within the piece; one search per (index, threshold)."""
        groups: dict[tuple[int, float], list[int]] = {}
        for i, (job, _, _) in enumerate(pieces):
            groups.setdefault((id(job.index), job.threshold), []).append(i)
        starts = np.cumsum([0] + [b - a for _, a, b in pieces])
        found: list[Hits] = [_no_hits()] * len(pieces)
        for members in groups.values():
            job = pieces[members[0]][0]
            queries = emb
            if len(groups) > 1:  # a batch of several runs' frames: each searches its own seeds
                rows_of = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in members])
                queries = emb[rows_of if isinstance(emb, np.ndarray) else _on(emb, rows_of)]
            rows, seeds, sims = self._search_one(queries, job.index, job.threshold)
            local = np.concatenate([np.arange(starts[i + 1] - starts[i]) for i in members])
            owner = np.concatenate([np.full(starts[i + 1] - starts[i], i) for i in members])
            for i in members:
                mine = owner[rows] == i
                found[i] = (local[rows[mine]], seeds[mine], sims[mine])
        return found

    def _search_one(self, emb: Any, index: SeedIndex, threshold: float) -> Hits:
        if self._device is None:
            return index.search(emb, threshold)
        gpu = self._gpu_search(index)
        if gpu is None:
            return index.search(emb.float().cpu().numpy(), threshold)
        return gpu.search(emb, threshold)

    def _gpu_search(self, index: SeedIndex) -> TorchSearch | None:
        """The seed matrix on the device, when it fits; None: faiss searches on the host."""
        if index not in self._gpu:
            fits = TorchSearch.fits(index.embeddings, self._device, GPU_SEARCH_SHARE)
            self._gpu[index] = TorchSearch(index.embeddings, self._device) if fits else None
            if not fits:
                log.info("seed matrix too large for the GPU's free memory: faiss searches")
        return self._gpu[index]


def _no_hits() -> Hits:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, np.zeros(0, dtype=np.float32)


def _on(tensor: Any, rows: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(rows, device=tensor.device)


def _device_path(embedder: Embedder) -> str | None:
    """The CUDA device of an embedder that takes uint8 tensors there; None: plain numpy."""
    device = getattr(embedder, "device", None)
    if isinstance(device, str) and device.startswith("cuda") and hasattr(embedder, "encode_uint8"):
        return device
    return None


_services: dict[tuple[int, int], tuple[Embedder, EmbedService]] = {}
_services_lock = threading.Lock()


def embed_service(embedder: Embedder, batch_size: int = 64) -> EmbedService:
    """The process's service for ``embedder`` at ``batch_size`` (one embedding thread each)."""
    key = (id(embedder), batch_size)
    with _services_lock:
        held = _services.get(key)
        if held is None or held[0] is not embedder:
            if len(_services) >= 8:  # test embedders come and go; keep the newest few
                _services.pop(next(iter(_services)))
            held = _services[key] = (embedder, EmbedService(embedder, batch_size=batch_size))
        return held[1]
