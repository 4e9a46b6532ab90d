"""Idempotency keys: a keyed command takes effect once; a retry gets the first reply back.

A key (NATS ``Nats-Msg-Id``, or ``idempotency_key=`` in Python) is stored with a digest of its
request and the reply, in the transaction of the events the command appended: either both the
effect and the key are durable, or neither. The writer looks the key up before running the
command, inside the same transaction, so concurrent duplicates (even in one group) run once.

A create's reply is not stored: a retry renders it again from the create event the key points
to, which holds every field of it. Other replies are stored without snapshot or state values
(those can be large, are encrypted at rest elsewhere, and must go when a delete removes them).
The caller re-attaches them: a create's snapshot from the identical request, a restore's state,
conflicts and warnings from the blob row its event stored (``checkpointd.restore_details``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import msgpack

from checkpointd.clock import format_timestamp
from checkpointd.errors import InvalidRequestError

MAX_KEY_LENGTH = 256
RENDER_FROM_EVENT = b""
"""The stored reply of a keyed create: none; it is rendered again from the create event at the
key's ``seq`` (every reply stored otherwise is a msgpack map, never empty)."""

Render = Callable[[object], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A command's idempotency key, the digest of its request, and how to render its reply."""

    key: str
    digest: bytes
    render: Render


@dataclass(frozen=True, slots=True)
class Replayed:
    """The stored reply of an earlier command with the same key and request (wire shape)."""

    reply: Mapping[str, Any]


def keyed(key: str | None, operation: str, request: Any, render: Render) -> Idempotency | None:
    """An Idempotency for ``key`` (None: the command is not keyed).

    The digest covers the operation and the decoded request, so the same key reused for a
    different request is detected. Raises InvalidRequestError for a malformed key.
    """
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        reason = f"must be a string of 1..{MAX_KEY_LENGTH} characters"
        raise InvalidRequestError(reason, field="idempotencyKey")
    return Idempotency(key, request_digest(operation, request), render)


def request_digest(operation: str, request: Any) -> bytes:
    """sha256 over the operation and the request as msgpack (map order as given)."""
    packed = msgpack.packb([operation, request], default=_plain, use_bin_type=True)
    return hashlib.sha256(packed).digest()


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
