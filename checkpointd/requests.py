"""Request values: the wire (camelCase) or keyword (snake_case) input, validated into typed objects.

Every method that takes a request accepts keyword arguments *or* one mapping in the wire shape;
both go through the same ``from_wire`` so they validate identically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from checkpointd.clock import parse_timestamp
from checkpointd.errors import InvalidRequestError
from checkpointd.models import Priority
from checkpointd.snapshots.canonical import check_checksum_format

MAX_NAME = 256
MAX_TEXT = 4096
MAX_TAGS = 64
MAX_BRANCHES = 256
MAX_BATCH = 1000

# The original API's optional fields, which may stand at the top level instead of in ``metadata``.
FLAT_METADATA = ("feature", "priority", "author", "description", "workflowId", "stepId", "tags")
_CREATE_FIELDS = frozenset(
    {
        "name",
        "sessionId",
        "timestamp",
        "snapshot",
        "branches",
        "metadata",
        "createdBy",
        "size",
        "checksum",
        "compressed",
        "encrypted",
        "retentionExpiresAt",
        "restoredFrom",
        "id",
        *FLAT_METADATA,
    }
)
_UPDATE_FIELDS = frozenset({"name", "metadata", "branches", "retentionExpiresAt"})
DAEMON_ACTOR = "checkpointd"
"""The actor of the store's own work (expiry, restore backups): no client may claim it."""

_SNAKE_TO_WIRE = {
    "session_id": "sessionId",
    "created_by": "createdBy",
    "retention_expires_at": "retentionExpiresAt",
    "restored_from": "restoredFrom",
    "workflow_id": "workflowId",
    "step_id": "stepId",
    "expected_version": "expectedVersion",
    "include_snapshot": "includeSnapshot",
    "checkpoint_id": "checkpointId",
    "after_seq": "afterSeq",
    "target_session_id": "targetSessionId",
    "merge_strategy": "mergeStrategy",
    "preserve_current_state": "preserveCurrentState",
    "current_state": "currentState",
    "conflict_resolution": "conflictResolution",
    "rollback_on_error": "rollbackOnError",
    "dry_run": "dryRun",
    "validate_integrity": "validateIntegrity",
    "validate_checksum": "validateChecksum",
    "validate_schema": "validateSchema",
    "custom_resolver": "customResolver",
}


def wire_keys(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments renamed to their wire names (unknown names pass through unchanged)."""
    return {_SNAKE_TO_WIRE.get(key, key): value for key, value in kwargs.items()}


def request_mapping(
    request: Mapping[str, Any] | None, kwargs: Mapping[str, Any], what: str
) -> dict[str, Any]:
    """One wire-shaped mapping from either a positional mapping or keyword arguments, not both."""
    if request is not None and kwargs:
        raise InvalidRequestError(f"{what}: pass one mapping or keyword arguments, not both")
    if request is None:
        return wire_keys(kwargs)
    if not isinstance(request, Mapping):
        raise InvalidRequestError(f"{what}: expected a mapping, got {type(request).__name__}")
    return wire_keys(request)


def _reject_unknown(data: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    if allowed.issuperset(data):
        return
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise InvalidRequestError(f"{what}: unknown field(s) {', '.join(unknown)}")


def text(value: Any, field: str, *, max_len: int = MAX_NAME, min_len: int = 1) -> str:
    """A string of bounded length, or InvalidRequestError naming ``field``."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"expected a string, got {type(value).__name__}", field=field)
    if not min_len <= len(value) <= max_len:
        raise InvalidRequestError(f"length must be {min_len}..{max_len}", field=field)
    if "\x00" in value:
        raise InvalidRequestError("must not contain NUL characters", field=field)
    return value


def _opt_text(value: Any, field: str, max_len: int = MAX_NAME) -> str | None:
    return None if value is None else text(value, field, max_len=max_len)


def _string_list(value: Any, field: str, limit: int) -> list[str]:
    if not isinstance(value, list | tuple):
        raise InvalidRequestError("expected a list of strings", field=field)
    if len(value) > limit:
        raise InvalidRequestError(f"at most {limit} items", field=field)
    return [text(item, field) for item in value]


def _checksum(value: Any) -> str:
    check_checksum_format(text(value, "checksum", max_len=100))
    return str(value)


def _opt_bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidRequestError("expected true or false", field=field)


def _opt_time(value: Any, field: str) -> datetime | None:
    return None if value is None else parse_timestamp(value, field=field)


MAX_INT = 2**53 - 1  # exact in every JSON implementation; page offsets stay within SQLite's


def non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidRequestError(f"expected an integer 0..{MAX_INT}", field=field)
    return value


def _mapping(value: Any, field: str) -> dict[str, Any]:
    if type(value) is dict:  # the common case, without the ABC check
        return value.copy()
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", field=field)
    return dict(value)


def validate_metadata(value: Any, where: str = "metadata") -> dict[str, Any]:
    """The metadata object with its well-known keys type-checked and ``priority`` defaulted.

    ``where`` names the object in error messages (``metadata.priority``).
    """
    meta = _mapping(value, where)
    for key in ("feature", "author", "workflowId", "stepId", "parentCheckpoint"):
        if meta.get(key) is not None:
            text(meta[key], f"{where}.{key}")
    if meta.get("description") is not None:
        text(meta["description"], f"{where}.description", max_len=MAX_TEXT, min_len=0)
    if meta.get("tags") is not None:
        meta["tags"] = _string_list(meta["tags"], f"{where}.tags", MAX_TAGS)
    if meta.get("chainDepth") is not None:
        non_negative_int(meta["chainDepth"], f"{where}.chainDepth")
    priority = meta.get("priority")
    if priority is None:
        meta["priority"] = Priority.NORMAL.value
    else:
        try:
            meta["priority"] = Priority(priority).value
        except ValueError:
            allowed = ", ".join(p.value for p in Priority)
            raise InvalidRequestError(
                f"must be one of {allowed}", field=f"{where}.priority"
            ) from None
    # In the order every later read gives it back (the view stores it key-sorted), so the
    # create's reply and a replay of it are the same bytes.
    return _key_sorted(meta)  # type: ignore[no-any-return]


def _key_sorted(value: Any) -> Any:
    if isinstance(value, dict):
        try:
            keys = sorted(value)
        except TypeError:  # mixed key types: refused where the metadata is stored
            keys = list(value)
        return {key: _key_sorted(value[key]) for key in keys}
    if isinstance(value, list):
        return [_key_sorted(item) for item in value]
    return value


def _merge_flat_metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    meta = _mapping(data.get("metadata") or {}, "metadata")
    for key in FLAT_METADATA:
        if key not in data:
            continue
        if key in meta and meta[key] != data[key]:
            raise InvalidRequestError(
                "given both flat and in metadata with different values", field=key
            )
        meta[key] = data[key]
    return meta


def _create_metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    """A create's metadata: top-level and flat, else the original API's ``snapshot.metadata``.

    The original API's headline example puts ``feature``, ``priority``… inside
    ``snapshot.metadata``.
    When the create gives no metadata of its own, those keys (only those) are lifted from
    there; the snapshot itself is stored unchanged.
    """
    inner = data["snapshot"].get("metadata")
    if data.get("metadata") or any(key in data for key in FLAT_METADATA):
        inner = None
    if isinstance(inner, Mapping):
        lifted = {key: inner[key] for key in FLAT_METADATA if inner.get(key) is not None}
        if lifted:
            return validate_metadata(lifted, where="snapshot.metadata")
    return validate_metadata(_merge_flat_metadata(data))


_CHECKPOINT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
_RESERVED_ID = "session:"  # the prefix of the log's session streams


def given_id(value: Any) -> str:
    """A client-supplied checkpoint id: 1-128 characters of ``A-Z a-z 0-9 . _ : -``.

    Raises:
        InvalidRequestError: another type or character, or the reserved ``session:`` prefix.
    """
    if not isinstance(value, str) or not _CHECKPOINT_ID.fullmatch(value):
        raise InvalidRequestError("must be 1-128 characters of A-Z a-z 0-9 . _ : -", field="id")
    if value.startswith(_RESERVED_ID):
        raise InvalidRequestError(f"ids starting with {_RESERVED_ID!r} are reserved", field="id")
    return value


def _created_by(value: Any) -> str | None:
    """``createdBy``, which must not pass for the store itself (whatever its case or spacing)."""
    created_by = _opt_text(value, "createdBy")
    if created_by is not None and created_by.strip().casefold() == DAEMON_ACTOR:
        raise InvalidRequestError(
            f"{DAEMON_ACTOR!r} is reserved for the store's own work", field="createdBy"
        )
    return created_by


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create: everything but the snapshot encoding, which the writer does."""

    name: str
    session_id: str
    snapshot: Mapping[str, Any]
    branches: list[str]
    metadata: dict[str, Any]
    timestamp: datetime | None = None
    created_by: str | None = None
    size: int | None = None
    checksum: str | None = None
    compressed: bool | None = None
    encrypted: bool | None = None
    retention_expires_at: datetime | None = None
    restored_from: str | None = None
    checkpoint_id: str | None = None  # given by the client (``id``), else assigned when sealed

    @property
    def parent_id(self) -> str | None:
        parent = self.metadata.get("parentCheckpoint")
        return parent if isinstance(parent, str) else None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CreateRequest:
        """Validate the original API's create input (canonical, flat, or with input fields).

        Raises:
            InvalidRequestError: a missing, unknown or wrong-typed field.
        """
        if not isinstance(data, Mapping):
            raise InvalidRequestError("create: expected an object")
        _reject_unknown(data, _CREATE_FIELDS, "create")
        for required in ("name", "sessionId", "snapshot", "branches"):
            if required not in data:
                raise InvalidRequestError("is required", field=required)
        if not isinstance(data["snapshot"], Mapping):
            raise InvalidRequestError("expected an object", field="snapshot")
        checksum = data.get("checksum")
        return cls(
            name=text(data["name"], "name"),
            session_id=text(data["sessionId"], "sessionId"),
            snapshot=data["snapshot"],
            branches=_string_list(data["branches"], "branches", MAX_BRANCHES),
            metadata=_create_metadata(data),
            timestamp=_opt_time(data.get("timestamp"), "timestamp"),
            created_by=_created_by(data.get("createdBy")),
            size=None if data.get("size") is None else non_negative_int(data["size"], "size"),
            checksum=None if checksum is None else _checksum(checksum),
            compressed=_opt_bool(data.get("compressed"), "compressed"),
            encrypted=_opt_bool(data.get("encrypted"), "encrypted"),
            retention_expires_at=_opt_time(data.get("retentionExpiresAt"), "retentionExpiresAt"),
            restored_from=_opt_text(data.get("restoredFrom"), "restoredFrom"),
            checkpoint_id=None if data.get("id") is None else given_id(data["id"]),
        )


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A validated update of a checkpoint's mutable fields."""

    checkpoint_id: str
    name: str | None = None
    metadata: dict[str, Any] | None = None
    branches: list[str] | None = None
    retention_expires_at: datetime | None = None
    clear_retention: bool = False
    expected_version: int | None = None

    @classmethod
    def from_wire(
        cls, checkpoint_id: Any, changes: Any, expected_version: Any = None
    ) -> UpdateRequest:
        """Validate an update; snapshots are immutable, so changing one is an error.

        Raises:
            InvalidRequestError: an unknown field, a snapshot change, nothing to change.
        """
        if not isinstance(changes, Mapping):
            raise InvalidRequestError("expected an object", field="changes")
        changes = wire_keys(changes)
        if "snapshot" in changes:
            raise InvalidRequestError("snapshots are immutable; create a new checkpoint")
        _reject_unknown(changes, _UPDATE_FIELDS, "update")
        if not changes:
            raise InvalidRequestError("nothing to update", field="changes")
        retention = changes.get("retentionExpiresAt")
        return cls(
            checkpoint_id=text(checkpoint_id, "id"),
            name=text(changes["name"], "name") if "name" in changes else None,
            metadata=validate_metadata(changes["metadata"]) if "metadata" in changes else None,
            branches=(
                _string_list(changes["branches"], "branches", MAX_BRANCHES)
                if "branches" in changes
                else None
            ),
            retention_expires_at=_opt_time(retention, "retentionExpiresAt"),
            clear_retention="retentionExpiresAt" in changes and retention is None,
            expected_version=(
                None
                if expected_version is None
                else non_negative_int(expected_version, "expectedVersion")
            ),
        )


def batch_items(items: Any) -> Sequence[Mapping[str, Any]]:
    """The list of create inputs of a batch, bounded in length."""
    if not isinstance(items, list | tuple):
        raise InvalidRequestError("expected a list", field="checkpoints")
    if not 1 <= len(items) <= MAX_BATCH:
        raise InvalidRequestError(f"a batch holds 1..{MAX_BATCH} checkpoints", field="checkpoints")
    return items


def distinct_ids(requests: Sequence[CreateRequest]) -> None:
    """Refuse a batch that gives one checkpoint id twice (InvalidRequestError), before any write."""
    seen: set[str] = set()
    for index, request in enumerate(requests):
        given = request.checkpoint_id
        if given is None:
            continue
        if given in seen:
            raise InvalidRequestError(
                f"id {given!r} is given twice in the batch", field=f"checkpoints[{index}].id"
            )
        seen.add(given)
