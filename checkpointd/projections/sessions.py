"""Per-session current state: which stored state a session is at, and where it came from.

A session's state is the state of its newest checkpoint (by creation) or of its last restore,
whichever came later. When that checkpoint is deleted or expires, the session falls back to its
newest remaining checkpoint. ``state_ref`` is the seq of the blob holding the state and
``state_key`` the id its encryption is bound to (the checkpoint id, or the restore's state id).

A restored state holds values of every checkpoint in its ``restore_sources``. When any of them
is deleted or expires, the state's blob row goes with it (the command handler removes it) and
so do its source rows here; a session at that state falls back to its newest remaining
checkpoint, as it does when its own checkpoint goes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

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


def state_restored(
    conn: sqlite3.Connection, event: EventRecord, key: str, source: str, sources: Iterable[str]
) -> None:
    """The session is now at a restored state (blob at the restore event's seq) that holds
    values of the checkpoints ``sources``."""
    conn.execute(_UPSERT, (event.session_id, event.seq, key, None, source, event.seq, event.at))
    conn.executemany(
        "INSERT INTO restore_sources (checkpoint_id, seq, session_id) VALUES (?, ?, ?)",
        [(checkpoint_id, event.seq, event.session_id) for checkpoint_id in sources],
    )


def sources_of(conn: sqlite3.Connection, session_id: str) -> set[str]:
    """The checkpoints whose values the session's current state holds (none: no state)."""
    row = conn.execute(
        "SELECT checkpoint_id, state_ref FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None or row[1] is None:
        return set()
    if row[0] is not None:
        return {row[0]}
    found = conn.execute("SELECT checkpoint_id FROM restore_sources WHERE seq = ?", (row[1],))
    return {checkpoint_id for (checkpoint_id,) in found}


def checkpoint_removed(conn: sqlite3.Connection, event: EventRecord) -> None:
    """Drop the restored states that held the removed checkpoint's values; a session whose
    current state was the checkpoint or one of those states falls back to its newest remaining
    checkpoint."""
    row = conn.execute(
        "SELECT checkpoint_id FROM sessions WHERE session_id = ?", (event.session_id,)
    ).fetchone()
    if row is not None and row[0] == event.stream:
        _fall_back(conn, event.session_id, event)
    states = conn.execute(
        "SELECT seq, session_id FROM restore_sources WHERE checkpoint_id = ?", (event.stream,)
    ).fetchall()
    if not states:
        return
    conn.executemany("DELETE FROM restore_sources WHERE seq = ?", [(seq,) for seq, _ in states])
    for seq, session_id in states:
        at_state = conn.execute(
            "SELECT 1 FROM sessions WHERE session_id = ? AND state_ref = ?"
            " AND checkpoint_id IS NULL",
            (session_id, seq),
        ).fetchone()
        if at_state is not None:
            _fall_back(conn, session_id, event)


# A checkpoint's row is keyed by its create event's seq and keeps that event's session, so
# the newest remaining checkpoint of a session is found walking the log's (session_id, seq)
# index backwards to the first event with a row in the view. This needs no index of the view:
# a replay drops them, and a scan of the whole view per removal made long replays quadratic.
_NEWEST = (
    "SELECT c.seq, c.id FROM events AS e CROSS JOIN checkpoints AS c ON c.seq = e.seq"
    " WHERE e.session_id = ? ORDER BY e.seq DESC LIMIT 1"
)


def _fall_back(conn: sqlite3.Connection, session_id: str, event: EventRecord) -> None:
    """Put the session at its newest remaining checkpoint (or at no state)."""
    newest = conn.execute(_NEWEST, (session_id,)).fetchone()
    ref, checkpoint_id = (None, None) if newest is None else newest
    conn.execute(
        "UPDATE sessions SET state_ref = ?, state_key = ?, checkpoint_id = ?,"
        " restored_from = NULL, last_seq = ?, updated_at = ? WHERE session_id = ?",
        (ref, checkpoint_id, checkpoint_id, event.seq, event.at, session_id),
    )
