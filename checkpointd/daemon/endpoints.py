"""The service's endpoints: one function per verb, wire request in, wire result out.

Each takes the manager, the decoded request body (camelCase) and the request's ``Nats-Msg-Id``
(applied by the writing verbs, ignored by the reading ones), and returns the result object
exactly as sent. Each is the same three steps: the verb's request type reads the body
(``from_wire``, raising InvalidRequestError for a wrong field, as in-process), the manager does
the work, and the result goes back as ``to_wire()``.

The writes that take a body (create, create_batch, update) hand the manager that body as it
was received, once it has been read: an idempotency key's digest covers the request as its
client sent it, whichever version of the client or the daemon a retry meets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from checkpointd.errors import NotFoundError
from checkpointd.manager import CheckpointManager
from checkpointd.requests import (
    CopySessionRequest,
    CreateBatchRequest,
    CreateRequest,
    DeleteByMetadataRequest,
    DeleteExpiredRequest,
    DeleteRequest,
    DiffRequest,
    GetRequest,
    GetWritesRequest,
    HealthRequest,
    HistoryRequest,
    LineageRequest,
    ListRequest,
    PruneSessionRequest,
    PutWritesRequest,
    RebuildRequest,
    RestoreCheckpointRequest,
    SearchCheckpointsRequest,
    SessionsRequest,
    SessionStateRequest,
    StatsRequest,
    UpdateRequest,
    ValidateRequest,
    VerifyRequest,
)

Body = dict[str, Any]
Endpoint = Callable[[CheckpointManager, Body, str | None], Awaitable[Mapping[str, Any]]]


async def create(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    CreateRequest.from_wire(data)
    # The snapshot is not echoed back: the caller has it (CheckpointClient fills it in).
    wire = (await m.create(data, idempotency_key=key)).to_wire()
    wire.pop("snapshot", None)
    return wire


async def create_batch(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    CreateBatchRequest.from_wire(data)
    created = await m.create_batch(data["checkpoints"], idempotency_key=key)
    return {"checkpoints": [replace(cp, snapshot=None).to_wire() for cp in created]}


async def get(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = GetRequest.from_wire(data)
    found = await m.get_checkpoint(request.checkpoint_id, include_snapshot=request.include_snapshot)
    if found is None:
        raise NotFoundError("checkpoint", request.checkpoint_id)
    return found.to_wire()


async def list_(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = ListRequest.from_wire(data)
    options = request.options.to_wire()
    if request.session_id is not None:
        page = await m.get_checkpoints_by_session(request.session_id, options)
    else:
        assert request.feature is not None
        page = await m.get_checkpoints_by_feature(request.feature, options)
    return page.to_wire()


async def update(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    request = UpdateRequest.from_wire(data)
    checkpoint = await m.update_checkpoint(
        request.checkpoint_id,
        data["changes"],
        expected_version=request.expected_version,
        idempotency_key=key,
    )
    return checkpoint.to_wire()


async def delete(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    request = DeleteRequest.from_wire(data)
    return {"deleted": await m.delete_checkpoint(request.checkpoint_id, idempotency_key=key)}


async def delete_expired(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    DeleteExpiredRequest.from_wire(data)
    return {"deleted": await m.delete_expired_checkpoints(idempotency_key=key)}


async def restore(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    request = RestoreCheckpointRequest.from_wire(data)
    result = await m.restore_checkpoint(request.checkpoint_id, request.options, idempotency_key=key)
    return result.to_wire()


async def search(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = SearchCheckpointsRequest.from_wire(data)
    return (await m.search_checkpoints(request.to_wire())).to_wire()


async def stats(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    StatsRequest.from_wire(data)
    return (await m.get_checkpoint_stats()).to_wire()


async def validate(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = ValidateRequest.from_wire(data)
    return (await m.validate_checkpoint(request.checkpoint_id)).to_wire()


async def lineage(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = LineageRequest.from_wire(data)
    found = await m.get_lineage(request.checkpoint_id, limit=request.limit, offset=request.offset)
    return found.to_wire()


async def diff(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = DiffRequest.from_wire(data)
    return (await m.diff_checkpoints(request.before_id, request.after_id)).to_wire()


async def session_state(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = SessionStateRequest.from_wire(data)
    return (await m.get_session_state(request.session_id)).to_wire()


async def sessions(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = SessionsRequest.from_wire(data)
    return (await m.get_sessions(page=request.page, page_size=request.page_size)).to_wire()


async def history(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = HistoryRequest.from_wire(data)
    return (await m.history(request.to_wire())).to_wire()


async def verify(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    VerifyRequest.from_wire(data)
    return (await m.verify_log()).to_wire()


async def rebuild(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    RebuildRequest.from_wire(data)
    return {"events": await m.rebuild()}


async def put_writes(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    request = PutWritesRequest.from_wire(data)
    result = await m.put_writes(
        request.checkpoint_id,
        request.task_id,
        request.writes,
        request.task_path,
        idempotency_key=key,
    )
    return result.to_wire()


async def get_writes(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    request = GetWritesRequest.from_wire(data)
    found = await m.get_writes(request.checkpoint_id)
    return {"writes": [write.to_wire() for write in found]}


async def copy_session(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    request = CopySessionRequest.from_wire(data)
    result = await m.copy_session(
        request.source_session_id,
        request.target_session_id,
        ids=request.ids,
        idempotency_key=key,
    )
    return result.to_wire()


async def prune_session(m: CheckpointManager, data: Body, key: str | None) -> Mapping[str, Any]:
    request = PruneSessionRequest.from_wire(data)
    deleted = await m.prune_session(request.session_id, request.keep, idempotency_key=key)
    return {"deleted": deleted}


async def delete_by_metadata(
    m: CheckpointManager, data: Body, key: str | None
) -> Mapping[str, Any]:
    request = DeleteByMetadataRequest.from_wire(data)
    deleted = await m.delete_by_metadata(
        request.key, request.values, request.session_id, idempotency_key=key
    )
    return {"deleted": deleted}


async def health(m: CheckpointManager, data: Body, _: str | None) -> Mapping[str, Any]:
    HealthRequest.from_wire(data)
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
    "put_writes": put_writes,
    "get_writes": get_writes,
    "copy_session": copy_session,
    "prune_session": prune_session,
    "delete_by_metadata": delete_by_metadata,
}
"""Every operation of the wire protocol (docs/protocol.md), by endpoint name."""

WRITES = frozenset(
    {
        "create",
        "create_batch",
        "update",
        "delete",
        "delete_expired",
        "restore",
        "put_writes",
        "copy_session",
        "prune_session",
        "delete_by_metadata",
    }
)
"""The verbs a ``Nats-Msg-Id`` makes idempotent."""
