"""Lineage edges: child -> parent through ``metadata.parentCheckpoint`` and ``restoredFrom``.

Edges outlive the checkpoints they join, so a chain stays traversable across a deleted link.
"""

from __future__ import annotations

import sqlite3

from checkpointd.events.types import EventRecord

PARENT = "parent"
RESTORED_FROM = "restoredFrom"
RESTORE = "restore"


def link(conn: sqlite3.Connection, event: EventRecord, parent: str | None, kind: str) -> None:
    if parent is not None:
        conn.execute(
            "INSERT OR IGNORE INTO lineage (child, parent, kind, seq) VALUES (?, ?, ?, ?)",
            (event.stream, parent, kind, event.seq),
        )


def relink(conn: sqlite3.Connection, event: EventRecord, parent: str | None, kind: str) -> None:
    conn.execute("DELETE FROM lineage WHERE child = ? AND kind = ?", (event.stream, kind))
    link(conn, event, parent, kind)
