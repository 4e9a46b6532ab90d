"""What a write needs to know, answered from the log alone.

The views follow the log a little behind, so the writer never reads them: whether a checkpoint
exists or ever existed, its current fields and version, and whether a session's state moved
since a restore read it are all answered here from the events, through the log's indexes
(``UNIQUE (stream, version)`` and ``events_session``). A checkpoint's stream is short (its
create, a few updates, perhaps its removal), so folding it is a handful of rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from checkpointd.events import store
from checkpointd.events.domain import (
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointExpired,
    CheckpointUpdated,
    decode,
)
from checkpointd.events.types import EventType
from checkpointd.projections.checkpoints import Row, created_row, updated_row

_REMOVED = (EventType.DELETED.value, EventType.EXPIRED.value)
_STATE_CHANGES = (EventType.CREATED.value, EventType.RESTORED.value)


@dataclass(frozen=True, slots=True)
class Folded:
    """A checkpoint as its events leave it: the view row it has (or last had), and more."""

    row: Row  # the checkpoints view's row, as the projector builds it
    version: int  # the stream's last version (a removal counts)
    live: bool  # not deleted or expired


def fold(conn: sqlite3.Connection, checkpoint_id: str) -> Folded | None:
    """The checkpoint's state from its events; None if it never existed."""
    records = [
        store.from_row(values)
        for values in conn.execute(
            f"{store.SELECT} WHERE stream = ? ORDER BY version", (checkpoint_id,)
        )
    ]
    if not records:
        return None
    created = decode(records[0])
    if not isinstance(created, CheckpointCreated):
        return None
    row = created_row(records[0], created.to_map())
    live = True
    for record in records[1:]:
        match decode(record):
            case CheckpointUpdated(changes):
                row = updated_row(row, record, changes)
            case CheckpointDeleted() | CheckpointExpired():
                live = False
    return Folded(row=row, version=records[-1].version, live=live)


def ever_created(conn: sqlite3.Connection, checkpoint_id: str) -> bool:
    """Whether the checkpoint exists or existed (an id is never reused)."""
    found = conn.execute(
        "SELECT 1 FROM events WHERE stream = ? AND version = 1", (checkpoint_id,)
    ).fetchone()
    return found is not None


def next_version(conn: sqlite3.Connection, stream: str) -> int:
    """The version the stream's next event takes."""
    (version,) = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream = ?", (stream,)
    ).fetchone()
    return int(version)


def session_moved(
    conn: sqlite3.Connection, session_id: str, since: int, sources: Iterable[str]
) -> bool:
    """Whether the session's state may have changed after ``since``.

    It changes with a create or a restore in it, and when a checkpoint its state holds values
    of (``sources``) is deleted or expires. Updates change no state.
    """
    moved = conn.execute(
        "SELECT 1 FROM events WHERE session_id = ? AND seq > ? AND type IN (?, ?) LIMIT 1",
        (session_id, since, *_STATE_CHANGES),
    ).fetchone()
    if moved is not None:
        return True
    for checkpoint_id in sources:
        removed = conn.execute(
            "SELECT 1 FROM events WHERE stream = ? AND seq > ? AND type IN (?, ?) LIMIT 1",
            (checkpoint_id, since, *_REMOVED),
        ).fetchone()
        if removed is not None:
            return True
    return False
