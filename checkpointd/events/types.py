"""Event types and the stored event record, with the hash that chains it to its predecessor.

To *seal* a record is to chain it: ``hash = sha256(prev_hash || msgpack([seq, id, type,
stream, session_id, version, at, actor, causation]) || data)`` where ``data`` is the canonical
msgpack of the event's data (``checkpointd.events.domain`` owns its encoding). The first
event's ``prev_hash`` is 32 zero bytes. Changing any stored byte of any event breaks the chain
from that event on, which ``verify_log`` reports as the first bad ``seq``. (Snapshots are
*encoded* and *encrypted*, never sealed: the word means this chaining only.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from checkpointd.clock import parse_timestamp
from checkpointd.models import Event

GENESIS_HASH = bytes(32)


class EventType(StrEnum):
    CREATED = "checkpoint.created"
    UPDATED = "checkpoint.updated"
    DELETED = "checkpoint.deleted"
    EXPIRED = "checkpoint.expired"
    RESTORED = "checkpoint.restored"
    WRITES = "checkpoint.writes"

    @property
    def word(self) -> str:
        """The subject word used in notifications (``created``, ``restored``...)."""
        return self.value.rsplit(".", 1)[1]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as stored: ``at`` as the stored text, ``data`` as canonical msgpack bytes."""

    seq: int
    id: str
    type: str
    stream: str
    session_id: str
    version: int
    at: str
    actor: str | None
    causation: str | None
    data: bytes
    prev_hash: bytes
    hash: bytes

    def payload(self) -> dict[str, Any]:
        """The event data as stored, decoded to plain values (``events.domain.decode`` gives the
        typed event)."""
        value: dict[str, Any] = msgpack.unpackb(self.data, raw=False)
        return value

    def checksum_and_size(self) -> tuple[Any, Any]:
        """The ``checksum`` and ``size`` the data records (None where missing or undecodable)."""
        try:
            data = self.payload()
        except (ValueError, TypeError, msgpack.UnpackException):
            return None, None
        return (data.get("checksum"), data.get("size")) if isinstance(data, dict) else (None, None)

    def to_model(self) -> Event:
        return Event(
            seq=self.seq,
            id=self.id,
            type=self.type,
            stream=self.stream,
            session_id=self.session_id,
            version=self.version,
            at=parse_timestamp(self.at),
            actor=self.actor,
            causation=self.causation,
            data=self.payload(),
            prev_hash=self.prev_hash.hex(),
            hash=self.hash.hex(),
        )

    def expected_hash(self) -> bytes:
        """The hash this record should carry given its fields and ``prev_hash``."""
        header = [self.seq, self.id, self.type, self.stream, self.session_id, self.version]
        header += [self.at, self.actor, self.causation]
        return chain_hash(self.prev_hash, header, self.data)


def chain_hash(prev_hash: bytes, header: list[Any], data: bytes) -> bytes:
    return hashlib.sha256(prev_hash + msgpack.packb(header, use_bin_type=True) + data).digest()


def seal(
    *,
    seq: int,
    event_id: str,
    type: EventType,
    stream: str,
    session_id: str,
    version: int,
    at: str,
    actor: str | None,
    causation: str | None,
    data: bytes,
    prev_hash: bytes,
) -> EventRecord:
    """Seal a new record: chain it to ``prev_hash`` (its header: the record's first nine fields)."""
    header: list[Any] = [seq, event_id, type.value, stream, session_id, version, at, actor]
    header.append(causation)
    record_hash = chain_hash(prev_hash, header, data)
    return EventRecord(
        seq,
        event_id,
        type.value,
        stream,
        session_id,
        version,
        at,
        actor,
        causation,
        data,
        prev_hash,
        record_hash,
    )
