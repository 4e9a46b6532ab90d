"""The service's endpoints: one function per verb, wire request in, wire result out.

Each takes the manager, the decoded request body (camelCase) and the request's ``Nats-Msg-Id``
(applied by the writing verbs, ignored by the reading ones), and returns the result object
exactly as sent. Request validation is the manager's: a wrong field raises its
InvalidRequestError, as in-process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from checkpointd.errors import InvalidRequestError, NotFoundError
from checkpointd.manager import CheckpointManager
from checkpointd.reads.checkpoints import DEFAULT_PAGE_SIZE
from checkpointd.reads.lineage import MAX_LINEAGE
from checkpointd.requests import text

Body = dict[str, Any]
Endpoint = Callable[[CheckpointManager, Body, str | None], Awaitable[Mapping[str, Any]]]


def _only(data: Body, allowed: set[str], verb: str) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise InvalidRequestError(f"{verb}: unknown field(s) {', '.join(unknown)}")


async def create(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    # The snapshot is not echoed back: the caller has it (CheckpointClient fills it in).
    wire = (await m.create(data, idempotency_key=key)).to_wire()
    wire.pop("snapshot", None)
    return wire


async def create_batch(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    _only(data, {"checkpoints"}, "create_batch")
    created = await m.create_batch(data.get("checkpoints"), idempotency_key=key)  # type: ignore[arg-type]
    return {"checkpoints": [replace(cp, snapshot=None).to_wire() for cp in created]}


async def get(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, {"id", "includeSnapshot"}, "get")
    include = data.get("includeSnapshot", True)
    if not isinstance(include, bool):
        raise InvalidRequestError("expected true or false", field="includeSnapshot")
    checkpoint_id = text(data.get("id"), "id")
    found = await m.get_checkpoint(checkpoint_id, include_snapshot=include)
    if found is None:
        raise NotFoundError("checkpoint", checkpoint_id)
    return found.to_wire()


async def list_(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    options = {k: v for k, v in data.items() if k not in {"sessionId", "feature"}}
    if ("sessionId" in data) == ("feature" in data):
        raise InvalidRequestError("list: give exactly one of sessionId and feature")
    if "sessionId" in data:
        page = await m.get_checkpoints_by_session(data["sessionId"], options)
    else:
        page = await m.get_checkpoints_by_feature(data["feature"], options)
    return page.to_wire()


async def update(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    _only(data, {"id", "changes", "expectedVersion"}, "update")
    changes = data.get("changes")
    if not isinstance(changes, Mapping):
        raise InvalidRequestError("expected an object", field="changes")
    version = data.get("expectedVersion")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise InvalidRequestError("expected an integer", field="expectedVersion")
    checkpoint = await m.update_checkpoint(
        text(data.get("id"), "id"), changes, expected_version=version, idempotency_key=key
    )
    return checkpoint.to_wire()


async def delete(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    _only(data, {"id"}, "delete")
    deleted = await m.delete_checkpoint(text(data.get("id"), "id"), idempotency_key=key)
    return {"deleted": deleted}


async def delete_expired(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    _only(data, set(), "delete_expired")
    return {"deleted": await m.delete_expired_checkpoints(idempotency_key=key)}


async def restore(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    options = {k: v for k, v in data.items() if k != "id"}
    resolution = options.get("conflictResolution")
    if isinstance(resolution, Mapping) and "customResolver" in resolution:
        raise InvalidRequestError("a custom resolver is in-process only", field="customResolver")
    result = await m.restore_checkpoint(text(data.get("id"), "id"), options, idempotency_key=key)
    return result.to_wire()


async def search(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    return (await m.search_checkpoints(data)).to_wire()


async def stats(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, set(), "stats")
    return (await m.get_checkpoint_stats()).to_wire()


async def validate(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, {"id"}, "validate")
    return (await m.validate_checkpoint(text(data.get("id"), "id"))).to_wire()


async def lineage(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, {"id", "limit", "offset"}, "lineage")
    found = await m.get_lineage(
        text(data.get("id"), "id"),
        limit=data.get("limit", MAX_LINEAGE),
        offset=data.get("offset", 0),
    )
    return found.to_wire()


async def diff(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, {"from", "to"}, "diff")
    result = await m.diff_checkpoints(text(data.get("from"), "from"), text(data.get("to"), "to"))
    return result.to_wire()


async def session_state(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, {"sessionId"}, "session_state")
    return (await m.get_session_state(text(data.get("sessionId"), "sessionId"))).to_wire()


async def sessions(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, {"pagination"}, "sessions")
    pagination = data.get("pagination", {})
    if not isinstance(pagination, Mapping):
        raise InvalidRequestError("expected an object", field="pagination")
    _only(dict(pagination), {"page", "pageSize"}, "sessions pagination")
    page = await m.get_sessions(
        page=pagination.get("page", 1), page_size=pagination.get("pageSize", DEFAULT_PAGE_SIZE)
    )
    return page.to_wire()


async def history(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    return (await m.history(data)).to_wire()


async def verify(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, set(), "verify")
    return (await m.verify_log()).to_wire()


async def rebuild(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, set(), "rebuild")
    return {"events": await m.rebuild()}


async def health(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    _only(data, set(), "health")
    last = await m.health()
    return {"lastSeq": last, "viewsSeq": m.views_position}


ENDPOINTS: dict[str, Endpoint] = {
    "create": create,
    "create_batch": create_batch,
    "get": get,
    "list": list_,
    "update": update,
    "delete": delete,
    "delete_expired": delete_expired,
    "restore": restore,
    "search": search,
    "stats": stats,
    "validate": validate,
    "lineage": lineage,
    "diff": diff,
    "session_state": session_state,
    "sessions": sessions,
    "history": history,
    "verify": verify,
    "rebuild": rebuild,
    "health": health,
}
"""Every operation of the wire protocol (docs/protocol.md), by endpoint name."""

WRITES = frozenset({"create", "create_batch", "update", "delete", "delete_expired", "restore"})
"""The verbs a ``Nats-Msg-Id`` makes idempotent."""
