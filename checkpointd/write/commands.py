"""Commands: what the writer is asked to do. Each becomes zero or more events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from checkpointd.requests import (
    CopySessionRequest,
    CreateRequest,
    DeleteByMetadataRequest,
    PruneSessionRequest,
    PutWritesRequest,
    UpdateRequest,
)
from checkpointd.snapshots import EncodedSnapshot
from checkpointd.write.idempotency import Idempotency


@dataclass(frozen=True, slots=True)
class EncodedCreate:
    """A create request with its snapshot already encoded under its new checkpoint id.

    Small snapshots are encoded on the writer thread (fewer hand-offs of the GIL between the
    event loop and the writer measured faster); big ones are encoded beforehand on a worker
    thread, so that neither the event loop nor the writer stalls on them.
    """

    checkpoint_id: str
    request: CreateRequest
    encoded: EncodedSnapshot


@dataclass(frozen=True, slots=True)
class Context:
    """Who asked and why (stored on every event the command appends), and its idempotency key."""

    actor: str | None = None
    causation: str | None = None
    idempotency: Idempotency | None = None


RETENTION = Context(actor="checkpointd", causation="retention")
EXPIRE_STEP = 500  # checkpoints one expiry step handles at most


@dataclass(frozen=True, slots=True)
class Create:
    item: CreateRequest | EncodedCreate
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class CreateBatch:
    """Atomic: all of the creates commit, or none."""

    items: tuple[CreateRequest | EncodedCreate, ...]
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class Update:
    request: UpdateRequest
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class Delete:
    checkpoint_id: str
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class ExpireDue:
    """Expire the ``candidates`` whose retention ended at or before ``now``.

    The candidates are what the views listed as due (at most ``limit``); the writer checks each
    against the log, so one deleted or changed meanwhile is left alone. ``prior`` counts what
    earlier steps of the same call expired (for the keyed reply, which the last step, the one
    given fewer than ``limit`` candidates, records). Its result is an ``ExpiredStep``.
    """

    now: datetime
    candidates: tuple[str, ...] = ()
    limit: int = EXPIRE_STEP
    prior: int = 0
    context: Context = RETENTION


@dataclass(frozen=True, slots=True)
class ExpiredStep:
    """What one expiry step did: ``expired`` now, ``total`` with the earlier steps'."""

    expired: int
    total: int


@dataclass(frozen=True, slots=True)
class ForgetKeys:
    """Forget the idempotency keys recorded before ``before`` (their retries run again)."""

    before: datetime


@dataclass(frozen=True, slots=True)
class Restore:
    """Put a session at a (merged) state taken from a checkpoint, optionally backing it up first.

    ``expected_session_seq`` is the session's ``last_seq`` when its current state was read, and
    ``session_sources`` the checkpoints that state holds values of; the restore is refused if
    the session moved on since (None: the caller gave the state).
    ``conflicts`` are whole (for the result and the notification); the event keeps their
    paths, and ``details`` (the conflicts and warnings, encoded like the state) their values.
    Its result is the ``RestoreResult`` the caller gets.
    """

    checkpoint_id: str
    target_session_id: str
    strategy: str
    state_id: str
    state: EncodedSnapshot
    conflicts: tuple[Mapping[str, Any], ...]
    backup: EncodedCreate | None
    expected_session_seq: int | None
    session_sources: frozenset[str] = frozenset()
    context: Context = Context()
    notify: bool = True
    merged_state: Mapping[str, Any] = field(default_factory=dict)  # the restore's state
    details: EncodedSnapshot | None = None  # None: no conflicts and no warnings
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PutWrites:
    """Tie a task's pending writes to a live checkpoint (``requests.PutWritesRequest``).

    ``encoded`` is the values' blob when encoded beforehand (a big request), for every write
    of the request; the writer encodes them itself otherwise, or again when it leaves a
    repeated write out. Its result is a ``results.WritesPutResult``.
    """

    request: PutWritesRequest
    encoded: EncodedSnapshot | None = None
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class CopySession:
    """Copy every live checkpoint of a session, with its pending writes, into another.

    Its result is a ``results.SessionCopy``.
    """

    request: CopySessionRequest
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class PruneSession:
    """Delete all but the ``keep`` newest live checkpoints of a session; result: how many."""

    request: PruneSessionRequest
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class DeleteByMetadata:
    """Delete the live checkpoints whose ``metadata[key]`` is one of the request's values.

    ``candidates`` are what the views listed as matching; the writer checks each against the
    log (live, metadata still matching, in the session asked for), as an expiry step does.
    Its result is how many it deleted.
    """

    request: DeleteByMetadataRequest
    candidates: tuple[str, ...] = ()
    context: Context = Context()


Command = (
    Create
    | CreateBatch
    | Update
    | Delete
    | ExpireDue
    | ForgetKeys
    | Restore
    | PutWrites
    | CopySession
    | PruneSession
    | DeleteByMetadata
)
