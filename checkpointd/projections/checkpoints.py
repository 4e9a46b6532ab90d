"""The checkpoints view: one row per live checkpoint, the source of get, list and FTS content."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
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
    header = (event.seq, event.type, event.stream, event.session_id, event.version, event.at)
    return dict(zip(COLUMNS, created_values(header, data), strict=True))


def created_values(header: Sequence[Any], data: Mapping[str, Any]) -> tuple[Any, ...]:
    """``created_row``'s values in ``COLUMNS`` order; ``header`` starts as a log row read with
    ``store.REPLAY_COLUMNS`` does (seq, type, stream, session_id, version, at). A replay keeps
    rows as tuples: no record, no dict per event."""
    seq, _, stream, session_id, version, at = header[:6]
    metadata = data["metadata"]
    tags = metadata.get("tags")
    return (
        seq,
        stream,
        data["name"],
        session_id,
        data["timestamp"],
        branches_text(data["branches"]),
        dumps(metadata),
        metadata.get("feature"),
        metadata.get("priority", "normal"),
        metadata.get("author"),
        metadata.get("description"),
        " ".join(tags) if tags else None,
        metadata.get("workflowId"),
        metadata.get("stepId"),
        data.get("createdBy"),
        data["size"],
        data["storedSize"],
        data["checksum"],
        int(data["compression"] != "none"),
        int(data["encrypted"]),
        data.get("retentionExpiresAt"),
        data.get("restoredFrom"),
        version,
        at,
        at,
    )


# The text of recently seen branch lists (most checkpoints have the same few), keyed by tuples
# of strings only: no other value equals one of those, so a hit is always the right text.
_BRANCHES: dict[tuple[str, ...], str] = {}


def branches_text(branches: Any) -> str:
    """``dumps(branches)``, remembered for tuples of strings (a replay decodes arrays so)."""
    try:
        return _BRANCHES[branches]
    except (KeyError, TypeError):  # not seen, or a list (not hashable)
        pass
    text = dumps(branches)
    if type(branches) is tuple and all(type(name) is str for name in branches):
        if len(_BRANCHES) >= 1024:
            _BRANCHES.clear()
        _BRANCHES[branches] = text
    return text


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
