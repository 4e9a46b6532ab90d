"""The domain events: one frozen class per event type, each owning its data encoding.

A stored event is an ``EventRecord``: its header (seq, stream, session, version, time, actor,
causation) and its data as canonical msgpack bytes, which the hash chain covers. The classes
here are that data, typed: ``to_data()`` gives the bytes the writer stores (byte for byte what
this store has always written, so every existing log still verifies), ``decode(record)`` the
typed event of a stored record, for consumers to ``match`` on::

    match decode(record):
        case CheckpointCreated(metadata=metadata): ...
        case CheckpointDeleted() | CheckpointExpired(): ...

``to_map()`` is the data in its stored shape (wire keys, camelCase): what notifications and
``history`` show. Decoding accepts the shapes older versions of the store wrote and upcasts them
(a restore logged before it recorded its sources holds the restored checkpoint's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

import msgpack

from checkpointd.errors import IntegrityError
from checkpointd.events.types import EventRecord, EventType
from checkpointd.snapshots import canonical_encode


class Changes(TypedDict, total=False):
    """An update's changes, each key present only when that field changed (wire keys)."""

    name: str
    metadata: dict[str, Any]
    branches: list[str]
    retentionExpiresAt: str | None


@dataclass(frozen=True, slots=True)
class CheckpointCreated:
    """A checkpoint was created; its snapshot is in the blob keyed by this event's seq."""

    type: ClassVar[EventType] = EventType.CREATED

    name: str
    session_id: str
    timestamp: str
    branches: Sequence[str]
    metadata: Mapping[str, Any]
    created_by: str | None
    size: int
    stored_size: int
    checksum: str
    compression: str
    encrypted: bool
    retention_expires_at: str | None
    restored_from: str | None

    def to_map(self) -> dict[str, Any]:
        return {
            "branches": self.branches,
            "checksum": self.checksum,
            "compression": self.compression,
            "createdBy": self.created_by,
            "encrypted": self.encrypted,
            "metadata": self.metadata,
            "name": self.name,
            "restoredFrom": self.restored_from,
            "retentionExpiresAt": self.retention_expires_at,
            "sessionId": self.session_id,
            "size": self.size,
            "storedSize": self.stored_size,
            "timestamp": self.timestamp,
        }

    def to_data(self) -> bytes:
        return canonical_encode(self.to_map())

    @classmethod
    def from_map(cls, data: Mapping[str, Any]) -> CheckpointCreated:
        return cls(
            name=data["name"],
            session_id=data["sessionId"],
            timestamp=data["timestamp"],
            branches=data["branches"],
            metadata=data["metadata"],
            created_by=data.get("createdBy"),
            size=data["size"],
            stored_size=data["storedSize"],
            checksum=data["checksum"],
            compression=data["compression"],
            encrypted=data["encrypted"],
            retention_expires_at=data.get("retentionExpiresAt"),
            restored_from=data.get("restoredFrom"),
        )


@dataclass(frozen=True, slots=True)
class CheckpointUpdated:
    """Some of a checkpoint's fields changed (never its snapshot)."""

    type: ClassVar[EventType] = EventType.UPDATED

    changes: Changes

    def to_map(self) -> dict[str, Any]:
        return {"changes": self.changes}

    def to_data(self) -> bytes:
        return canonical_encode(self.to_map())

    @classmethod
    def from_map(cls, data: Mapping[str, Any]) -> CheckpointUpdated:
        return cls(changes=data["changes"])


@dataclass(frozen=True, slots=True)
class CheckpointDeleted:
    """A checkpoint was deleted; its snapshot is gone, its checksum and size stay logged."""

    type: ClassVar[EventType] = EventType.DELETED

    name: str
    checksum: str
    size: int

    def to_map(self) -> dict[str, Any]:
        return {"checksum": self.checksum, "name": self.name, "size": self.size}

    def to_data(self) -> bytes:
        return canonical_encode(self.to_map())

    @classmethod
    def from_map(cls, data: Mapping[str, Any]) -> CheckpointDeleted:
        return cls(name=data["name"], checksum=data["checksum"], size=data["size"])


@dataclass(frozen=True, slots=True)
class CheckpointExpired:
    """A checkpoint's retention ended and it was removed (as a delete, by the store)."""

    type: ClassVar[EventType] = EventType.EXPIRED

    name: str
    checksum: str
    size: int
    retention_expires_at: str

    def to_map(self) -> dict[str, Any]:
        return {
            "checksum": self.checksum,
            "name": self.name,
            "retentionExpiresAt": self.retention_expires_at,
            "size": self.size,
        }

    def to_data(self) -> bytes:
        return canonical_encode(self.to_map())

    @classmethod
    def from_map(cls, data: Mapping[str, Any]) -> CheckpointExpired:
        return cls(
            name=data["name"],
            checksum=data["checksum"],
            size=data["size"],
            retention_expires_at=data["retentionExpiresAt"],
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """Where a restore's merge found both states disagreeing, and which side won (no values)."""

    path: str
    resolution: str

    def to_map(self) -> dict[str, Any]:
        return {"path": self.path, "resolution": self.resolution}


@dataclass(frozen=True, slots=True)
class BlobDigest:
    """The checksum and size of something stored in a blob row beside the event."""

    checksum: str
    size: int

    def to_map(self) -> dict[str, Any]:
        return {"checksum": self.checksum, "size": self.size}


@dataclass(frozen=True, slots=True)
class StateRestored:
    """A session was put at a state taken from a checkpoint (merged with its own).

    The state is in the blob row keyed by this event's seq, encrypted under ``state_id``;
    ``details`` describes the conflicts' values and the warnings encoded beside it (None: it had
    neither). ``details_in_reply`` marks a restore logged before they were kept apart, whose
    idempotency reply still holds them.
    """

    type: ClassVar[EventType] = EventType.RESTORED

    checkpoint_id: str
    session_id: str
    strategy: str
    state_id: str
    checksum: str
    size: int
    stored_size: int
    compression: str
    encrypted: bool
    conflicts: tuple[Conflict, ...]
    details: BlobDigest | None
    sources: tuple[str, ...]
    backup_checkpoint_id: str | None
    details_in_reply: bool = False

    def to_map(self) -> dict[str, Any]:
        data = {
            "backupCheckpointId": self.backup_checkpoint_id,
            "checkpointId": self.checkpoint_id,
            "checksum": self.checksum,
            "compression": self.compression,
            "conflicts": [conflict.to_map() for conflict in self.conflicts],
            "details": None if self.details is None else self.details.to_map(),
            "encrypted": self.encrypted,
            "sessionId": self.session_id,
            "size": self.size,
            "sources": list(self.sources),
            "stateId": self.state_id,
            "storedSize": self.stored_size,
            "strategy": self.strategy,
        }
        if self.details_in_reply:
            del data["details"]
        return data

    def to_data(self) -> bytes:
        return canonical_encode(self.to_map())

    @classmethod
    def from_map(cls, data: Mapping[str, Any]) -> StateRestored:
        details = data.get("details")
        return cls(
            checkpoint_id=data["checkpointId"],
            session_id=data["sessionId"],
            strategy=data["strategy"],
            state_id=data["stateId"],
            checksum=data["checksum"],
            size=data["size"],
            stored_size=data["storedSize"],
            compression=data["compression"],
            encrypted=data["encrypted"],
            conflicts=tuple(Conflict(c["path"], c["resolution"]) for c in data["conflicts"]),
            details=None if details is None else BlobDigest(details["checksum"], details["size"]),
            # A restore logged before its sources were recorded holds the restored checkpoint's.
            sources=tuple(data.get("sources") or (data["checkpointId"],)),
            backup_checkpoint_id=data["backupCheckpointId"],
            details_in_reply="details" not in data,
        )


@dataclass(frozen=True, slots=True)
class WriteKey:
    """One pending write of a task: its index and channel (its value is in the blob)."""

    index: int
    channel: str

    def to_map(self) -> dict[str, Any]:
        return {"channel": self.channel, "index": self.index}


@dataclass(frozen=True, slots=True)
class WritesPut:
    """A task's pending writes tied to a checkpoint (on the checkpoint's stream).

    The values are in the blob row keyed by this event's seq, encoded like a snapshot (a
    ``{"values": [...]}`` object, in ``writes`` order) and bound to the checkpoint; the event
    keeps their keys, checksum and sizes. Deleting or expiring the checkpoint removes the blob.
    An ``index >= 0`` is written once per (checkpoint, task, index); the writer leaves a
    repeated one out. An ``index < 0`` (a special channel) replaces the one before it.
    """

    type: ClassVar[EventType] = EventType.WRITES

    task_id: str
    task_path: str
    writes: tuple[WriteKey, ...]
    checksum: str
    size: int
    stored_size: int
    compression: str
    encrypted: bool

    def to_map(self) -> dict[str, Any]:
        return {
            "checksum": self.checksum,
            "compression": self.compression,
            "encrypted": self.encrypted,
            "size": self.size,
            "storedSize": self.stored_size,
            "taskId": self.task_id,
            "taskPath": self.task_path,
            "writes": [write.to_map() for write in self.writes],
        }

    def to_data(self) -> bytes:
        return canonical_encode(self.to_map())

    @classmethod
    def from_map(cls, data: Mapping[str, Any]) -> WritesPut:
        return cls(
            task_id=data["taskId"],
            task_path=data["taskPath"],
            writes=tuple(WriteKey(w["index"], w["channel"]) for w in data["writes"]),
            checksum=data["checksum"],
            size=data["size"],
            stored_size=data["storedSize"],
            compression=data["compression"],
            encrypted=data["encrypted"],
        )


DomainEvent = (
    CheckpointCreated
    | CheckpointUpdated
    | CheckpointDeleted
    | CheckpointExpired
    | StateRestored
    | WritesPut
)
"""Every event type the log holds."""

_FROM_MAP: dict[str, Callable[[Mapping[str, Any]], DomainEvent]] = {
    cls.type.value: cls.from_map
    for cls in (
        CheckpointCreated,
        CheckpointUpdated,
        CheckpointDeleted,
        CheckpointExpired,
        StateRestored,
        WritesPut,
    )
}


def decode(record: EventRecord) -> DomainEvent:
    """The typed event a stored record holds.

    Raises:
        IntegrityError: the record's type is unknown or its data does not decode as that type.
    """
    from_map = _FROM_MAP.get(record.type)
    if from_map is None:
        raise IntegrityError(f"event {record.seq} has an unknown type {record.type!r}")
    try:
        return from_map(msgpack.unpackb(record.data, raw=False))
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise IntegrityError(f"event {record.seq} ({record.type}) has undecodable data") from exc
