"""Per-session current state: which stored state a session is at, and where it came from.

A session's state is the state of its newest checkpoint (by creation) or of its last restore,
whichever came later. When that checkpoint is deleted or expires, the session falls back to its
newest remaining checkpoint. ``state_ref`` is the seq of the blob holding the state and
``state_key`` the id its encryption is bound to (the checkpoint id, or the restore's state id).
"""

from __future__ import annotations

import sqlite3

from checkpointd.events.types import EventRecord

_UPSERT = (
    "INSERT INTO sessions (session_id, state_ref, state_key, checkpoint_id, restored_from,"
    " last_seq, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
    " state_ref = excluded.state_ref, state_key = excluded.state_key,"
    " checkpoint_id = excluded.checkpoint_id, restored_from = excluded.restored_from,"
    " last_seq = excluded.last_seq, updated_at = excluded.updated_at"
)


Values = tuple[str, int, str, str, None, int, str]


def checkpoint_created(conn: sqlite3.Connection, event: EventRecord) -> None:
    """The session is now at this checkpoint's state (blob at the create event's seq)."""
    conn.execute(_UPSERT, created_values(event))


def created_values(event: EventRecord) -> Values:
    """The session row a create leaves, for ``write_created`` (a replay buffers these)."""
    return (event.session_id, event.seq, event.stream, event.stream, None, event.seq, event.at)


def write_created(conn: sqlite3.Connection, rows: list[Values]) -> None:
    """Apply buffered creates' session rows, in order (each as ``checkpoint_created``)."""
    conn.executemany(_UPSERT, rows)


def state_restored(conn: sqlite3.Connection, event: EventRecord, key: str, source: str) -> None:
    """The session is now at a restored state (blob at the restore event's seq)."""
    conn.execute(_UPSERT, (event.session_id, event.seq, key, None, source, event.seq, event.at))


def checkpoint_removed(conn: sqlite3.Connection, event: EventRecord) -> None:
    """Fall back to the newest remaining checkpoint if the removed one was the current state."""
    row = conn.execute(
        "SELECT checkpoint_id FROM sessions WHERE session_id = ?", (event.session_id,)
    ).fetchone()
    if row is None or row[0] != event.stream:
        return
    newest = conn.execute(
        "SELECT seq, id FROM checkpoints WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
        (event.session_id,),
    ).fetchone()
    ref, checkpoint_id = (None, None) if newest is None else newest
    conn.execute(
        "UPDATE sessions SET state_ref = ?, state_key = ?, checkpoint_id = ?,"
        " restored_from = NULL, last_seq = ?, updated_at = ? WHERE session_id = ?",
        (ref, checkpoint_id, checkpoint_id, event.seq, event.at, event.session_id),
    )
