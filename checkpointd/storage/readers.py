"""Reader connections: a few aiosqlite WAL connections that never block the writer."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from checkpointd.errors import UnavailableError
from checkpointd.storage.sqlite import READER_PRAGMAS, translate


class ReaderPool:
    """Round-robin over ``size`` read-only connections. ``close()`` is idempotent."""

    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self._size = size
        self._conns: list[aiosqlite.Connection] = []
        self._cycle: Iterable[aiosqlite.Connection] = iter(())
        self._closed = False

    async def open(self) -> None:
        try:
            for _ in range(self._size):
                conn = await aiosqlite.connect(self._path, isolation_level=None)
                self._conns.append(conn)
                for pragma in READER_PRAGMAS:
                    await conn.execute(pragma)
        except sqlite3.Error as exc:
            await self.close()
            raise translate(exc) from exc
        self._cycle = itertools.cycle(self._conns)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one query, as tuples."""
        if self._closed or not self._conns:
            raise UnavailableError("the checkpoint store is closed")
        conn = next(iter(self._cycle))
        try:
            rows = await conn.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return [tuple(row) for row in rows]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        self._closed = True
        conns, self._conns = self._conns, []
        for conn in conns:
            await conn.close()
