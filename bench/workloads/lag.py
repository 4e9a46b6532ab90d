"""Projection lag: how far the views trail the log, and what a read right after a create waits.

A create is acknowledged once its event is committed to the log; the projector (a thread or a
process, ``Config.projector``) builds the views from the log behind it, and a read waits until
the views reach the log head it observed when it began. Measured once per projector setting,
each on a fresh file after 64 untimed creates:

- *lag under load*: 64 callers create as fast as they can (``scale.creates_64`` creates). For
  each create, the time from its acknowledgement (``await manager.create(...)`` returning; its
  seq is ``checkpointd.consistency.answered_at`` read right after, in the same task) until
  ``manager.views_position`` reaches that seq. One follower task wakes at every advance of the
  views (``wait_for_views(position + 1)``) and settles every create the views have reached; a
  create whose seq the views already passed when its caller resumed counts 0. The row's ops/s
  are the creates/s of the load.
- *read after a create*: at 1 caller, creates alternating between a ``get_checkpoint(id)``
  timed right after the create (it waits for the views to reach the create) and one timed
  after ``wait_for_views(seq)`` (the views already caught up: the read's own cost); and the
  same from a 65th caller while the 64-caller load runs, where every read also waits for the
  views to reach the log head the others keep moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import tempfile
import time
from pathlib import Path

from bench.datasets import Datasets
from bench.report import Table
from bench.stores import ours, writer_session
from bench.timing import Figure, figure
from checkpointd import CheckpointManager, consistency
from checkpointd.errors import UnavailableError

WARMUP = 64
CALLERS = 64
ALONE_FIRST = 10**9  # the 1-caller creates' indexes: apart from the load's (0...)


class ReadAfterWrite:
    """Samples of a get timed right after its create, and of one with the views caught up."""

    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = manager
        self.right_after: list[int] = []
        self.caught_up: list[int] = []

    async def once(self, i: int) -> None:
        """Create checkpoint ``i``, then time a get of it (even ``i``: right after; odd: later)."""
        created = await self.manager.create(ours.item(i, writer_session(i)))
        if i % 2:
            await self.manager.wait_for_views(consistency.answered_at.get())
        begin = time.perf_counter_ns()
        assert await self.manager.get_checkpoint(created.id) is not None
        (self.caught_up if i % 2 else self.right_after).append(time.perf_counter_ns() - begin)


class Follower:
    """Settles each acknowledged create once the views reach its seq: its lag in ns."""

    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = manager
        self.pending: list[tuple[int, int]] = []  # heap of (seq, acknowledged at, ns)
        self.lags: list[int] = []
        self.done = False

    def acknowledged(self, seq: int, at_ns: int) -> None:
        if self.manager.views_position >= seq:
            self.lags.append(0)
        else:
            heapq.heappush(self.pending, (seq, at_ns))

    async def follow(self) -> None:
        """Wake at every advance of the views until the load is done and nothing is pending."""
        seen = self.manager.views_position
        while self.pending or not self.done:
            try:
                reached = await self.manager.wait_for_views(seen + 1)
            except UnavailableError:  # no create for a while (read_timeout): keep following
                continue
            now = time.perf_counter_ns()
            seen = max(reached, self.manager.views_position)
            while self.pending and self.pending[0][0] <= seen:
                self.lags.append(now - heapq.heappop(self.pending)[1])


async def under_load(manager: CheckpointManager, n: int) -> tuple[Figure, ReadAfterWrite]:
    """The lag of ``n`` creates from 64 callers, and a 65th caller's reads after its creates."""
    follower = Follower(manager)
    reader = ReadAfterWrite(manager)
    indexes = iter(range(n))
    loaded = False

    async def caller() -> None:
        for i in indexes:
            await manager.create(ours.item(i, writer_session(i)))
            acknowledged = time.perf_counter_ns()
            follower.acknowledged(consistency.answered_at.get(), acknowledged)

    async def read_while_loaded() -> None:
        for i in itertools.count(n):
            if loaded:
                return
            await reader.once(i)

    following = asyncio.create_task(follower.follow())
    reading = asyncio.create_task(read_while_loaded())
    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    seconds = time.perf_counter() - start
    loaded = True
    follower.done = True
    if follower.pending:
        await following
    else:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    await reading
    return figure(follower.lags, seconds, CALLERS), reader


async def alone(manager: CheckpointManager, n: int, first: int) -> ReadAfterWrite:
    """``n`` creates, each followed by a timed get, from one caller (checkpoints ``first``...)."""
    reader = ReadAfterWrite(manager)
    for i in range(first, first + n):
        await reader.once(i)
    return reader


def reads(samples: list[int]) -> Figure | None:
    """One caller's gets: their count, their summed time, and their quantiles (None: no get)."""
    return figure(samples, sum(samples) / 1e9) if samples else None


async def run(datasets: Datasets) -> list[Table]:
    scale = datasets.scale
    lag = Table(
        f"projection lag: acknowledgement to the views, {CALLERS} callers creating", key="lag"
    )
    lag.label = "projector"
    lag.unit = "creates/s"
    after = Table("read right after a create: get_checkpoint(id)", key="read-after-write")
    after.label = "read"
    for projector in ours.PROJECTORS:
        with tempfile.TemporaryDirectory(prefix="bench-lag-") as tmp:
            async with ours.open_store(Path(tmp) / "lag.db", projector=projector) as store:
                manager = store.manager
                for i in range(WARMUP):
                    await store.create(-1 - i)
                alone_reads = await alone(manager, scale.creates_1, ALONE_FIRST)
                await manager.wait_for_views(manager.log_head)
                load, loaded_reads = await under_load(manager, scale.creates_64)
        lag.add(f"projector={projector}", load)
        for where, reader in (("1 caller", alone_reads), (f"{CALLERS} creating", loaded_reads)):
            first = reads(reader.right_after)
            later = reads(reader.caught_up)
            extra = "-"
            if first and later and first.p50_ms is not None and later.p50_ms is not None:
                extra = f"{first.p50_ms - later.p50_ms:+.3f}"
            after.add(
                f"right after its create, projector={projector}, {where}",
                first,
                f"p50 {extra} ms over the views caught up",
                projector=projector,
                load=where,
                right_after=True,
            )
            after.add(
                f"views caught up, projector={projector}, {where}",
                later,
                "after wait_for_views(the create's seq)",
                projector=projector,
                load=where,
                right_after=False,
            )
    lag.notes.append(
        "p50/p99: from a create's acknowledgement until the views hold it; creates/s: the load's;"
        " ratio: none"
    )
    after.notes.append(
        "ops/s: 1 / mean get time; ratio: none. Under load every read waits for the views to"
        " reach the log head it observed, which the creating callers keep moving"
    )
    lag.reference = after.reference = ""  # no row is the reference: no ratio column
    for table in (lag, after):
        print(table.render(), flush=True)
    return [lag, after]
