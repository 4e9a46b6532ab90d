"""The writes view: one row per pending write of a live checkpoint, the source of ``get_writes``.

A row points at its value: the ``checkpoint.writes`` event whose blob holds it (``seq``) and
its place in that blob's values (``position``). Keyed by (checkpoint, task, index): an
``index >= 0`` keeps its first write, an ``index < 0`` takes the latest. A checkpoint's rows go
with it when it is deleted or expires.
"""

from __future__ import annotations

import sqlite3

from checkpointd.events.domain import WritesPut
from checkpointd.events.types import EventRecord

_FIRST = (
    "INSERT OR IGNORE INTO writes"
    " (checkpoint_id, task_id, idx, task_path, channel, seq, position)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_LATEST = _FIRST.replace("OR IGNORE", "OR REPLACE")


def put(conn: sqlite3.Connection, record: EventRecord, event: WritesPut) -> None:
    """Add a ``checkpoint.writes`` event's writes, and count it in its checkpoint's version."""
    checkpoint_id = record.stream
    for position, key in enumerate(event.writes):
        values = (
            checkpoint_id,
            event.task_id,
            key.index,
            event.task_path,
            key.channel,
            record.seq,
            position,
        )
        conn.execute(_FIRST if key.index >= 0 else _LATEST, values)
    # Every event of a checkpoint's stream counts in its version (optimistic concurrency).
    conn.execute("UPDATE checkpoints SET version = ? WHERE id = ?", (record.version, checkpoint_id))


def removed(conn: sqlite3.Connection, checkpoint_id: str) -> None:
    """The checkpoint was deleted or expired: its writes go."""
    conn.execute("DELETE FROM writes WHERE checkpoint_id = ?", (checkpoint_id,))
