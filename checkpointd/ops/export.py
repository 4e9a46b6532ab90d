"""The log as JSON Lines for an auditor (``checkpointd export``).

An export is one JSON object per line, UTF-8:

- first ``{"checkpointdExport": 1, "storeId", "afterSeq", "headSeq", "exportedAt",
  "snapshots"}``;
- one line per event after ``afterSeq``, in ``seq`` order: ``seq``, ``id``, ``type``,
  ``stream``, ``sessionId``, ``version``, ``at``, ``actor``, ``causation`` exactly as stored,
  ``data`` (the event's data as JSON, for reading; bytes in it as base64 text),
  ``dataMsgpack`` (base64 of the stored msgpack bytes, which the hash covers), ``prevHash`` and
  ``hash`` (hex);
- after an event, ``{"signedHead": {"seq", "hash", "keyId", "at", "mac"}}`` for each signed
  chain head of its ``seq`` (``events.signing``);
- with snapshots asked for, after a ``checkpoint.created`` event whose snapshot is still stored
  (a deleted or expired checkpoint's is not), ``{"snapshot": {"seq", "checkpointId", "value"}}``
  with the snapshot as JSON, or ``"error"`` instead of ``value`` when it cannot be opened here
  (its key is not configured);
- last ``{"end": {"events", "lastSeq", "lastHash"}}``, so a cut-off file is told from a whole one.

``checkpointd.ops.audit`` checks such a file without the database.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import msgpack

from checkpointd.clock import format_timestamp
from checkpointd.errors import CheckpointError, InvalidRequestError
from checkpointd.events import signing, store
from checkpointd.events.signing import SignedHead
from checkpointd.events.types import EventRecord, EventType
from checkpointd.snapshots import SnapshotCodec
from checkpointd.storage.sqlite import translate

FORMAT = 1
Progress = Callable[[int], None]
PROGRESS_EVERY = 10_000


@dataclass(frozen=True, slots=True)
class Exported:
    """What an export wrote: the events after ``after_seq`` up to ``last_seq``."""

    after_seq: int
    last_seq: int
    events: int
    snapshots: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "afterSeq": self.after_seq,
            "lastSeq": self.last_seq,
            "events": self.events,
            "snapshots": self.snapshots,
        }


def export(
    conn: sqlite3.Connection,
    out: IO[bytes],
    *,
    after_seq: int = 0,
    codec: SnapshotCodec | None = None,
    progress: Progress | None = None,
) -> Exported:
    """Write the events after ``after_seq`` to ``out`` as the module docstring says.

    ``conn`` is a read-only connection to the log in autocommit mode; the export reads one
    snapshot of it (a writer may go on meanwhile). ``codec`` given: the snapshots are exported
    too. ``progress(events_so_far)`` is called every 10,000 events.

    Raises:
        InvalidRequestError: ``after_seq`` is negative.
        StorageError, IntegrityError: the log cannot be read.
    """
    if after_seq < 0:
        raise InvalidRequestError("must be 0 or more", field="--after-seq")
    try:
        conn.execute("BEGIN")
        try:
            return _Writer(conn, out, codec, progress).run(after_seq)
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise translate(exc) from exc


class _Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        out: IO[bytes],
        codec: SnapshotCodec | None,
        progress: Progress | None,
    ) -> None:
        self._conn, self._out, self._codec, self._progress = conn, out, codec, progress

    def run(self, after_seq: int) -> Exported:
        head, _ = store.head(self._conn)
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        self._line(
            {
                "checkpointdExport": FORMAT,
                "storeId": None if row is None else str(row[0]),
                "afterSeq": after_seq,
                "headSeq": head,
                "exportedAt": format_timestamp(datetime.now(UTC)),
                "snapshots": self._codec is not None,
            }
        )
        heads = _by_seq(signing.scan(self._conn), after_seq)
        events = snapshots = 0
        last_seq, last_hash = after_seq, None
        for record in store.scan(self._conn, after_seq):
            if record.seq > head:  # one read transaction: cannot happen, but never past it
                break
            self._line(event_line(record))
            for signed in heads.pop(record.seq, ()):
                self._line({"signedHead": _head_wire(signed)})
            if self._codec is not None and record.type == EventType.CREATED:
                snapshots += self._snapshot(record)
            events += 1
            last_seq, last_hash = record.seq, record.hash
            if self._progress is not None and events % PROGRESS_EVERY == 0:
                self._progress(events)
        end = {"events": events, "lastSeq": last_seq, "lastHash": _hex(last_hash)}
        self._line({"end": end})
        return Exported(after_seq, last_seq, events, snapshots)

    def _snapshot(self, record: EventRecord) -> int:
        assert self._codec is not None
        row = self._conn.execute("SELECT data FROM blobs WHERE seq = ?", (record.seq,)).fetchone()
        if row is None:
            return 0  # deleted or expired since: its bytes are gone from the log
        line: dict[str, Any] = {"seq": record.seq, "checkpointId": record.stream}
        recorded, size = record.checksum_and_size()
        try:
            line["value"] = self._codec.decode(
                record.stream,
                bytes(row[0]),
                expected_checksum=recorded if isinstance(recorded, str) else None,
                expected_size=size if isinstance(size, int) else None,
            )
        except CheckpointError as exc:
            line["error"] = exc.message
        self._line({"snapshot": line})
        return 1

    def _line(self, value: dict[str, Any]) -> None:
        self._out.write(_dumps(value).encode("utf-8") + b"\n")


def event_line(record: EventRecord) -> dict[str, Any]:
    """An event as an export line: the stored fields, the data as JSON and as stored."""
    return {
        "seq": record.seq,
        "id": record.id,
        "type": record.type,
        "stream": record.stream,
        "sessionId": record.session_id,
        "version": record.version,
        "at": record.at,
        "actor": record.actor,
        "causation": record.causation,
        "data": json_view(record.data),
        "dataMsgpack": base64.b64encode(record.data).decode("ascii"),
        "prevHash": record.prev_hash.hex(),
        "hash": record.hash.hex(),
    }


def _by_seq(heads: Iterator[SignedHead], after_seq: int) -> dict[int, list[SignedHead]]:
    grouped: dict[int, list[SignedHead]] = {}
    for signed in heads:
        if signed.seq > after_seq:
            grouped.setdefault(signed.seq, []).append(signed)
    return grouped


def _head_wire(signed: SignedHead) -> dict[str, Any]:
    return {
        "seq": signed.seq,
        "hash": signed.hash.hex(),
        "keyId": signed.key_id,
        "at": signed.at,
        "mac": signed.mac.hex(),
    }


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _bytes_as_text(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON: {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_bytes_as_text)


def json_view(data: bytes) -> Any:
    """The event data as JSON would carry it (bytes as base64 text)."""
    return json.loads(_dumps(msgpack.unpackb(data, raw=False)))
