"""The checkpoints view: one row per live checkpoint, the source of get, list and FTS content."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from checkpointd import derived, fields
from checkpointd.events import store
from checkpointd.events.types import EventRecord

COLUMNS = fields.COLUMNS
_INSERT = f"INSERT INTO checkpoints ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM checkpoints"
_VALUES = itemgetter(*COLUMNS)  # a row's values in COLUMNS order, in one C call

Row = dict[str, Any]

# The row functions below are generated from the field table (checkpointd.derived): straight-line
# code, one expression per column, as this hot path (every create, live or replayed) needs.

metadata_columns: Callable[[Mapping[str, Any]], Row] = derived.metadata_columns()
"""The metadata's column and the metadata fields the view keeps in their own columns, for
indexes and FTS."""

created_values: Callable[[Sequence[Any], Mapping[str, Any]], tuple[Any, ...]] = (
    derived.created_values([c.strip() for c in store.REPLAY_COLUMNS.split(",")])
)
"""``created_row``'s values in ``COLUMNS`` order; ``header`` starts as a log row read with
``store.REPLAY_COLUMNS`` does (seq, type, stream, session_id, version, at). A replay keeps
rows as tuples: no record, no dict per event."""


def created_row(event: EventRecord, data: Mapping[str, Any]) -> Row:
    """The view row a ``checkpoint.created`` event produces."""
    header = (event.seq, event.type, event.stream, event.session_id, event.version, event.at)
    return dict(zip(COLUMNS, created_values(header, data), strict=True))


updated_row: Callable[[Row, EventRecord, Mapping[str, Any]], Row] = derived.updated_row()
"""``updated_row(before, event, changes)``: the view row after a ``checkpoint.updated`` event
with ``changes`` (wire keys)."""


def load(conn: sqlite3.Connection, checkpoint_id: str) -> Row | None:
    """The current view row of a checkpoint, or None."""
    cur = conn.execute(f"{_SELECT} WHERE id = ?", (checkpoint_id,))
    values = cur.fetchone()
    return None if values is None else dict(zip(COLUMNS, values, strict=True))


def insert(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(_INSERT, _VALUES(row))


def insert_many(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows given as ``created_values`` tuples, in one statement."""
    conn.executemany(_INSERT, rows)


def replace(conn: sqlite3.Connection, row: Row) -> None:
    assignments = ", ".join(f"{c} = ?" for c in COLUMNS[2:])
    conn.execute(
        f"UPDATE checkpoints SET {assignments} WHERE seq = ?",
        (*(row[c] for c in COLUMNS[2:]), row["seq"]),
    )


def remove(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute("DELETE FROM checkpoints WHERE seq = ?", (row["seq"],))
