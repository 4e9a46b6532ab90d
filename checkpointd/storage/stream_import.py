"""Moving the embedded store's log into an empty JetStream stream, hash chain and all.

``checkpointd stream-import --db FILE`` (with the cluster's settings) publishes the file's log
to the stream as the daemons' writer would have: first the genesis (the file's store id and
KDF salt, so its snapshots stay readable and the store keeps its id), then the rows of every
replicated table — the snapshot blobs, idempotency keys and the other tables first, the events
last, in ``seq`` order — in segments (``checkpointd.storage.segment``; big values through the
object store). The events and their hashes are the file's own: a daemon that copies the stream
verifies the same chain (``verify``) that the file had, and the export of either is the same.

The file is only read, and must not be in use: stop the daemon that serves it first (its
writer lock is taken for the time of the copy). The stream must be empty, so a copy cannot be
mixed into another store's log; a copy cut short is finished by deleting the stream and
running the import again.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from checkpointd.errors import ConfigError
from checkpointd.storage import capture
from checkpointd.storage.jetstream import JetStreamLog
from checkpointd.storage.lock import WriterLock
from checkpointd.storage.schema import MIGRATIONS
from checkpointd.storage.segment import Segment, pack

ROWS_PER_SEGMENT = 500
BYTES_PER_SEGMENT = 8 * 1024 * 1024
"""A segment of the import holds at most this many rows and (about) this many value bytes."""

Progress = Callable[[int], None]


async def import_log(
    stream: JetStreamLog, path: str, progress: Progress | None = None
) -> tuple[int, int]:
    """Publish the log at ``path`` into the empty ``stream``; (events, segments) published.

    Raises:
        ConfigError: the stream is not empty, or the file holds no checkpointd log.
        DatabaseInUseError: a daemon (or a manager) has the file open.
        UnavailableError: the stream did not take a segment (the import stops there).
    """
    lock = WriterLock(path)
    lock.acquire()
    try:
        conn = sqlite3.connect(_read_only(path), uri=True)
        try:
            return await _publish(stream, conn, path, progress)
        finally:
            conn.close()
    finally:
        lock.release()


async def _publish(
    stream: JetStreamLog, conn: sqlite3.Connection, path: str, progress: Progress | None
) -> tuple[int, int]:
    if await stream.last_seq() != 0:
        reason = "is not empty: an import goes into a new stream (delete this one, or name another)"
        raise ConfigError("jetstream_stream", stream.names.stream, reason)
    genesis = _genesis(conn, path)
    last = await stream.append(pack(Segment(genesis=genesis), stream.budget), 0)
    tables = capture.log_tables(conn)
    order = [name for name in sorted(tables) if name != "events"] + ["events"]
    events = 0
    for name in order:
        for changes in _chunks(conn, tables[name]):
            segment = Segment(tables, tuple(changes))
            last = await stream.append(pack(segment, stream.budget), last)
            if name == "events":
                events += len(changes)
                if progress is not None:
                    progress(events)
    return events, last


def _read_only(path: str) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def _genesis(conn: sqlite3.Connection, path: str) -> dict[str, Any]:
    try:
        rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error:
        rows = {}
    if "store_id" not in rows:
        raise ConfigError("database_path", path, "it holds no checkpointd log")
    version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    if version != MIGRATIONS[-1][0]:
        reason = "its log is of another version: open it once with this one (checkpointd verify)"
        raise ConfigError("database_path", path, reason)
    # A store that never opened has no salt yet: it gets one, as it would on open.
    salt = rows.get("kdf_salt")
    return {
        "store_id": str(rows["store_id"]),
        "kdf_salt": os.urandom(16) if salt is None else bytes(salt),
    }


def _chunks(conn: sqlite3.Connection, table: capture.Table) -> Iterator[list[capture.Change]]:
    columns = ", ".join(f'"{column}"' for column in table.columns)
    keys = ", ".join(f'"{column}"' for column in table.key)
    rows = conn.execute(f'SELECT {columns} FROM main."{table.name}" ORDER BY {keys}')
    chunk: list[capture.Change] = []
    size = 0
    for row in rows:
        chunk.append(capture.Change(table.name, capture.INSERT, tuple(row)))
        size += sum(len(v) for v in row if isinstance(v, bytes | str))
        if len(chunk) >= ROWS_PER_SEGMENT or size >= BYTES_PER_SEGMENT:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
