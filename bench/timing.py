"""Timing: latency samples with ``perf_counter_ns``, quantiles, and drivers for N callers.

A *figure* is one timed run of one operation on one store: how many operations, how long, and
the p50/p99 of the per-operation latencies (nearest rank over the sorted samples). Async
operations are driven by ``concurrency`` coroutines on one event loop; synchronous ones (the
eventsourcing library, bare ``sqlite3``) by the calling thread at 1 and by a thread pool of
``concurrency`` threads otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# An operation is called with the index of the call (0, 1, ...), so it can pick its own input.
Op = Callable[[int], Any]


@dataclass(frozen=True, slots=True)
class Figure:
    """One timed run: ``ops`` operations in ``seconds`` of wall time, latency quantiles in ms."""

    ops: int
    seconds: float
    p50_ms: float | None  # None: one operation timed as a whole (a replay, a load)
    p99_ms: float | None
    concurrency: int = 1

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "seconds": self.seconds,
            "per_second": self.per_second,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "concurrency": self.concurrency,
        }


def quantile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank quantile of ascending samples."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def figure(samples_ns: list[int], seconds: float, concurrency: int = 1) -> Figure:
    ordered = sorted(samples_ns)
    return Figure(
        ops=len(ordered),
        seconds=seconds,
        p50_ms=quantile(ordered, 0.50) / 1e6,
        p99_ms=quantile(ordered, 0.99) / 1e6,
        concurrency=concurrency,
    )


async def drive(op: Op, n: int, concurrency: int = 1, warmup: int = 0) -> Figure:
    """Call ``op`` ``n`` times from ``concurrency`` callers after ``warmup`` untimed calls.

    Warm-up calls get negative indexes. An ``async def`` op runs on this event loop; any other
    callable runs in threads (``concurrency`` threads of a ``ThreadPoolExecutor``; the calling
    thread at 1), so a synchronous library is not charged a thread hop per call at 1.
    """
    if inspect.iscoroutinefunction(op):
        for i in range(warmup):
            await op(-1 - i)
        return await _drive_async(op, n, concurrency)
    for i in range(warmup):
        op(-1 - i)
    if concurrency == 1:
        return _drive_here(op, n)
    return await asyncio.to_thread(_drive_threads, op, n, concurrency)


async def _drive_async(op: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> Figure:
    samples: list[int] = []
    indexes = iter(range(n))

    async def caller() -> None:
        for i in indexes:
            begin = time.perf_counter_ns()
            await op(i)
            samples.append(time.perf_counter_ns() - begin)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return figure(samples, time.perf_counter() - start, concurrency)


def _drive_here(op: Op, n: int) -> Figure:
    samples = []
    start = time.perf_counter()
    for i in range(n):
        begin = time.perf_counter_ns()
        op(i)
        samples.append(time.perf_counter_ns() - begin)
    return figure(samples, time.perf_counter() - start)


def _drive_threads(op: Op, n: int, concurrency: int) -> Figure:
    samples: list[int] = []
    lock = threading.Lock()
    indexes = iter(range(n))

    def caller() -> None:
        mine = []
        while True:
            with lock:
                i = next(indexes, None)
            if i is None:
                break
            begin = time.perf_counter_ns()
            op(i)
            mine.append(time.perf_counter_ns() - begin)
        with lock:
            samples.extend(mine)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(caller) for _ in range(concurrency)]:
            future.result()
    return figure(samples, time.perf_counter() - start, concurrency)
