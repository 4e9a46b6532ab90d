"""Lineage edges: child -> parent through ``metadata.parentCheckpoint`` and ``restoredFrom``.

Edges outlive the checkpoints they join, so a chain stays traversable across a deleted link.
"""

from __future__ import annotations

import sqlite3

from checkpointd.events.types import EventRecord

PARENT = "parent"
RESTORED_FROM = "restoredFrom"
RESTORE = "restore"


_LINK = "INSERT OR IGNORE INTO lineage (child, parent, kind, seq) VALUES (?, ?, ?, ?)"
_LINK_RESTORE = (
    "INSERT OR IGNORE INTO lineage (child, parent, kind, seq)"
    " SELECT ?, restored_from, ?, ? FROM sessions"
    " WHERE session_id = ? AND restored_from IS NOT NULL"
)

Edge = tuple[str, str, str, int]  # child, parent, kind, seq
RestoreEdge = tuple[str, str, int, str]  # child, RESTORE, seq, session_id


def link(conn: sqlite3.Connection, event: EventRecord, parent: str | None, kind: str) -> None:
    if parent is not None:
        conn.execute(_LINK, (event.stream, parent, kind, event.seq))


def link_many(conn: sqlite3.Connection, edges: list[Edge]) -> None:
    """``link`` for many edges, in order, in one statement."""
    conn.executemany(_LINK, edges)


def link_restore(conn: sqlite3.Connection, event: EventRecord) -> None:
    """Link a new checkpoint to the checkpoint its session's current state was restored from.

    One statement reading the sessions view (before this event updates it), so the hot path
    does not fetch the row into Python.
    """
    conn.execute(_LINK_RESTORE, (event.stream, RESTORE, event.seq, event.session_id))


def link_restore_many(conn: sqlite3.Connection, edges: list[RestoreEdge]) -> None:
    """``link_restore`` for many new checkpoints, in one statement (the sessions view must be
    as it was before each of them)."""
    conn.executemany(_LINK_RESTORE, edges)


def relink(conn: sqlite3.Connection, event: EventRecord, parent: str | None, kind: str) -> None:
    conn.execute("DELETE FROM lineage WHERE child = ? AND kind = ?", (event.stream, kind))
    link(conn, event, parent, kind)
