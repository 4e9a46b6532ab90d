"""A segment: one committed group of the log as one JetStream message (msgpack).

A segment holds the rows the group wrote and removed (``checkpointd.storage.capture``) and
the shapes of their tables; its events are rows of the ``events`` table like any other, which
the copy applying them checks against the hash chain. The stream's first segment
(the genesis) holds instead the store's identity — its id and its KDF salt — which every copy
of the log takes from it, so that all daemons serve one store and can decrypt its snapshots.

A segment must fit in the server's ``max_payload``. Values too big for that (snapshot blobs)
are put in a JetStream object store first and replaced in the row by a reference
(``{"object": name, "sha256": hex, "size": n}``, the name being the sha256 of the bytes, so a
put is idempotent); should the segment still not fit (a very large group of small rows), the
whole body goes to the object store and the message holds only its reference. Nothing here
does I/O: ``plan`` says what to put, ``pack`` and ``unpack`` convert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from checkpointd.errors import IntegrityError
from checkpointd.storage.capture import Change, Table

VERSION = 1
SPILL_AT = 4096
"""Bytes values at least this big may be moved to the object store when a segment is too big."""
_REFERENCE = 64  # the packed size of one reference, about


@dataclass(frozen=True, slots=True)
class Reference:
    """Bytes kept in the object store under ``name``."""

    name: str
    sha256: str
    size: int

    @classmethod
    def of(cls, data: bytes) -> Reference:
        digest = hashlib.sha256(data).hexdigest()
        return cls(digest, digest, len(data))

    def to_wire(self) -> dict[str, Any]:
        return {"object": self.name, "sha256": self.sha256, "size": self.size}

    def check(self, data: bytes) -> bytes:
        """``data`` if it is what the reference names. Raises IntegrityError otherwise."""
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise IntegrityError(f"the stream's object {self.name} does not match its digest")
        return data


@dataclass(frozen=True, slots=True)
class Segment:
    """One group's changes, or (``genesis``) the store's identity."""

    tables: dict[str, Table] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()
    genesis: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"v": VERSION}
        if self.genesis is not None:
            wire["genesis"] = self.genesis
        used = {change.table for change in self.changes}
        wire["tables"] = {n: t.to_wire() for n, t in self.tables.items() if n in used}
        wire["changes"] = [[c.table, c.op, list(c.values)] for c in self.changes]
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Segment:
        if wire.get("v") != VERSION:
            raise IntegrityError(f"a segment of version {wire.get('v')!r} cannot be read")
        tables = {n: Table.from_wire(n, t) for n, t in wire.get("tables", {}).items()}
        changes = tuple(Change(c[0], c[1], tuple(c[2])) for c in wire.get("changes", ()))
        return cls(tables, changes, wire.get("genesis"))


@dataclass(frozen=True, slots=True)
class Packed:
    """A segment ready to publish: the message body and the objects to put before it."""

    body: bytes
    objects: dict[str, bytes]  # name -> bytes


def pack(segment: Segment, budget: int) -> Packed:
    """The message for ``segment``, at most ``budget`` bytes, with what it refers to."""
    wire = segment.to_wire()
    body = _dumps(wire)
    if len(body) <= budget:
        return Packed(body, {})
    objects: dict[str, bytes] = {}
    rows = wire["changes"]
    big = sorted(
        (
            (len(value), r, i)
            for r, row in enumerate(rows)
            for i, value in enumerate(row[2])
            if isinstance(value, bytes) and len(value) >= SPILL_AT
        ),
        reverse=True,
    )
    size = len(body)
    for length, r, i in big:
        if size <= budget:
            break
        data = rows[r][2][i]
        reference = Reference.of(data)
        objects[reference.name] = data
        rows[r][2][i] = reference.to_wire()
        size -= length - _REFERENCE
    body = _dumps(wire)
    if len(body) <= budget:
        return Packed(body, objects)
    reference = Reference.of(body)  # still too big: the whole body goes to the object store
    objects[reference.name] = body
    return Packed(_dumps({"v": VERSION, "body": reference.to_wire()}), objects)


def unpack(body: bytes) -> tuple[dict[str, Any], list[Reference]]:
    """The wire form of a message and the references it holds, to fetch before ``resolve``.

    A message whose body is in the object store is returned as ``{"body": reference}`` with
    that one reference; ``unpack`` the fetched body again.
    """
    try:
        wire = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise IntegrityError("a segment of the stream cannot be decoded") from exc
    if not isinstance(wire, dict):
        raise IntegrityError("a segment of the stream cannot be decoded")
    if "body" in wire:
        return wire, [_reference(wire["body"])]
    references = [
        _reference(value)
        for row in wire.get("changes", ())
        for value in row[2]
        if isinstance(value, dict)
    ]
    return wire, references


def resolve(wire: dict[str, Any], fetched: Mapping[str, bytes]) -> Segment:
    """The segment, its references replaced by the fetched bytes (by object name)."""
    for row in wire.get("changes", ()):
        values = row[2]
        for i, value in enumerate(values):
            if isinstance(value, dict):
                reference = _reference(value)
                values[i] = reference.check(fetched[reference.name])
    return Segment.from_wire(wire)


def _reference(value: Any) -> Reference:
    try:
        return Reference(str(value["object"]), str(value["sha256"]), int(value["size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError("a segment holds a malformed object reference") from exc


def _dumps(wire: Mapping[str, Any]) -> bytes:
    data: bytes = msgpack.packb(wire, use_bin_type=True)
    return data
