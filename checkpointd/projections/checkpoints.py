"""The checkpoints view: one row per live checkpoint, the source of get, list and FTS content."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from checkpointd.compact_json import compact_dumps
from checkpointd.events.types import EventRecord

COLUMNS = (
    "seq",
    "id",
    "name",
    "session_id",
    "timestamp",
    "branches",
    "metadata",
    "feature",
    "priority",
    "author",
    "description",
    "tags",
    "workflow_id",
    "step_id",
    "created_by",
    "size",
    "stored_size",
    "checksum",
    "compressed",
    "encrypted",
    "retention_expires_at",
    "restored_from",
    "version",
    "created_at",
    "updated_at",
)
_INSERT = f"INSERT INTO checkpoints ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM checkpoints"
_VALUES = itemgetter(*COLUMNS)  # a row's values in COLUMNS order, in one C call

Row = dict[str, Any]


# Keys sorted as in the canonical event data, so a rebuild writes the very same text.
dumps = compact_dumps(sort_keys=True)


def metadata_columns(metadata: Mapping[str, Any]) -> Row:
    """The metadata fields the view keeps in their own columns, for indexes and FTS."""
    tags = metadata.get("tags") or []
    return {
        "metadata": dumps(metadata),
        "feature": metadata.get("feature"),
        "priority": metadata.get("priority", "normal"),
        "author": metadata.get("author"),
        "description": metadata.get("description"),
        "tags": " ".join(tags) if tags else None,
        "workflow_id": metadata.get("workflowId"),
        "step_id": metadata.get("stepId"),
    }


def created_row(event: EventRecord, data: Mapping[str, Any]) -> Row:
    """The view row a ``checkpoint.created`` event produces."""
    return {
        "seq": event.seq,
        "id": event.stream,
        "name": data["name"],
        "session_id": event.session_id,
        "timestamp": data["timestamp"],
        "branches": dumps(data["branches"]),
        **metadata_columns(data["metadata"]),
        "created_by": data.get("createdBy"),
        "size": data["size"],
        "stored_size": data["storedSize"],
        "checksum": data["checksum"],
        "compressed": int(data["compression"] != "none"),
        "encrypted": int(data["encrypted"]),
        "retention_expires_at": data.get("retentionExpiresAt"),
        "restored_from": data.get("restoredFrom"),
        "version": event.version,
        "created_at": event.at,
        "updated_at": event.at,
    }


def updated_row(before: Row, event: EventRecord, changes: Mapping[str, Any]) -> Row:
    """The view row after a ``checkpoint.updated`` event with ``changes`` (wire keys)."""
    row = dict(before)
    if "name" in changes:
        row["name"] = changes["name"]
    if "branches" in changes:
        row["branches"] = dumps(changes["branches"])
    if "metadata" in changes:
        row.update(metadata_columns(changes["metadata"]))
    if "retentionExpiresAt" in changes:
        row["retention_expires_at"] = changes["retentionExpiresAt"]
    row["version"] = event.version
    row["updated_at"] = event.at
    return row


def load(conn: sqlite3.Connection, checkpoint_id: str) -> Row | None:
    """The current view row of a checkpoint, or None."""
    cur = conn.execute(f"{_SELECT} WHERE id = ?", (checkpoint_id,))
    values = cur.fetchone()
    return None if values is None else dict(zip(COLUMNS, values, strict=True))


def insert(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute(_INSERT, _VALUES(row))


def replace(conn: sqlite3.Connection, row: Row) -> None:
    assignments = ", ".join(f"{c} = ?" for c in COLUMNS[2:])
    conn.execute(
        f"UPDATE checkpoints SET {assignments} WHERE seq = ?",
        (*(row[c] for c in COLUMNS[2:]), row["seq"]),
    )


def remove(conn: sqlite3.Connection, row: Row) -> None:
    conn.execute("DELETE FROM checkpoints WHERE seq = ?", (row["seq"],))
