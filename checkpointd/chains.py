"""Checkpoint chains: ``metadata.chainDepth`` computed from ``metadata.parentCheckpoint``.

A checkpoint with a parent is one deeper than its parent; a checkpoint without one is at depth 0.
The depth is settled whenever metadata is written (a create, or an update replacing it), on the
writer's connection inside its transaction, from the log (the views may be behind it): a given
``chainDepth`` that disagrees is refused, a missing one is filled in. Metadata without a parent
is kept as given (its depth, 0, is written only if the caller wrote it), so a root checkpoint's
metadata reads back exactly as it was sent.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from checkpointd.errors import InvalidRequestError
from checkpointd.events.streams import fold

# Parent links followed at most when a depth must be counted (a cycle made by updates ends here).
_MAX_WALK = 100_000


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
    """The chain depth of a checkpoint that exists or existed, from the log.

    Its ``chainDepth`` when its metadata has one; else (written before depths were computed)
    the number of parent links above it. A deleted checkpoint's metadata is still in its events.
    """
    depth = 0
    current: str | None = checkpoint_id
    while current is not None and depth < _MAX_WALK:
        folded = fold(conn, current)
        if folded is None:
            return depth
        metadata = json.loads(folded.row["metadata"])
        stored = metadata.get("chainDepth")
        if isinstance(stored, int) and not isinstance(stored, bool):
            return depth + stored
        parent = metadata.get("parentCheckpoint")
        if not isinstance(parent, str):
            return depth
        depth += 1
        current = parent
    return depth
