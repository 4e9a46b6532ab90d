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

import msgpack

from checkpointd.events import store
from checkpointd.events.domain import (
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointExpired,
    CheckpointUpdated,
    WritesPut,
    decode,
)
from checkpointd.events.types import EventType
from checkpointd.projections.checkpoints import Row, created_row, updated_row

_REMOVED = (EventType.DELETED.value, EventType.EXPIRED.value)
_STATE_CHANGES = (EventType.CREATED.value, EventType.RESTORED.value)
_CREATED = EventType.CREATED.value
_WRITES = EventType.WRITES.value


@dataclass(frozen=True, slots=True)
class Folded:
    """A checkpoint as its events leave it: the view row it has (or last had), and more."""

    row: Row  # the checkpoints view's row, as the projector builds it
    version: int  # the stream's last version (a removal and pending writes count)
    live: bool  # not deleted or expired
    writes: tuple[tuple[int, WritesPut], ...] = ()  # its pending writes' events: (seq, event)


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
    writes: list[tuple[int, WritesPut]] = []
    for record in records[1:]:
        match decode(record):
            case CheckpointUpdated(changes):
                row = updated_row(row, record, changes)
            case CheckpointDeleted() | CheckpointExpired():
                live = False
            case WritesPut() as put:
                writes.append((record.seq, put))
                row = {**row, "version": record.version}  # as the projector counts it
    return Folded(row=row, version=records[-1].version, live=live, writes=tuple(writes))


@dataclass(frozen=True, slots=True)
class WritesTarget:
    """What a ``put_writes`` needs of its checkpoint (read without folding its whole stream)."""

    session_id: str
    version: int  # the stream's last version
    encrypted: bool  # its snapshot is encrypted (its writes' values will be too)
    written: frozenset[int]  # the task's indexes >= 0 written already


def writes_target(
    conn: sqlite3.Connection, checkpoint_id: str, task_id: str
) -> WritesTarget | None:
    """The live checkpoint a task's writes go to; None if it is not live.

    A checkpoint may gather many writes: only the created and writes events' data is decoded,
    to plain values, not into typed events and a view row as ``fold`` does.
    """
    rows = conn.execute(
        "SELECT type, version, session_id, data FROM events WHERE stream = ? ORDER BY version",
        (checkpoint_id,),
    ).fetchall()
    if not rows or rows[0][0] != _CREATED:
        return None
    written: set[int] = set()
    for kind, _, _, data in rows[1:]:
        if kind in _REMOVED:
            return None
        if kind == _WRITES:
            put = msgpack.unpackb(data, raw=False)
            if put["taskId"] == task_id:
                written.update(w["index"] for w in put["writes"] if w["index"] >= 0)
    created = msgpack.unpackb(rows[0][3], raw=False)
    return WritesTarget(rows[0][2], rows[-1][1], bool(created["encrypted"]), frozenset(written))


def session_checkpoints(conn: sqlite3.Connection, session_id: str) -> list[tuple[str, Folded]]:
    """The session's live checkpoints, in creation order, through ``events_session``."""
    created = conn.execute(
        "SELECT stream FROM events WHERE session_id = ? AND type = ? ORDER BY seq",
        (session_id, EventType.CREATED.value),
    ).fetchall()
    found = []
    for (checkpoint_id,) in created:
        folded = fold(conn, checkpoint_id)
        if folded is not None and folded.live:
            found.append((checkpoint_id, folded))
    return found


def writes_seqs(conn: sqlite3.Connection, checkpoint_id: str) -> list[int]:
    """The seqs of the checkpoint's pending writes' events (their blobs' keys)."""
    rows = conn.execute(
        "SELECT seq FROM events WHERE stream = ? AND type = ?",
        (checkpoint_id, EventType.WRITES.value),
    ).fetchall()
    return [seq for (seq,) in rows]


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
