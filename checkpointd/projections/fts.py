"""The full-text index over name, description, tags, feature, author, workflowId, stepId.

An FTS5 external-content table over the checkpoints view: the text is stored once, in the view,
and the index is kept in step by hand (delete needs the old values) or rebuilt in one statement.
Snapshot content is never indexed.
"""

from __future__ import annotations

import sqlite3
from operator import itemgetter

from checkpointd.projections.checkpoints import Row

INDEXED = ("name", "description", "tags", "feature", "author", "workflow_id", "step_id")
_COLS = ", ".join(INDEXED)
_MARKS = ", ".join("?" * len(INDEXED))
_VALUES = itemgetter("seq", *INDEXED)
_ADD = f"INSERT INTO checkpoints_fts (rowid, {_COLS}) VALUES (?, {_MARKS})"


def add(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(_ADD, _VALUES(row))


def drop(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(
        f"INSERT INTO checkpoints_fts (checkpoints_fts, rowid, {_COLS})"
        f" VALUES ('delete', ?, {_MARKS})",
        (row["seq"], *(row[c] for c in INDEXED)),
    )


def changed(before: Row, after: Row) -> bool:
    return any(before[c] != after[c] for c in INDEXED)


def rebuild(conn: sqlite3.Connection) -> None:
    """Rebuild the whole index from the view in one pass."""
    conn.execute("INSERT INTO checkpoints_fts (checkpoints_fts) VALUES ('rebuild')")
