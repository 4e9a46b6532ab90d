"""The values the API returns: frozen dataclasses with snake_case attributes.

Each converts to and from the wire shape (camelCase, ISO-8601 UTC strings) in one place:
``to_wire()`` / ``from_wire()``; ``Checkpoint``'s are derived from the field table
(``checkpointd.fields``), which its attributes follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, overload

from checkpointd import derived
from checkpointd.clock import format_timestamp, parse_timestamp


class Priority(StrEnum):
    """A checkpoint's priority (``metadata.priority``)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint as stored; ``snapshot`` is None when it was not asked for."""

    id: str
    name: str
    session_id: str
    timestamp: datetime
    snapshot: Mapping[str, Any] | None
    branches: list[str]
    metadata: Mapping[str, Any]
    created_by: str | None
    size: int
    stored_size: int
    checksum: str
    compressed: bool
    encrypted: bool
    retention_expires_at: datetime | None
    restored_from: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def priority(self) -> Priority:
        return Priority(self.metadata.get("priority", Priority.NORMAL))

    # Generated from the field table (checkpointd.fields): camelCase keys, ISO-8601 UTC times,
    # ``snapshot`` only when set. A class attribute rather than a def, so a call costs no more
    # than the hand-written method it replaces.
    to_wire = derived.wire_encoder()

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint a wire form describes (``to_wire``'s inverse)."""
        return _checkpoint_from_wire(cls, wire)


_checkpoint_from_wire: Callable[[type[Checkpoint], Mapping[str, Any]], Checkpoint] = (
    derived.wire_decoder()
)


@dataclass(frozen=True, slots=True)
class Page(Sequence[Checkpoint]):
    """One page of checkpoints: a sequence, plus the total count over all pages.

    ``scores`` is set by search: one relevance score per item (higher is better; None when the
    search had no text), in item order.
    """

    items: tuple[Checkpoint, ...]
    total: int
    page: int
    page_size: int
    scores: tuple[float | None, ...] = ()

    @overload
    def __getitem__(self, index: int) -> Checkpoint: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Checkpoint]: ...
    def __getitem__(self, index: int | slice) -> Checkpoint | Sequence[Checkpoint]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.items)

    def to_wire(self) -> dict[str, Any]:
        items = [cp.to_wire() for cp in self.items]
        for item, score in zip(items, self.scores, strict=False):
            item["score"] = score
        return {
            "items": items,
            "total": self.total,
            "page": self.page,
            "pageSize": self.page_size,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Page:
        items = wire["items"]
        scored = bool(items) and all("score" in item for item in items)
        return cls(
            items=tuple(Checkpoint.from_wire(item) for item in items),
            total=wire["total"],
            page=wire["page"],
            page_size=wire["pageSize"],
            scores=tuple(item["score"] for item in items) if scored else (),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log, as ``history`` returns it."""

    seq: int
    id: str
    type: str
    stream: str
    session_id: str
    version: int
    at: datetime
    actor: str | None
    causation: str | None
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "stream": self.stream,
            "sessionId": self.session_id,
            "version": self.version,
            "at": format_timestamp(self.at),
            "actor": self.actor,
            "causation": self.causation,
            "data": dict(self.data),
            "prevHash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Event:
        return cls(
            seq=wire["seq"],
            id=wire["id"],
            type=wire["type"],
            stream=wire["stream"],
            session_id=wire["sessionId"],
            version=wire["version"],
            at=parse_timestamp(wire["at"]),
            actor=wire.get("actor"),
            causation=wire.get("causation"),
            data=wire["data"],
            prev_hash=wire["prevHash"],
            hash=wire["hash"],
        )


@dataclass(frozen=True, slots=True)
class History:
    """A page of events, oldest first; ``next`` is the ``after_seq`` of the next page or None."""

    events: tuple[Event, ...]
    next: int | None

    def to_wire(self) -> dict[str, Any]:
        return {"events": [e.to_wire() for e in self.events], "next": self.next}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> History:
        return cls(tuple(Event.from_wire(e) for e in wire["events"]), wire.get("next"))


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking the event log from its first event (``events.verify``).

    ``events`` counts the events found good (before ``first_bad_seq`` when not ``ok``);
    ``signed_seq`` is the newest signed chain head the log matched (None: none, or no key);
    ``unsigned_tail``, with a key and an intact log, counts the events after it that no signed
    head covers yet (None without a key); ``problem`` says what is wrong when not ``ok``.
    """

    ok: bool
    events: int
    first_bad_seq: int | None
    signed_seq: int | None = None
    unsigned_tail: int | None = None
    problem: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "firstBadSeq": self.first_bad_seq,
            "signedSeq": self.signed_seq,
            "unsignedTail": self.unsigned_tail,
            "problem": self.problem,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> VerifyResult:
        return cls(
            wire["ok"],
            wire["events"],
            wire.get("firstBadSeq"),
            wire.get("signedSeq"),
            wire.get("unsignedTail"),
            wire.get("problem"),
        )


@dataclass(frozen=True, slots=True)
class Lineage:
    """Live checkpoints linked to one checkpoint by parent and restore links, nearest first.

    One page of each list; ``next`` is the ``offset`` of the following page, None once both
    lists are complete.
    """

    ancestors: tuple[Checkpoint, ...] = field(default=())
    descendants: tuple[Checkpoint, ...] = field(default=())
    next: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "ancestors": [cp.to_wire() for cp in self.ancestors],
            "descendants": [cp.to_wire() for cp in self.descendants],
            "next": self.next,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Lineage:
        return cls(
            tuple(Checkpoint.from_wire(c) for c in wire["ancestors"]),
            tuple(Checkpoint.from_wire(c) for c in wire["descendants"]),
            wire.get("next"),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification as published after a commit (``CheckpointClient.notifications``).

    ``type`` is the subject word (``created``, ``updated``, ``deleted``, ``expired``,
    ``restored``); ``seq`` and ``id`` are the event's. For ``restored``, ``checkpoint_id`` is
    the checkpoint restored from, ``session_id`` the target, and ``data`` holds ``state``,
    ``conflicts`` and ``backupCheckpointId``.
    """

    seq: int
    id: str
    type: str
    at: datetime
    checkpoint_id: str
    session_id: str
    data: Mapping[str, Any]

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Notification:
        return cls(
            seq=wire["seq"],
            id=wire["id"],
            type=wire["type"],
            at=parse_timestamp(wire["at"]),
            checkpoint_id=wire["checkpointId"],
            session_id=wire["sessionId"],
            data=wire["data"],
        )
