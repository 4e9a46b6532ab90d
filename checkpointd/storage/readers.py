"""Reader connections: a few aiosqlite WAL connections that never block the writer.

Each opens the views file with the log attached as ``log``: unqualified names resolve to the
views first, so a query reads view tables (checkpoints, FTS, stats, sessions, lineage) and log
tables (events, blobs, idempotency, meta) alike, and joins them. Before a query that reads the
views, the pool waits at its ``barrier`` (``checkpointd.views``) until the views have caught up
with the writes acknowledged before it. ``pause``/``resume`` close and reopen the connections
around a swap of the views file.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import aiosqlite

from checkpointd.errors import UnavailableError
from checkpointd.storage.sqlite import READER_PRAGMAS, translate

_REOPEN_WAIT = 10.0  # seconds a query waits for the connections to reopen after a swap


class ReaderPool:
    """Round-robin over ``size`` read-only connections. ``close()`` is idempotent."""

    def __init__(
        self,
        views_path: str,
        log_path: str,
        size: int,
        barrier: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._path = views_path
        self._log_path = log_path
        self._size = size
        self._barrier = barrier
        self._conns: list[aiosqlite.Connection] = []
        self._cycle: Iterator[aiosqlite.Connection] = iter(())
        self._closed = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()  # cleared while paused

    async def open(self) -> None:
        try:
            for _ in range(self._size):
                conn = await aiosqlite.connect(self._path, isolation_level=None)
                self._conns.append(conn)
                for pragma in READER_PRAGMAS:
                    await conn.execute(pragma)
                await conn.execute("ATTACH DATABASE ? AS log", (self._log_path,))
        except sqlite3.Error as exc:
            await self._close_conns()
            raise translate(exc) from exc
        self._cycle = itertools.cycle(self._conns)
        self._open.set()

    async def fetchall(
        self, sql: str, params: Sequence[Any] = (), *, views: bool = True
    ) -> list[tuple[Any, ...]]:
        """All rows of one query, as tuples; with ``views`` (the default) after the barrier.

        ``views=False`` is for queries of the log alone, which need not wait for the views.
        """
        if views and self._barrier is not None:
            await self._barrier()
        if self._closed:
            raise UnavailableError("the checkpoint store is closed")
        if not self._open.is_set():
            try:  # the views file is being replaced: a matter of milliseconds
                await asyncio.wait_for(self._open.wait(), _REOPEN_WAIT)
            except TimeoutError:
                raise UnavailableError("the views are being replaced; retry") from None
            if self._closed or not self._open.is_set():
                raise UnavailableError("the checkpoint store is closed")
        conn = next(self._cycle)
        self._busy += 1
        self._idle.clear()
        try:
            rows = await conn.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()
        return [tuple(row) for row in rows]

    async def fetchone(
        self, sql: str, params: Sequence[Any] = (), *, views: bool = True
    ) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params, views=views)
        return rows[0] if rows else None

    async def pause(self) -> None:
        """Let running queries finish, then close the connections (the views file is replaced)."""
        self._open.clear()
        conns, self._conns = self._conns, []
        self._cycle = iter(())
        await self._idle.wait()
        for conn in conns:
            await conn.close()

    async def resume(self) -> None:
        """Open the connections again, on the new views file."""
        if not self._closed:
            await self.open()

    async def close(self) -> None:
        self._closed = True
        self._open.set()  # wake queries waiting for a reopen: they find the pool closed
        await self._close_conns()

    async def _close_conns(self) -> None:
        conns, self._conns = self._conns, []
        for conn in conns:
            await conn.close()
