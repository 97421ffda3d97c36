"""Bounded streaming helpers of the trainer's caches: chunks of an iterator, and an
in-order ``pool.map`` that reads only a few items ahead (a shard is never all in memory)."""

from __future__ import annotations

import tarfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor


def chunks(items: Iterator, n: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def ordered_map(pool: ThreadPoolExecutor, fn, items, ahead: int) -> Iterator:
    """``pool.map`` that reads at most ``ahead`` items in advance (Executor.map would
    pull the whole tar into memory at once)."""
    window: deque = deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= ahead:
                yield window.popleft().result()
    except (tarfile.TarError, OSError):  # a tar that breaks off: finish what is in flight
        while window:
            yield window.popleft().result()
        raise
    while window:
        yield window.popleft().result()
