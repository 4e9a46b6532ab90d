"""Commands: what the writer is asked to do. Each becomes zero or more events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from checkpointd.requests import CreateRequest, UpdateRequest
from checkpointd.snapshots import EncodedSnapshot


@dataclass(frozen=True, slots=True)
class Sealed:
    """A create request with its snapshot already encoded under its new checkpoint id.

    Encoding happens in the caller, before the writer queue, so the writer thread only writes.
    """

    checkpoint_id: str
    request: CreateRequest
    encoded: EncodedSnapshot


@dataclass(frozen=True, slots=True)
class Context:
    """Who asked and why: stored on every event the command appends."""

    actor: str | None = None
    causation: str | None = None


@dataclass(frozen=True, slots=True)
class Create:
    sealed: Sealed
    context: Context = Context()


@dataclass(frozen=True, slots=True)
class CreateBatch:
    """Atomic: all of the creates commit, or none."""

    sealed: tuple[Sealed, ...]
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
    """Expire up to ``limit`` checkpoints whose retention ended at or before ``now``."""

    now: datetime
    limit: int = 500


Command = Create | CreateBatch | Update | Delete | ExpireDue
