"""Results of the read-side and restore operations: stats, validation, restore, diff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from checkpointd.clock import format_timestamp, parse_timestamp


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """A pointer to a checkpoint: ``id``, ``name`` and ``timestamp`` (stats' oldest/newest)."""

    id: str
    name: str
    timestamp: datetime

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "timestamp": format_timestamp(self.timestamp)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any] | None) -> CheckpointRef | None:
        if wire is None:
            return None
        return cls(wire["id"], wire["name"], parse_timestamp(wire["timestamp"]))


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts and sizes over all live checkpoints, read from the stats projection."""

    total_checkpoints: int
    total_size: int
    stored_size: int
    average_size: float
    by_feature: Mapping[str, int]
    by_priority: Mapping[str, int]
    by_session: Mapping[str, int]
    oldest_checkpoint: CheckpointRef | None
    newest_checkpoint: CheckpointRef | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "totalCheckpoints": self.total_checkpoints,
            "totalSize": self.total_size,
            "storedSize": self.stored_size,
            "averageSize": self.average_size,
            "byFeature": dict(self.by_feature),
            "byPriority": dict(self.by_priority),
            "bySession": dict(self.by_session),
            "oldestCheckpoint": None
            if self.oldest_checkpoint is None
            else self.oldest_checkpoint.to_wire(),
            "newestCheckpoint": None
            if self.newest_checkpoint is None
            else self.newest_checkpoint.to_wire(),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Stats:
        return cls(
            total_checkpoints=wire["totalCheckpoints"],
            total_size=wire["totalSize"],
            stored_size=wire["storedSize"],
            average_size=float(wire["averageSize"]),
            by_feature=wire["byFeature"],
            by_priority=wire["byPriority"],
            by_session=wire["bySession"],
            oldest_checkpoint=CheckpointRef.from_wire(wire.get("oldestCheckpoint")),
            newest_checkpoint=CheckpointRef.from_wire(wire.get("newestCheckpoint")),
        )


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What ``validate_checkpoint`` found; damage is reported here, not raised."""

    is_valid: bool
    checksum_valid: bool
    size_matches: bool
    schema_valid: bool
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "isValid": self.is_valid,
            "checksumValid": self.checksum_valid,
            "sizeMatches": self.size_matches,
            "schemaValid": self.schema_valid,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ValidationReport:
        return cls(
            wire["isValid"],
            wire["checksumValid"],
            wire["sizeMatches"],
            wire["schemaValid"],
            tuple(wire["errors"]),
            tuple(wire["warnings"]),
        )


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """The outcome of a restore; ``event_seq`` is None for a dry run."""

    success: bool
    restored_from: str
    target_session_id: str
    state: Mapping[str, Any]
    conflicts: tuple[Mapping[str, Any], ...]
    warnings: tuple[str, ...]
    backup_checkpoint_id: str | None
    event_seq: int | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "restoredFrom": self.restored_from,
            "targetSessionId": self.target_session_id,
            "state": self.state,
            "conflicts": [dict(c) for c in self.conflicts],
            "warnings": list(self.warnings),
            "backupCheckpointId": self.backup_checkpoint_id,
            "eventSeq": self.event_seq,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> RestoreResult:
        return cls(
            success=wire["success"],
            restored_from=wire["restoredFrom"],
            target_session_id=wire["targetSessionId"],
            state=wire["state"],
            conflicts=tuple(wire["conflicts"]),
            warnings=tuple(wire["warnings"]),
            backup_checkpoint_id=wire.get("backupCheckpointId"),
            event_seq=wire.get("eventSeq"),
        )


@dataclass(frozen=True, slots=True)
class Diff:
    """Structural differences between two snapshots: ``{path, op, before?, after?}`` each."""

    changes: tuple[Mapping[str, Any], ...]

    def to_wire(self) -> dict[str, Any]:
        return {"changes": [dict(c) for c in self.changes]}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Diff:
        return cls(tuple(wire["changes"]))


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session's current state: its newest checkpoint's snapshot or its last restore's result.

    ``checkpoint_id`` is the checkpoint whose state it is (None after a restore, or when every
    checkpoint of the session is gone); ``restored_from`` the checkpoint of that restore;
    ``last_seq`` and ``updated_at`` the event that set it.
    """

    session_id: str
    state: Mapping[str, Any]
    checkpoint_id: str | None
    restored_from: str | None
    last_seq: int
    updated_at: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "state": self.state,
            "checkpointId": self.checkpoint_id,
            "restoredFrom": self.restored_from,
            "lastSeq": self.last_seq,
            "updatedAt": format_timestamp(self.updated_at),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> SessionState:
        return cls(
            session_id=wire["sessionId"],
            state=wire["state"],
            checkpoint_id=wire.get("checkpointId"),
            restored_from=wire.get("restoredFrom"),
            last_seq=wire["lastSeq"],
            updated_at=parse_timestamp(wire["updatedAt"]),
        )


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session: its live checkpoints, where its state is, and its last event."""

    session_id: str
    checkpoints: int
    checkpoint_id: str | None
    restored_from: str | None
    last_seq: int
    last_activity: datetime

    def to_wire(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "checkpoints": self.checkpoints,
            "checkpointId": self.checkpoint_id,
            "restoredFrom": self.restored_from,
            "lastSeq": self.last_seq,
            "lastActivity": format_timestamp(self.last_activity),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> SessionSummary:
        return cls(
            session_id=wire["sessionId"],
            checkpoints=wire["checkpoints"],
            checkpoint_id=wire.get("checkpointId"),
            restored_from=wire.get("restoredFrom"),
            last_seq=wire["lastSeq"],
            last_activity=parse_timestamp(wire["lastActivity"]),
        )


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of sessions, the most recently active first, and the number of sessions."""

    items: tuple[SessionSummary, ...]
    total: int
    page: int
    page_size: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "items": [item.to_wire() for item in self.items],
            "total": self.total,
            "page": self.page,
            "pageSize": self.page_size,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> SessionPage:
        return cls(
            items=tuple(SessionSummary.from_wire(item) for item in wire["items"]),
            total=wire["total"],
            page=wire["page"],
            page_size=wire["pageSize"],
        )


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """One pending write of a checkpoint, as ``get_writes`` returns it."""

    task_id: str
    task_path: str
    index: int
    channel: str
    value: Any

    def to_wire(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "taskPath": self.task_path,
            "index": self.index,
            "channel": self.channel,
            "value": self.value,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> PendingWrite:
        return cls(wire["taskId"], wire["taskPath"], wire["index"], wire["channel"], wire["value"])


@dataclass(frozen=True, slots=True)
class PutWritesResult:
    """What ``put_writes`` stored: ``written`` writes (a repeated ``index >= 0`` is not)."""

    checkpoint_id: str
    written: int

    def to_wire(self) -> dict[str, Any]:
        return {"checkpointId": self.checkpoint_id, "written": self.written}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> PutWritesResult:
        return cls(wire["checkpointId"], int(wire["written"]))


@dataclass(frozen=True, slots=True)
class CopySessionResult:
    """What ``copy_session`` copied: ``copied`` checkpoints, ``ids`` maps each source id to
    its copy's."""

    copied: int
    ids: Mapping[str, str]

    def to_wire(self) -> dict[str, Any]:
        return {"copied": self.copied, "ids": dict(self.ids)}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> CopySessionResult:
        return cls(int(wire["copied"]), dict(wire["ids"]))
