"""Request values: the wire (camelCase) or keyword (snake_case) input, validated into typed objects.

Every method that takes a request accepts keyword arguments *or* one mapping in the wire shape;
both go through the same ``from_wire`` so they validate identically.

The wire is converted here, at the edge: each verb of the protocol (docs/protocol.md) has one
request type whose ``from_wire(body)`` checks the body the service receives and whose
``to_wire()`` is the body ``CheckpointClient`` sends. Deep checks that need the store's own
knowledge (a ``where`` clause, a search's filters, a restore's options) stay with the store,
which runs them on the same values in-process and behind the service.

Everything here is built on one small toolkit: ``reject_unknown``, ``text``/``opt_text``,
``flag``/``opt_bool``, ``integer``/``non_negative_int`` and ``obj``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self

from checkpointd.clock import format_timestamp, parse_timestamp
from checkpointd.errors import InvalidRequestError
from checkpointd.models import Priority
from checkpointd.snapshots.canonical import check_checksum_format

MAX_NAME = 256
MAX_TEXT = 4096
MAX_TAGS = 64
MAX_BRANCHES = 256
MAX_BATCH = 1000
DEFAULT_PAGE_SIZE = 100
"""Checkpoints (or sessions) a list page holds when the request does not say."""
MAX_LINEAGE = 1000
"""Ancestors (and descendants) a lineage page holds at most, and by default."""
DEFAULT_HISTORY_LIMIT = 100
"""Events a history page holds when the request does not say."""

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
_UPDATE_CALL = frozenset({"id", "changes", "expectedVersion"})
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
    "task_id": "taskId",
    "task_path": "taskPath",
    "source_session_id": "sourceSessionId",
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


def reject_unknown(
    data: Mapping[str, Any], allowed: frozenset[str], what: str, *, field: str | None = None
) -> None:
    """InvalidRequestError ``<what>: unknown field(s) a, b`` unless every key is ``allowed``.

    With ``field`` the error names it instead (``validation: unknown field(s) x``).
    """
    if allowed.issuperset(data):
        return
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        if field is not None:
            raise InvalidRequestError(f"unknown field(s) {', '.join(unknown)}", field=field)
        raise InvalidRequestError(f"{what}: unknown field(s) {', '.join(unknown)}")


def obj(value: Any, field: str) -> Mapping[str, Any]:
    """An object (a mapping), or InvalidRequestError ``<field>: expected an object``."""
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", field=field)
    return value


def flag(value: Any, field: str) -> bool:
    """true or false, or InvalidRequestError naming ``field``."""
    if not isinstance(value, bool):
        raise InvalidRequestError("expected true or false", field=field)
    return value


def integer(value: Any, field: str) -> int:
    """An integer (not a boolean), or InvalidRequestError naming ``field``; range unchecked."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError("expected an integer", field=field)
    return value


def text(value: Any, field: str, *, max_len: int = MAX_NAME, min_len: int = 1) -> str:
    """A string of bounded length, or InvalidRequestError naming ``field``."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"expected a string, got {type(value).__name__}", field=field)
    if not min_len <= len(value) <= max_len:
        raise InvalidRequestError(f"length must be {min_len}..{max_len}", field=field)
    if "\x00" in value:
        raise InvalidRequestError("must not contain NUL characters", field=field)
    return value


def opt_text(value: Any, field: str, max_len: int = MAX_NAME) -> str | None:
    """None, or ``text(value, field)``."""
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


def opt_bool(value: Any, field: str) -> bool | None:
    """None, or ``flag(value, field)``."""
    return None if value is None else flag(value, field)


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
    created_by = opt_text(value, "createdBy")
    if created_by is not None and created_by.strip().casefold() == DAEMON_ACTOR:
        raise InvalidRequestError(
            f"{DAEMON_ACTOR!r} is reserved for the store's own work", field="createdBy"
        )
    return created_by


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create: everything but the snapshot encoding, which the writer does."""

    VERB: ClassVar[str] = "create"

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
    checkpoint_id: str | None = None  # given by the client (``id``), else assigned when encoded

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
        data = wire_keys(data)
        reject_unknown(data, _CREATE_FIELDS, "create")
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
            compressed=opt_bool(data.get("compressed"), "compressed"),
            encrypted=opt_bool(data.get("encrypted"), "encrypted"),
            retention_expires_at=_opt_time(data.get("retentionExpiresAt"), "retentionExpiresAt"),
            restored_from=opt_text(data.get("restoredFrom"), "restoredFrom"),
            checkpoint_id=None if data.get("id") is None else given_id(data["id"]),
        )

    def to_wire(self) -> dict[str, Any]:
        """The create body: what ``from_wire`` reads back as this same request."""
        body: dict[str, Any] = {
            "name": self.name,
            "sessionId": self.session_id,
            "snapshot": self.snapshot,
            "branches": list(self.branches),
            "metadata": self.metadata,
        }
        optional = {
            "timestamp": _wire_time(self.timestamp),
            "createdBy": self.created_by,
            "size": self.size,
            "checksum": self.checksum,
            "compressed": self.compressed,
            "encrypted": self.encrypted,
            "retentionExpiresAt": _wire_time(self.retention_expires_at),
            "restoredFrom": self.restored_from,
            "id": self.checkpoint_id,
        }
        body.update((key, value) for key, value in optional.items() if value is not None)
        return body


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

    VERB: ClassVar[str] = "update"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> UpdateRequest:
        """The update body: ``{id, changes, expectedVersion?}``."""
        reject_unknown(data, _UPDATE_CALL, "update")
        changes = obj(data.get("changes"), "changes")
        version = data.get("expectedVersion")
        if version is not None:
            integer(version, "expectedVersion")
        return cls.of(text(data.get("id"), "id"), changes, version)

    def to_wire(self) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if self.name is not None:
            changes["name"] = self.name
        if self.metadata is not None:
            changes["metadata"] = self.metadata
        if self.branches is not None:
            changes["branches"] = list(self.branches)
        if self.clear_retention:
            changes["retentionExpiresAt"] = None
        elif self.retention_expires_at is not None:
            changes["retentionExpiresAt"] = format_timestamp(self.retention_expires_at)
        body: dict[str, Any] = {"id": self.checkpoint_id, "changes": changes}
        if self.expected_version is not None:
            body["expectedVersion"] = self.expected_version
        return body

    @classmethod
    def of(cls, checkpoint_id: Any, changes: Any, expected_version: Any = None) -> UpdateRequest:
        """Validate an update; snapshots are immutable, so changing one is an error.

        Raises:
            InvalidRequestError: an unknown field, a snapshot change, nothing to change.
        """
        if not isinstance(changes, Mapping):
            raise InvalidRequestError("expected an object", field="changes")
        changes = wire_keys(changes)
        if "snapshot" in changes:
            raise InvalidRequestError("snapshots are immutable; create a new checkpoint")
        reject_unknown(changes, _UPDATE_FIELDS, "update")
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


def _wire_time(value: Any) -> Any:
    """A datetime as the wire's ISO-8601 UTC text; anything else as it is."""
    return format_timestamp(value) if isinstance(value, datetime) else value


# -- one request type per verb of the protocol ------------------------------------------------


class WireRequest(Protocol):
    """What every verb's request type offers: its endpoint name and its body."""

    VERB: ClassVar[str]

    def to_wire(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class CreateBatchRequest:
    """``{checkpoints: [create, ...]}``: 1..MAX_BATCH creates, no id given twice."""

    items: tuple[CreateRequest, ...]

    VERB: ClassVar[str] = "create_batch"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CreateBatchRequest:
        reject_unknown(data, frozenset({"checkpoints"}), cls.VERB)
        return cls.of(data.get("checkpoints"))

    @classmethod
    def of(cls, items: Any) -> CreateBatchRequest:
        """The batch of a call: a list of create mappings."""
        requests = tuple(
            CreateRequest.from_wire(request_mapping(item, {}, "create"))
            for item in batch_items(items)
        )
        distinct_ids(requests)
        return cls(requests)

    def to_wire(self) -> dict[str, Any]:
        return {"checkpoints": [item.to_wire() for item in self.items]}


def _one_id(data: Mapping[str, Any], verb: str) -> str:
    reject_unknown(data, _ID_ONLY, verb)
    return text(data.get("id"), "id")


_ID_ONLY = frozenset({"id"})


@dataclass(frozen=True, slots=True)
class GetRequest:
    checkpoint_id: str
    include_snapshot: bool = True

    VERB: ClassVar[str] = "get"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> GetRequest:
        reject_unknown(data, frozenset({"id", "includeSnapshot"}), cls.VERB)
        include = flag(data.get("includeSnapshot", True), "includeSnapshot")
        return cls(text(data.get("id"), "id"), include)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.checkpoint_id, "includeSnapshot": self.include_snapshot}


_LIST_OPTIONS = frozenset({"where", "params", "orderBy", "pagination", "includeSnapshot"})
_LIST_KEYWORDS = frozenset({"where", "params", "order_by", "page", "page_size", "include_snapshot"})


@dataclass(frozen=True, slots=True)
class ListOptions:
    """A list's filter, order and page; the store checks ``where``, ``order_by`` and the page."""

    where: Any = None
    params: Sequence[Any] = ()
    order_by: Any = None
    page: Any = 1
    page_size: Any = DEFAULT_PAGE_SIZE
    include_snapshot: bool = False

    @classmethod
    def from_wire(cls, options: Mapping[str, Any]) -> ListOptions:
        """The original API's options mapping (``pagination``, ``orderBy``...)."""
        reject_unknown(options, _LIST_OPTIONS, "list")
        pagination = obj(options.get("pagination") or {}, "pagination")
        return cls(
            where=options.get("where"),
            params=_params(options.get("params")),
            order_by=options.get("orderBy"),
            page=pagination.get("page", 1),
            page_size=pagination.get("pageSize", DEFAULT_PAGE_SIZE),
            include_snapshot=flag(options.get("includeSnapshot", False), "includeSnapshot"),
        )

    @classmethod
    def of(cls, options: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> ListOptions:
        """The options of a list call: one mapping or keyword arguments, not both."""
        if options is not None and kwargs:
            raise InvalidRequestError("pass an options mapping or keyword arguments, not both")
        if options is not None:
            return cls.from_wire(obj(options, "options"))
        reject_unknown(kwargs, _LIST_KEYWORDS, "list")
        return cls(
            where=kwargs.get("where"),
            params=_params(kwargs.get("params")),
            order_by=kwargs.get("order_by"),
            page=kwargs.get("page", 1),
            page_size=kwargs.get("page_size", DEFAULT_PAGE_SIZE),
            include_snapshot=flag(kwargs.get("include_snapshot", False), "includeSnapshot"),
        )

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "pagination": {"page": self.page, "pageSize": self.page_size},
            "includeSnapshot": self.include_snapshot,
        }
        if self.where is not None:
            body["where"] = self.where
        if self.params:
            body["params"] = [_wire_time(param) for param in self.params]
        if self.order_by is not None:
            body["orderBy"] = _order_by(self.order_by)
        return body


def _params(value: Any) -> Sequence[Any]:
    """A filter's ``params``: a list (or tuple) of values, none when absent."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequestError("must be a list of values", field="params")
    return value


def _order_by(order_by: Any) -> Any:
    """``[("timestamp", "desc")]`` as the wire's ``[{"field", "direction"}]``; else as given."""
    if isinstance(order_by, list | tuple):
        return [
            {"field": item[0], "direction": item[1]}
            if isinstance(item, tuple | list) and len(item) == 2
            else item
            for item in order_by
        ]
    return order_by


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A list by session (``sessionId``) or by feature (``feature``): exactly one of them."""

    session_id: str | None
    feature: str | None
    options: ListOptions = field(default_factory=ListOptions)

    VERB: ClassVar[str] = "list"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ListRequest:
        if ("sessionId" in data) == ("feature" in data):
            raise InvalidRequestError("list: give exactly one of sessionId and feature")
        session_id = text(data["sessionId"], "sessionId") if "sessionId" in data else None
        feature = text(data["feature"], "feature") if "feature" in data else None
        rest = {k: v for k, v in data.items() if k not in {"sessionId", "feature"}}
        return cls(session_id, feature, ListOptions.from_wire(rest))

    def to_wire(self) -> dict[str, Any]:
        if self.feature is None:
            return {"sessionId": self.session_id, **self.options.to_wire()}
        return {"feature": self.feature, **self.options.to_wire()}


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    checkpoint_id: str

    VERB: ClassVar[str] = "delete"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> DeleteRequest:
        return cls(_one_id(data, cls.VERB))

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.checkpoint_id}


@dataclass(frozen=True, slots=True)
class ValidateRequest:
    checkpoint_id: str

    VERB: ClassVar[str] = "validate"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ValidateRequest:
        return cls(_one_id(data, cls.VERB))

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.checkpoint_id}


def _in_process_only() -> InvalidRequestError:
    return InvalidRequestError("a custom resolver is in-process only", field="customResolver")


@dataclass(frozen=True, slots=True)
class RestoreCheckpointRequest:
    """A restore: the checkpoint and the original API's options, checked by the store.

    A custom resolver is a Python callable: in-process only, refused here.
    """

    checkpoint_id: str
    options: Mapping[str, Any] = field(default_factory=dict)

    VERB: ClassVar[str] = "restore"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RestoreCheckpointRequest:
        options = {k: v for k, v in data.items() if k != "id"}
        resolution = options.get("conflictResolution")
        if isinstance(resolution, Mapping) and "customResolver" in resolution:
            raise _in_process_only()
        return cls(text(data.get("id"), "id"), options)

    @classmethod
    def of(
        cls,
        checkpoint_id: str,
        options: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
        *,
        custom_resolver: object = None,
    ) -> RestoreCheckpointRequest:
        """A call's restore: an options mapping (``timeout`` in milliseconds) or keywords
        (``timeout`` in seconds)."""
        if custom_resolver is not None:
            raise _in_process_only()
        if options is not None:
            if kwargs:
                raise InvalidRequestError("pass an options mapping or keywords, not both")
            body = dict(obj(options, "options"))
        else:
            body = wire_keys(kwargs)
            timeout = body.get("timeout")
            if isinstance(timeout, int | float) and not isinstance(timeout, bool):
                body["timeout"] = timeout * 1000  # the wire's milliseconds
        return cls.from_wire({**body, "id": checkpoint_id})

    def to_wire(self) -> dict[str, Any]:
        return {**self.options, "id": self.checkpoint_id}


@dataclass(frozen=True, slots=True)
class SearchCheckpointsRequest:
    """A search: ``query``, ``limit``, ``filters``, ``sorting``, ``pagination``, checked by the
    store (``reads.search.SearchRequest``)."""

    fields: Mapping[str, Any]

    VERB: ClassVar[str] = "search"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SearchCheckpointsRequest:
        return cls(wire_keys(obj(data, "search")))

    @classmethod
    def of(
        cls, query: str | Mapping[str, Any] | None, limit: int | None, kwargs: Mapping[str, Any]
    ) -> SearchCheckpointsRequest:
        """A call's search: ``(text, limit)``, keywords, or the original API's mapping."""
        if isinstance(query, str) or query is None:
            data = wire_keys(kwargs)
            if query is not None:
                data["query"] = query
        else:
            data = request_mapping(query, kwargs, "search")
        if limit is not None:
            data["limit"] = limit
        return cls(data)

    def to_wire(self) -> dict[str, Any]:
        data = dict(self.fields)
        filters = data.get("filters")
        if isinstance(filters, Mapping) and isinstance(filters.get("dateRange"), Mapping):
            dates = {k: _wire_time(v) for k, v in filters["dateRange"].items()}
            data["filters"] = {**filters, "dateRange": dates}
        return data


@dataclass(frozen=True, slots=True)
class LineageRequest:
    """A lineage page; the store checks ``limit`` (1..MAX_LINEAGE) and ``offset``."""

    checkpoint_id: str
    limit: Any = MAX_LINEAGE
    offset: Any = 0

    VERB: ClassVar[str] = "lineage"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> LineageRequest:
        reject_unknown(data, frozenset({"id", "limit", "offset"}), cls.VERB)
        checkpoint_id = text(data.get("id"), "id")
        return cls(checkpoint_id, data.get("limit", MAX_LINEAGE), data.get("offset", 0))

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.checkpoint_id, "limit": self.limit, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class DiffRequest:
    before_id: str
    after_id: str

    VERB: ClassVar[str] = "diff"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> DiffRequest:
        reject_unknown(data, frozenset({"from", "to"}), cls.VERB)
        return cls(text(data.get("from"), "from"), text(data.get("to"), "to"))

    def to_wire(self) -> dict[str, Any]:
        return {"from": self.before_id, "to": self.after_id}


@dataclass(frozen=True, slots=True)
class SessionStateRequest:
    session_id: str

    VERB: ClassVar[str] = "session_state"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SessionStateRequest:
        reject_unknown(data, frozenset({"sessionId"}), cls.VERB)
        return cls(text(data.get("sessionId"), "sessionId"))

    def to_wire(self) -> dict[str, Any]:
        return {"sessionId": self.session_id}


@dataclass(frozen=True, slots=True)
class SessionsRequest:
    """A page of sessions; the store checks the page (from 1) and its size (1..1000)."""

    page: Any = 1
    page_size: Any = DEFAULT_PAGE_SIZE

    VERB: ClassVar[str] = "sessions"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SessionsRequest:
        reject_unknown(data, frozenset({"pagination"}), cls.VERB)
        pagination = obj(data.get("pagination", {}), "pagination")
        reject_unknown(pagination, frozenset({"page", "pageSize"}), "sessions pagination")
        return cls(pagination.get("page", 1), pagination.get("pageSize", DEFAULT_PAGE_SIZE))

    def to_wire(self) -> dict[str, Any]:
        return {"pagination": {"page": self.page, "pageSize": self.page_size}}


_HISTORY_FIELDS = frozenset({"checkpointId", "sessionId", "afterSeq", "limit"})


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A history page: events after ``after_seq``, of one checkpoint or session or all."""

    checkpoint_id: Any = None
    session_id: Any = None
    after_seq: Any = 0
    limit: Any = DEFAULT_HISTORY_LIMIT

    VERB: ClassVar[str] = "history"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> HistoryRequest:
        data = wire_keys(obj(data, "history"))
        reject_unknown(data, _HISTORY_FIELDS, cls.VERB)
        return cls(
            checkpoint_id=data.get("checkpointId"),
            session_id=data.get("sessionId"),
            after_seq=data.get("afterSeq", 0),
            limit=data.get("limit", DEFAULT_HISTORY_LIMIT),
        )

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"afterSeq": self.after_seq, "limit": self.limit}
        if self.checkpoint_id is not None:
            body["checkpointId"] = self.checkpoint_id
        if self.session_id is not None:
            body["sessionId"] = self.session_id
        return body


@dataclass(frozen=True, slots=True)
class _NoFields:
    """A verb whose body is ``{}``: any field is unknown."""

    VERB: ClassVar[str]

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Self:
        reject_unknown(data, frozenset(), cls.VERB)
        return cls()

    def to_wire(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class DeleteExpiredRequest(_NoFields):
    VERB: ClassVar[str] = "delete_expired"


@dataclass(frozen=True, slots=True)
class StatsRequest(_NoFields):
    VERB: ClassVar[str] = "stats"


@dataclass(frozen=True, slots=True)
class VerifyRequest(_NoFields):
    VERB: ClassVar[str] = "verify"


@dataclass(frozen=True, slots=True)
class RebuildRequest(_NoFields):
    VERB: ClassVar[str] = "rebuild"


@dataclass(frozen=True, slots=True)
class HealthRequest(_NoFields):
    VERB: ClassVar[str] = "health"


# -- pending writes and whole sessions ---------------------------------------------------------

MAX_WRITES = 1000
"""Pending writes one ``put_writes`` request holds at most."""
MAX_METADATA_VALUES = 1000
"""Values one ``delete_by_metadata`` request matches at most."""
_PUT_WRITES_FIELDS = frozenset({"checkpointId", "taskId", "taskPath", "writes"})
_WRITE_FIELDS = frozenset({"index", "channel", "value"})


@dataclass(frozen=True, slots=True)
class Write:
    """One pending write: its ``index`` (``< 0`` for a special channel), channel and value.

    The value is anything a snapshot may hold, and bytes (over msgpack or in-process); the
    store checks it when it encodes it.
    """

    index: int
    channel: str
    value: Any

    @classmethod
    def from_wire(cls, data: Any, where: str) -> Write:
        """``{index, channel, value}``, or an ``(index, channel, value)`` sequence."""
        if isinstance(data, Write):
            return data
        if isinstance(data, list | tuple) and len(data) == 3:
            data = {"index": data[0], "channel": data[1], "value": data[2]}
        item = obj(data, where)
        reject_unknown(item, _WRITE_FIELDS, "put_writes", field=where)
        if "value" not in item:
            raise InvalidRequestError("is required", field=f"{where}.value")
        index = integer(item.get("index"), f"{where}.index")
        if not -MAX_INT <= index <= MAX_INT:
            raise InvalidRequestError(
                f"expected an integer -{MAX_INT}..{MAX_INT}", field=f"{where}.index"
            )
        return cls(index, text(item.get("channel"), f"{where}.channel"), item["value"])

    def to_wire(self) -> dict[str, Any]:
        return {"index": self.index, "channel": self.channel, "value": self.value}


def _task_path(value: Any) -> str:
    return "" if value is None else text(value, "taskPath", max_len=MAX_TEXT, min_len=0)


@dataclass(frozen=True, slots=True)
class PutWritesRequest:
    """A task's pending writes tied to a checkpoint:
    ``{checkpointId, taskId, taskPath?, writes: [{index, channel, value}]}``."""

    checkpoint_id: str
    task_id: str
    writes: tuple[Write, ...]
    task_path: str = ""

    VERB: ClassVar[str] = "put_writes"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PutWritesRequest:
        data = wire_keys(obj(data, cls.VERB))
        reject_unknown(data, _PUT_WRITES_FIELDS, cls.VERB)
        return cls.of(
            data.get("checkpointId"), data.get("taskId"), data.get("writes"), data.get("taskPath")
        )

    @classmethod
    def of(cls, checkpoint_id: Any, task_id: Any, writes: Any, task_path: Any = "") -> Self:
        """Validate a call's arguments (``task_path`` None is the empty path)."""
        if isinstance(writes, str | bytes | Mapping) or not isinstance(writes, Sequence):
            raise InvalidRequestError("expected a list of writes", field="writes")
        if len(writes) > MAX_WRITES:
            raise InvalidRequestError(f"at most {MAX_WRITES} writes", field="writes")
        return cls(
            checkpoint_id=text(checkpoint_id, "checkpointId"),
            task_id=text(task_id, "taskId"),
            writes=tuple(Write.from_wire(item, f"writes[{n}]") for n, item in enumerate(writes)),
            task_path=_task_path(task_path),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "checkpointId": self.checkpoint_id,
            "taskId": self.task_id,
            "taskPath": self.task_path,
            "writes": [write.to_wire() for write in self.writes],
        }


@dataclass(frozen=True, slots=True)
class GetWritesRequest:
    """The pending writes of a checkpoint: ``{checkpointId}``."""

    checkpoint_id: str

    VERB: ClassVar[str] = "get_writes"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> GetWritesRequest:
        data = wire_keys(obj(data, cls.VERB))
        reject_unknown(data, frozenset({"checkpointId"}), cls.VERB)
        return cls(text(data.get("checkpointId"), "checkpointId"))

    def to_wire(self) -> dict[str, Any]:
        return {"checkpointId": self.checkpoint_id}


_COPY_FIELDS = frozenset({"sourceSessionId", "targetSessionId", "ids"})
MAX_COPY_IDS = 100_000
"""Copies' ids one ``copy_session`` request may choose at most."""


@dataclass(frozen=True, slots=True)
class CopySessionRequest:
    """``{sourceSessionId, targetSessionId, ids?}``: every live checkpoint of the source
    becomes a new one in the target. ``ids`` may choose a copy's id (``{sourceId: newId}``,
    each a valid new id); the others get new ids."""

    source_session_id: str
    target_session_id: str
    ids: Mapping[str, str] = field(default_factory=dict)

    VERB: ClassVar[str] = "copy_session"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CopySessionRequest:
        data = wire_keys(obj(data, cls.VERB))
        reject_unknown(data, _COPY_FIELDS, cls.VERB)
        return cls.of(data.get("sourceSessionId"), data.get("targetSessionId"), data.get("ids"))

    @classmethod
    def of(cls, source: Any, target: Any, ids: Any = None) -> CopySessionRequest:
        source = text(source, "sourceSessionId")
        target = text(target, "targetSessionId")
        if source == target:
            raise InvalidRequestError("must differ from sourceSessionId", field="targetSessionId")
        chosen = dict(obj({} if ids is None else ids, "ids"))
        if len(chosen) > MAX_COPY_IDS:
            raise InvalidRequestError(f"at most {MAX_COPY_IDS} ids", field="ids")
        for source_id, new in chosen.items():
            text(source_id, "ids")
            try:
                given_id(new)
            except InvalidRequestError as exc:
                reason = exc.message.removeprefix("id: ")
                raise InvalidRequestError(reason, field=f"ids.{source_id}") from None
        if len(set(chosen.values())) != len(chosen):
            raise InvalidRequestError("gives one new id twice", field="ids")
        return cls(source, target, chosen)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "sourceSessionId": self.source_session_id,
            "targetSessionId": self.target_session_id,
        }
        if self.ids:
            body["ids"] = dict(self.ids)
        return body


@dataclass(frozen=True, slots=True)
class PruneSessionRequest:
    """``{sessionId, keep?}``: keep the ``keep`` (default 1) newest live checkpoints."""

    session_id: str
    keep: int = 1

    VERB: ClassVar[str] = "prune_session"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PruneSessionRequest:
        data = wire_keys(obj(data, cls.VERB))
        reject_unknown(data, frozenset({"sessionId", "keep"}), cls.VERB)
        return cls.of(data.get("sessionId"), data.get("keep", 1))

    @classmethod
    def of(cls, session_id: Any, keep: Any = 1) -> PruneSessionRequest:
        return cls(text(session_id, "sessionId"), non_negative_int(keep, "keep"))

    def to_wire(self) -> dict[str, Any]:
        return {"sessionId": self.session_id, "keep": self.keep}


_SCALARS = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class DeleteByMetadataRequest:
    """``{key, values, sessionId?}``: delete every live checkpoint (of the session, if given)
    whose ``metadata[key]`` equals one of ``values`` (strings, numbers or booleans)."""

    key: str
    values: tuple[str | int | float | bool, ...]
    session_id: str | None = None

    VERB: ClassVar[str] = "delete_by_metadata"

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> DeleteByMetadataRequest:
        data = wire_keys(obj(data, cls.VERB))
        reject_unknown(data, frozenset({"key", "values", "sessionId"}), cls.VERB)
        return cls.of(data.get("key"), data.get("values"), data.get("sessionId"))

    @classmethod
    def of(cls, key: Any, values: Any, session_id: Any = None) -> DeleteByMetadataRequest:
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise InvalidRequestError("expected a list of values", field="values")
        if not 1 <= len(values) <= MAX_METADATA_VALUES:
            raise InvalidRequestError(f"expected 1..{MAX_METADATA_VALUES} values", field="values")
        for n, value in enumerate(values):
            if not isinstance(value, _SCALARS):
                raise InvalidRequestError(
                    "expected a string, number or boolean", field=f"values[{n}]"
                )
            if isinstance(value, str):
                text(value, f"values[{n}]", max_len=MAX_TEXT, min_len=0)
            elif isinstance(value, float) and value - value != 0:
                raise InvalidRequestError("expected a finite number", field=f"values[{n}]")
            elif isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
                raise InvalidRequestError(
                    f"expected an integer -{MAX_INT}..{MAX_INT}", field=f"values[{n}]"
                )
        return cls(
            key=text(key, "key"),
            values=tuple(values),
            session_id=None if session_id is None else text(session_id, "sessionId"),
        )

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": self.key, "values": list(self.values)}
        if self.session_id is not None:
            body["sessionId"] = self.session_id
        return body
