"""Checkpoints view rows to API values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from checkpointd.clock import parse_timestamp
from checkpointd.events.types import EventRecord
from checkpointd.models import Checkpoint


def checkpoint_from_row(
    row: Mapping[str, Any], *, snapshot: Mapping[str, Any] | None
) -> Checkpoint:
    """The Checkpoint a view row describes, with ``snapshot`` attached as given."""
    expires = row["retention_expires_at"]
    return Checkpoint(
        id=row["id"],
        name=row["name"],
        session_id=row["session_id"],
        timestamp=parse_timestamp(row["timestamp"]),
        snapshot=snapshot,
        branches=json.loads(row["branches"]),
        metadata=json.loads(row["metadata"]),
        created_by=row["created_by"],
        size=row["size"],
        stored_size=row["stored_size"],
        checksum=row["checksum"],
        compressed=bool(row["compressed"]),
        encrypted=bool(row["encrypted"]),
        retention_expires_at=None if expires is None else parse_timestamp(expires),
        restored_from=row["restored_from"],
        version=row["version"],
        created_at=parse_timestamp(row["created_at"]),
        updated_at=parse_timestamp(row["updated_at"]),
    )


def created_wire(event: EventRecord) -> dict[str, Any]:
    """The wire form (without snapshot) of the checkpoint a ``checkpoint.created`` event made.

    Equal to ``to_wire()`` of the Checkpoint the create returned: a keyed create's reply is
    rendered from its event when a retry asks for it, rather than stored.
    """
    data = event.payload()
    return {
        "id": event.stream,
        "name": data["name"],
        "sessionId": event.session_id,
        "timestamp": data["timestamp"],
        "branches": data["branches"],
        "metadata": data["metadata"],
        "createdBy": data.get("createdBy"),
        "size": data["size"],
        "storedSize": data["storedSize"],
        "checksum": data["checksum"],
        "compressed": data["compression"] != "none",
        "encrypted": data["encrypted"],
        "retentionExpiresAt": data.get("retentionExpiresAt"),
        "restoredFrom": data.get("restoredFrom"),
        "version": event.version,
        "createdAt": event.at,
        "updatedAt": event.at,
    }
