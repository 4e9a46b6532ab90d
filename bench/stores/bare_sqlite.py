"""Bare SQLite: the floor under the stores.

Reads: the same rows checkpointd returns, fetched by a plain ``sqlite3`` query on checkpointd's
own files (read-only: the views, with the log attached for the snapshots' blobs), with nothing
decoded — no snapshot decompression, no row objects; and the same queries through ``aiosqlite``
(what an asyncio program pays for the thread hop alone).
Writes: a one-table file (id, session, 1 KB blob of the snapshot as msgpack), WAL,
``synchronous=FULL``, one commit per insert or one per group of inserts.
Replay: every event of checkpointd's log read in order, not decoded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiosqlite
import msgpack

from bench import data
from bench.stores import ours, writer_session
from checkpointd.projections.checkpoints import COLUMNS

NAME = "bare sqlite"
_ROW = f"SELECT {', '.join(COLUMNS)} FROM checkpoints"
_ROW_WITH_BLOB = (
    f"SELECT {', '.join(COLUMNS)}, (SELECT b.data FROM log.blobs b WHERE b.seq = checkpoints.seq)"
    " FROM checkpoints"
)
_NEWEST = "ORDER BY timestamp DESC, seq DESC"


class BareReads:
    """Plain queries for checkpointd's rows, on one read-only connection."""

    name = NAME

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, ref: str) -> None:
        assert self.conn.execute(f"{_ROW_WITH_BLOB} WHERE id = ?", (ref,)).fetchone()

    def latest(self, session: str) -> None:
        query = f"{_ROW_WITH_BLOB} WHERE session_id = ? {_NEWEST} LIMIT 1"
        assert self.conn.execute(query, (session,)).fetchone()

    def list10(self, session: str) -> None:
        query = f"{_ROW} WHERE session_id = ? {_NEWEST} LIMIT 10"
        assert len(self.conn.execute(query, (session,)).fetchall()) == 10

    def list10_snapshots(self, session: str) -> None:
        query = f"{_ROW_WITH_BLOB} WHERE session_id = ? {_NEWEST} LIMIT 10"
        assert len(self.conn.execute(query, (session,)).fetchall()) == 10

    def replay(self) -> int:
        """Events read from checkpointd's log, in order; not decoded."""
        n = 0
        for _ in self.conn.execute("SELECT seq, type, data FROM log.events ORDER BY seq"):
            n += 1
        return n


# Attaches checkpointd's log, read-only, as ``log`` beside its views (the parameter: its URI).
ATTACH_LOG = "ATTACH DATABASE ? AS log"


def _log_uri(checkpointd_file: Path) -> str:
    return f"file:{checkpointd_file}?mode=ro"


@contextmanager
def open_reads(checkpointd_file: Path) -> Iterator[BareReads]:
    """Plain reads of checkpointd's log at ``checkpointd_file`` and of its views file."""
    views = ours.views_file(checkpointd_file)
    conn = sqlite3.connect(f"file:{views}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.execute(ATTACH_LOG, (_log_uri(checkpointd_file),))
        yield BareReads(conn)
    finally:
        conn.close()


class BareAsyncReads:
    """The same plain queries through one read-only ``aiosqlite`` connection."""

    name = "bare aiosqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def get(self, ref: str) -> None:
        async with self.conn.execute(f"{_ROW_WITH_BLOB} WHERE id = ?", (ref,)) as cursor:
            assert await cursor.fetchone()

    async def latest(self, session: str) -> None:
        query = f"{_ROW_WITH_BLOB} WHERE session_id = ? {_NEWEST} LIMIT 1"
        async with self.conn.execute(query, (session,)) as cursor:
            assert await cursor.fetchone()

    async def list10(self, session: str) -> None:
        query = f"{_ROW} WHERE session_id = ? {_NEWEST} LIMIT 10"
        async with self.conn.execute(query, (session,)) as cursor:
            assert len(list(await cursor.fetchall())) == 10


@asynccontextmanager
async def open_async_reads(checkpointd_file: Path) -> AsyncIterator[BareAsyncReads]:
    views = ours.views_file(checkpointd_file)
    async with aiosqlite.connect(f"file:{views}?mode=ro", uri=True) as conn:
        await conn.execute(ATTACH_LOG, (_log_uri(checkpointd_file),))
        yield BareAsyncReads(conn)


class BareWrites:
    """Inserts of the 1 KB snapshot into a one-table file, committed per insert or per group."""

    name = NAME

    def __init__(self, conn: sqlite3.Connection, group: int) -> None:
        self.conn = conn
        self.group = group
        self.blobs = [msgpack.packb(s) for s in data.snapshots()]

    def create(self, i: int) -> None:
        """Insert row ``i``; commit when ``group`` rows are pending (1: every insert)."""
        self.conn.execute(
            "INSERT INTO checkpoints (session, data) VALUES (?, ?)",
            (writer_session(i), self.blobs[i % data.POOL]),
        )
        if (i + 1) % self.group == 0 or i < 0:
            self.conn.commit()


@contextmanager
def open_writes(path: Path, group: int = 1) -> Iterator[BareWrites]:
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, session TEXT NOT NULL, data BLOB)"
        )
        yield BareWrites(conn, group)
        conn.commit()
    finally:
        conn.close()
