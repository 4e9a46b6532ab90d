"""Idempotency keys: a keyed command takes effect once; a retry gets the first call's result.

A key (NATS ``Nats-Msg-Id``, or ``idempotency_key=`` in Python) is stored with a digest of its
request and the reply, in the transaction of the events the command appended: either both the
effect and the key are durable, or neither. The command handler looks the key up before running
the command, inside the same transaction, so concurrent duplicates (even in one group) run once.

This module is the one place that stores replies and replays them. What is stored is the
result rendered by the command's ``Reply`` (``checkpointd.write.replies``), without snapshot or
state values: those can be large, are encrypted at rest elsewhere, and must go when a delete
removes them. A create's reply is not stored at all: the create event the key points to holds
every field of it. On a retry the handler answers with the stored reply and ``submit`` revives
it, on the event loop, into the result the first call returned (re-attaching a create's
snapshot from the identical request, a restore's state and conflicts from its blob row).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import msgpack

from checkpointd.clock import format_timestamp
from checkpointd.errors import ConflictError, InvalidRequestError
from checkpointd.events import store
from checkpointd.events.types import EventRecord

if TYPE_CHECKING:
    from checkpointd.storage.writer import GroupCommitWriter
    from checkpointd.write.commands import Command

MAX_KEY_LENGTH = 256
RENDER_FROM_EVENT = b""
"""The stored reply of a keyed create: none; it is rendered again from the create event at the
key's ``seq`` (every reply stored otherwise is a msgpack map, never empty)."""

Render = Callable[[object], Mapping[str, Any]]
Revive = Callable[[Mapping[str, Any]], Awaitable[object]]
RenderCreated = Callable[[EventRecord], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Reply:
    """How a keyed command's result is stored under its key, and made whole again.

    ``render`` turns the result into the stored reply (wire shape, no snapshot or state
    values); ``revive`` turns a stored reply back into the result the first call returned.
    """

    render: Render
    revive: Revive


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A command's idempotency key, the digest of its request, and how to keep its reply."""

    key: str
    digest: bytes
    reply: Reply


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The handler's answer to a retried keyed command: the reply its first run stored."""

    reply: Mapping[str, Any]


def keyed(key: str | None, operation: str, request: Any, reply: Reply) -> Idempotency | None:
    """An Idempotency for ``key`` (None: the command is not keyed).

    The digest covers the operation and the decoded request, so the same key reused for a
    different request is detected. Raises InvalidRequestError for a malformed key.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        reason = f"must be a string of 1..{MAX_KEY_LENGTH} characters"
        raise InvalidRequestError(reason, field="idempotencyKey")
    return Idempotency(key, request_digest(operation, request), reply)


def request_digest(operation: str, request: Any) -> bytes:
    """sha256 over the operation and the request as msgpack (map order as given)."""
    packed = msgpack.packb([operation, request], default=_plain, use_bin_type=True)
    return hashlib.sha256(packed).digest()


async def submit(writer: GroupCommitWriter, command: Command) -> object:
    """Run ``command`` on the writer; returns its result, the first call's for a keyed retry.

    Raises the command's error (ConflictError when its key came with another request).
    """
    value = (await writer.submit(command)).value
    if isinstance(value, StoredReply):
        context = getattr(command, "context", None)
        key = None if context is None else context.idempotency
        assert key is not None, "only a keyed command is answered with a stored reply"
        return await key.reply.revive(value.reply)
    return value


async def revive_stored(
    fetch: Callable[[Idempotency], Awaitable[Mapping[str, Any] | None]], key: Idempotency
) -> object | None:
    """The first call's result if ``key`` is already stored (read by ``fetch``), else None.

    For commands that are costly to prepare (a restore): a retry is answered before any work.
    """
    stored = await fetch(key)
    return None if stored is None else await key.reply.revive(stored)


# -- on the writer thread, inside the command's transaction ----------------------------------


def lookup(
    conn: sqlite3.Connection, key: Idempotency, render_created: RenderCreated
) -> StoredReply | None:
    """The reply stored under ``key`` (a create's rendered from its event by
    ``render_created``); None if the key is new. ConflictError if it came with another request.
    """
    found = conn.execute(
        "SELECT digest, seq, reply FROM idempotency WHERE key = ?", (key.key,)
    ).fetchone()
    if found is None:
        return None
    digest, seq, reply = found
    if bytes(digest) != key.digest:
        raise ConflictError(f"message id {key.key!r} was already used for another request")
    if bytes(reply) == RENDER_FROM_EVENT:
        event = store.get(conn, seq)
        assert event is not None, "a create's key points to its event"
        return StoredReply(render_created(event))
    return StoredReply(decode_reply(bytes(reply)))


def record(
    conn: sqlite3.Connection,
    key: Idempotency,
    *,
    seq: int,
    at: datetime,
    value: object,
    from_event: bool,
) -> None:
    """Store the reply to ``value`` under ``key`` (none if ``from_event``: a create's)."""
    reply = RENDER_FROM_EVENT if from_event else encode_reply(key.reply.render(value))
    conn.execute(
        "INSERT INTO idempotency (key, digest, seq, at, reply) VALUES (?, ?, ?, ?, ?)",
        (key.key, key.digest, seq, format_timestamp(at), reply),
    )


def forget(conn: sqlite3.Connection, before: datetime) -> int:
    """Forget the keys recorded before ``before``; returns how many."""
    cursor = conn.execute("DELETE FROM idempotency WHERE at < ?", (format_timestamp(before),))
    return cursor.rowcount


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    return msgpack.packb(reply, use_bin_type=True)  # type: ignore[no-any-return]


def decode_reply(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return repr(value)  # a Python-only value (a resolver): stable within one process
