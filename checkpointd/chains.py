"""Checkpoint chains: ``metadata.chainDepth`` computed from ``metadata.parentCheckpoint``.

A checkpoint with a parent is one deeper than its parent; a checkpoint without one is at depth 0.
The depth is settled whenever metadata is written (a create, or an update replacing it), on the
writer's connection inside its transaction: a given ``chainDepth`` that disagrees is refused,
a missing one is filled in. Metadata without a parent is kept as given (its depth, 0, is written
only if the caller wrote it), so a root checkpoint's metadata reads back exactly as it was sent.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from checkpointd.errors import InvalidRequestError
from checkpointd.projections.lineage import PARENT

# Parent links followed at most when a depth must be counted (a cycle made by updates ends here).
_MAX_WALK = 1_000_000
_STORED = "SELECT json_extract(metadata, '$.chainDepth') FROM checkpoints WHERE id = ?"
_COUNTED = (
    "WITH RECURSIVE up(id, depth) AS (SELECT ?, 0 UNION ALL"
    " SELECT l.parent, up.depth + 1 FROM lineage l JOIN up ON l.child = up.id"
    " WHERE l.kind = ? AND up.depth < ?)"
    " SELECT max(depth) FROM up"
)


def settle_depth(conn: sqlite3.Connection, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with ``chainDepth`` set from its ``parentCheckpoint`` (which must exist).

    Raises:
        InvalidRequestError: a given ``chainDepth`` is not the computed one.
    """
    parent = metadata.get("parentCheckpoint")
    depth = 0 if not isinstance(parent, str) else depth_of(conn, parent) + 1
    given = metadata.get("chainDepth")
    if given is not None and given != depth:
        why = f"its parent {parent!r} is at {depth - 1}" if depth else "it has no parentCheckpoint"
        raise InvalidRequestError(f"is {depth}, not {given}: {why}", field="metadata.chainDepth")
    if parent is None or given is not None:
        return metadata
    merged = {**metadata, "chainDepth": depth}
    try:
        return {key: merged[key] for key in sorted(merged)}  # key-sorted, as stored
    except TypeError:  # mixed key types: refused where the metadata is encoded
        return merged


def depth_of(conn: sqlite3.Connection, checkpoint_id: str) -> int:
    """The chain depth of a checkpoint that exists or existed.

    Its stored ``chainDepth`` when it is live and has one; else (deleted, or written before depths
    were computed) the number of parent links above it, which outlive deletion.
    """
    row = conn.execute(_STORED, (checkpoint_id,)).fetchone()
    if row is not None and isinstance(row[0], int):
        return row[0]
    (depth,) = conn.execute(_COUNTED, (checkpoint_id, PARENT, _MAX_WALK)).fetchone()
    return int(depth)
