"""This daemon's copy of a log whose truth is a JetStream stream.

Every daemon keeps the log in its own SQLite file, as the embedded store does: that file is the
index the write side's checks read and what the projector tails, so views, reads, verify and
every verb are unchanged. Here it is a disposable copy of the stream, kept in step two ways:

- the writer (the lease holder) ships each group before its COMMIT: ``StreamReplica.publish``
  runs on the writer thread after the commands wrote their rows, packs them into a segment,
  appends it fenced on the last segment applied here and waits for the acknowledgement; only
  then does the group commit locally and its callers get their replies. A refused append, a
  missing acknowledgement or a lease that has run out (by this process's own monotonic clock;
  it then does not even try) raise ``ReplicationError``: the group is rolled back, nothing of
  it is acknowledged, and the copy catches up from the stream.
- every other daemon (and a new writer, before it takes writes) applies the stream's segments
  in order (``apply_segments``): the rows as shipped, each event checked against the hash
  chain, and the last segment applied recorded with them in one transaction.

The copy records, in its ``meta`` table: ``jetstream_segment`` (the last segment applied) and
``jetstream_stream`` (the stream it copies). The store's id and KDF salt come from the stream's
first segment (``checkpointd.storage.genesis``), so every copy is the same store.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from checkpointd.errors import IntegrityError, UnavailableError, WriterMovedError
from checkpointd.events import store
from checkpointd.events.types import EventRecord
from checkpointd.storage import capture
from checkpointd.storage.jetstream import APPEND_TIMEOUT, FencedError, JetStreamLog
from checkpointd.storage.segment import Segment, pack, resolve, unpack

if TYPE_CHECKING:
    from checkpointd.storage.writer import GroupCommitWriter
    from checkpointd.write.handler import CommandHandler

log = structlog.get_logger("checkpointd.replica")

SEGMENT_KEY = "jetstream_segment"
STREAM_KEY = "jetstream_stream"
_BYTES_PER_SECOND = 10 * 1024 * 1024  # the slowest append rate waited for, past its timeout
_EVENT_FIELDS = (
    "seq", "id", "type", "stream", "session_id", "version", "at", "actor", "causation",
    "data", "prev_hash", "hash",
)  # fmt: skip


class ReplicationError(WriterMovedError):
    """The group could not be shipped to the stream: it is rolled back, nothing acknowledged."""


class NotWriterError(ReplicationError):
    """This daemon does not hold the writer lease (or its lease has run out)."""

    def __init__(self) -> None:
        super().__init__("this daemon is not the log's writer (the lease moved); retry")


Applied = tuple[int, Segment]
"""A segment number and its segment, ready to apply."""


class StreamReplica:
    """The writer's replication hook, and the applier of the stream to this copy.

    ``lease_until`` (a ``time.monotonic()`` value) is set by the lease's owner on the event
    loop; the writer thread reads it before every append.
    """

    def __init__(self, stream: JetStreamLog, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self._loop = loop
        self.lease_until = 0.0
        self.behind = asyncio.Event()
        """Set (from the writer thread) when an append failed: the copy may lack a segment the
        stream has, and must catch up before its next append can succeed."""
        self._tables: dict[str, capture.Table] = {}
        self._writer: GroupCommitWriter | None = None
        self._moved = asyncio.Condition()  # notified when following advanced the head

    @property
    def writer(self) -> GroupCommitWriter:
        assert self._writer is not None, "the writer has not opened"
        return self._writer

    @property
    def holds_lease(self) -> bool:
        return time.monotonic() < self.lease_until

    # -- on the writer thread ------------------------------------------------------------

    def open(self, writer: GroupCommitWriter) -> None:
        """Watch the log's tables on the writer's connection (called once it has opened)."""
        self._writer = writer
        self._tables = capture.install(writer.handler.conn)

    def publish(self, handler: CommandHandler) -> None:
        """Ship the open transaction's changes, before its COMMIT.

        Raises:
            NotWriterError: the lease is not held (nothing is sent).
            ReplicationError: the append was refused or not acknowledged.
        """
        conn = handler.conn
        changes = capture.collect(conn, self._tables)
        if not changes:
            return  # nothing written (refused commands, replies of keyed retries)
        if not self.holds_lease:
            raise NotWriterError()
        expected = applied_segment(conn)
        packed = pack(Segment(self._tables, tuple(changes)), self.stream.budget)
        if not self.holds_lease:  # packing a big group takes time: look again
            raise NotWriterError()
        future = asyncio.run_coroutine_threadsafe(self.stream.append(packed, expected), self._loop)
        try:
            seq = self._wait(future, len(packed.body) + sum(map(len, packed.objects.values())))
        except FencedError as exc:
            raise ReplicationError(exc.message) from None
        except ReplicationError:
            raise
        except UnavailableError as exc:
            raise ReplicationError(exc.message) from None
        except TimeoutError:
            future.cancel()
            raise ReplicationError("the log's stream did not acknowledge the append") from None
        set_meta(conn, SEGMENT_KEY, seq)

    def _wait(self, future: Any, size: int) -> int:
        """The append's segment number; the wait allows for the bytes it moves."""
        try:
            wait = self.stream.timeout + APPEND_TIMEOUT + 1 + size / _BYTES_PER_SECOND
            return int(future.result(timeout=wait))
        except BaseException:
            self._loop.call_soon_threadsafe(self.behind.set)
            raise

    # -- following the stream ------------------------------------------------------------

    async def position(self) -> int:
        """The last segment this copy holds."""
        return int(await self.writer.exclusive(lambda h: applied_segment(h.conn)))

    async def fetch(self, seq: int) -> Segment | None:
        """Segment ``seq`` from the stream with its objects, or None when not there (yet)."""
        return await fetch_segment(self.stream, seq)

    async def follow_once(self, limit: int = 256, max_bytes: int = 32 * 1024 * 1024) -> int:
        """Apply the segments the stream holds beyond this copy (up to ``limit`` of them);
        the number applied. A step of the follower loop, which tests call directly."""
        start = await self.position()
        batch: list[Applied] = []
        size = 0
        while len(batch) < limit and size < max_bytes:
            segment = await self.fetch(start + len(batch) + 1)
            if segment is None:
                break
            batch.append((start + len(batch) + 1, segment))
            size += sum(_size(c.values) for c in segment.changes)
        if batch:
            removed = any(c.op == capture.DELETE for _, seg in batch for c in seg.changes)
            await self.writer.advance(
                lambda handler: apply_segments(handler, batch), removed=removed
            )
            async with self._moved:
                self._moved.notify_all()
        return len(batch)

    async def wait_for_head(self, seq: int, within: float) -> None:
        """Return once this copy's log reaches ``seq`` (a read's ``Checkpointd-Min-Seq``: the
        caller saw it on another daemon).

        Raises UnavailableError after ``within`` seconds: the answer would be stale.
        """
        if self.writer.head >= seq:
            return
        self.behind.set()  # follow now, without waiting for the next announcement
        try:
            async with asyncio.timeout(within), self._moved:
                await self._moved.wait_for(lambda: self.writer.head >= seq)
        except TimeoutError:
            raise UnavailableError(
                f"this daemon's copy of the log did not reach position {seq} within"
                f" {within:.1f}s (it is at {self.writer.head}); retry"
            ) from None

    async def catch_up(self) -> int:
        """Apply segments until this copy holds the stream's last one (as read at the start);
        returns that segment number."""
        last = await self.stream.last_seq()
        while await self.position() < last:
            if not await self.follow_once():
                raise UnavailableError(f"segment {await self.position() + 1} is missing")
        return last


async def fetch_segment(stream: JetStreamLog, seq: int) -> Segment | None:
    """Segment ``seq`` of ``stream`` with its objects, or None when not there (yet)."""
    body = await stream.get(seq)
    if body is None:
        return None
    wire, references = unpack(body)
    if "body" in wire:  # the whole body is in the object store
        reference = references[0]
        body = reference.check(await stream.fetch_object(reference.name))
        wire, references = unpack(body)
    fetched = {r.name: await stream.fetch_object(r.name) for r in references}
    return resolve(wire, fetched)


def apply_segments(handler: CommandHandler, batch: Sequence[Applied]) -> int:
    """Apply ``batch`` to the copy in one transaction (on the writer thread); the log head.

    Segments this copy already holds are skipped. Raises IntegrityError (nothing applied) for
    a gap in the segments or an event that does not chain onto the copy's head.
    """
    conn = handler.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        position = applied_segment(conn)
        head = store.head(conn)
        for number, segment in batch:
            if number > position:
                _check_next(number, position, segment, head)
                capture.apply(conn, segment.tables, segment.changes)
                position, head = number, _head_after(segment, head)
        set_meta(conn, SEGMENT_KEY, position)
        capture.forget(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        handler.reload_head()
        raise
    handler.reload_head()
    handler.sign_head()
    return handler.seq


def _check_next(number: int, position: int, segment: Segment, head: tuple[int, bytes]) -> None:
    """Segment ``number`` follows segment ``position``, and its events the chain's ``head``."""
    if number != position + 1:
        raise IntegrityError(f"segment {position + 1} of the stream is missing")
    seq, head_hash = head
    for record in events_of(segment):
        if record.seq != seq + 1 or record.prev_hash != head_hash:
            raise IntegrityError(f"event {record.seq} does not follow event {seq}")
        if record.expected_hash() != record.hash:
            raise IntegrityError(f"event {record.seq} does not match its hash")
        seq, head_hash = record.seq, record.hash


def _head_after(segment: Segment, head: tuple[int, bytes]) -> tuple[int, bytes]:
    events = events_of(segment)
    return head if not events else (events[-1].seq, events[-1].hash)


def events_of(segment: Segment) -> list[EventRecord]:
    table = segment.tables.get("events")
    return [
        _event(table, change.values)
        for change in segment.changes
        if table is not None and change.table == "events" and change.op == capture.INSERT
    ]


def _event(table: capture.Table, values: Sequence[Any]) -> EventRecord:
    row = dict(zip(table.columns, values, strict=True))
    return EventRecord(*(row[name] for name in _EVENT_FIELDS))


def _size(values: Sequence[Any]) -> int:
    return sum(len(v) if isinstance(v, bytes | str) else 8 for v in values)


def applied_segment(conn: sqlite3.Connection) -> int:
    """The last segment of the stream this copy holds (0: none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SEGMENT_KEY,)).fetchone()
    return 0 if row is None else int(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
