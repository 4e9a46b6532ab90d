"""The SQLite event store: append on the writer's connection, read rows into records.

Plain functions over a DB-API connection; the writer calls them inside its transaction, the
readers call the same SQL through their own connections.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from checkpointd.events.types import GENESIS_HASH, EventRecord

COLUMNS = "seq, id, type, stream, session_id, version, at, actor, causation, data, prev_hash, hash"
INSERT = f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SELECT = f"SELECT {COLUMNS} FROM events"
# What the views are built from (``Projector.apply_rows``): a create needs no more.
REPLAY_COLUMNS = "seq, type, stream, session_id, version, at, data"


def append(conn: sqlite3.Connection, record: EventRecord) -> None:
    """Insert one event; a duplicate ``(stream, version)`` raises sqlite3.IntegrityError."""
    conn.execute(INSERT, as_row(record))


def as_row(record: EventRecord) -> tuple[Any, ...]:
    return (
        record.seq,
        record.id,
        record.type,
        record.stream,
        record.session_id,
        record.version,
        record.at,
        record.actor,
        record.causation,
        record.data,
        record.prev_hash,
        record.hash,
    )


def from_row(row: Sequence[Any]) -> EventRecord:
    return EventRecord(*row)


def head(conn: sqlite3.Connection) -> tuple[int, bytes]:
    """The last ``seq`` and its hash; ``(0, GENESIS_HASH)`` for an empty log."""
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (row[0], row[1])


def get(conn: sqlite3.Connection, seq: int) -> EventRecord | None:
    """The event at ``seq``, or None."""
    row = conn.execute(f"{SELECT} WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else from_row(row)


def scan(conn: sqlite3.Connection, after_seq: int = 0, chunk: int = 5000) -> Iterator[EventRecord]:
    """Every event after ``after_seq`` in ``seq`` order, read in chunks."""
    for rows in scan_rows(conn, after_seq, chunk):
        for row in rows:
            yield from_row(row)


def scan_rows(
    conn: sqlite3.Connection, after_seq: int = 0, chunk: int = 5000, columns: str = COLUMNS
) -> Iterator[list[Any]]:
    """Every event after ``after_seq`` in ``seq`` order, as lists of at most ``chunk`` rows.

    ``columns`` (``seq`` first) chooses what each row holds: a replay reads only what the views
    need (``REPLAY_COLUMNS``) and builds no record for most events.
    """
    select = f"SELECT {columns} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
    while True:
        rows = conn.execute(select, (after_seq, chunk)).fetchall()
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        after_seq = rows[-1][0]
