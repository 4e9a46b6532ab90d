"""Before the store opens: this daemon's copy of the log takes its identity from the stream.

The stream's first segment (the genesis) holds the store's id and KDF salt; every copy adopts
them, so all daemons serve one store (``$SRV.INFO``'s ``store_id``) and can decrypt its
snapshots. An empty stream gets its genesis from the first daemon to start (a race is settled
by the fence on segment 0: the first genesis wins, the others adopt it). A copy that is not in
step with the stream — another store's, the embedded store's, one written to directly, or one
of a stream since recreated — is refused, naming the file: it is disposable, and is removed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

import structlog

from checkpointd.errors import ConfigError, IntegrityError, UnavailableError
from checkpointd.events import store
from checkpointd.storage.jetstream import FencedError, JetStreamLog
from checkpointd.storage.replica import (
    SEGMENT_KEY,
    STREAM_KEY,
    applied_segment,
    events_of,
    fetch_segment,
    set_meta,
)
from checkpointd.storage.schema import migrate
from checkpointd.storage.segment import Segment, pack, unpack
from checkpointd.storage.sqlite import connect_writer

log = structlog.get_logger("checkpointd.replica")

_GENESIS = ("store_id", "kdf_salt")
_DISPOSABLE = "it is a disposable copy: remove it (with its -wal file) and start again"


async def prepare_copy(stream: JetStreamLog, path: str, durability: str) -> None:
    """Make the file at ``path`` a copy of the stream's store, before the store opens it.

    The stream's first segment (the genesis) holds the store's id and KDF salt; an empty
    stream gets one now, proposed from this file (a race between daemons is settled by the
    fence: the first genesis wins, the others adopt it).

    Raises:
        ConfigError: the file holds another store's log, or events the stream does not have
            (a log of the embedded store is moved with ``checkpointd stream-import``, not by
            pointing a daemon at it).
    """
    conn = await asyncio.to_thread(_open_copy, path, durability)
    try:
        if applied_segment(conn) == 0 and _has_events(conn):
            reason = (
                "it holds a log that was not copied from a stream (the embedded store's?);"
                " move that log into an empty stream with `checkpointd stream-import --db"
                " FILE`, and give this daemon a fresh database_path"
            )
            raise ConfigError("database_path", path, reason)
        genesis = await _genesis(stream, conn)
        await asyncio.to_thread(_adopt, conn, genesis, stream.names.stream, path)
        await _check_in_step(stream, conn, path)
    finally:
        conn.close()


async def _check_in_step(stream: JetStreamLog, conn: sqlite3.Connection, path: str) -> None:
    """The copy's log is the stream's up to the last segment it applied, and no further.

    Raises ConfigError otherwise: the stream was recreated, or the file written to directly.
    """
    number = applied_segment(conn)
    if number <= 1:
        return
    segment = await fetch_segment(stream, number)
    if segment is None:
        reason = f"it holds segment {number}, which stream {stream.names.stream!r} has not"
        raise ConfigError("database_path", path, f"{reason}; {_DISPOSABLE}")
    events = events_of(segment)
    if events and store.head(conn) != (events[-1].seq, events[-1].hash):
        reason = f"its log is not the stream's after segment {number} (written to directly?)"
        raise ConfigError("database_path", path, f"{reason}; {_DISPOSABLE}")


def _open_copy(path: str, durability: str) -> sqlite3.Connection:
    conn = connect_writer(path, durability)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


async def _genesis(stream: JetStreamLog, conn: sqlite3.Connection) -> dict[str, Any]:
    body = await stream.get(1)
    if body is None:
        proposed = {key: _meta(conn, key) for key in _GENESIS}
        if proposed["kdf_salt"] is None:
            proposed["kdf_salt"] = os.urandom(16)
        packed = pack(Segment(genesis=proposed), stream.budget)
        try:
            await stream.append(packed, 0)
            log.info("stream's genesis written", stream=stream.names.stream)
        except FencedError:
            pass  # another daemon's genesis came first
        body = await stream.get(1)
        if body is None:
            raise UnavailableError("the log's stream lost its first segment")
    wire, _ = unpack(body)
    genesis = wire.get("genesis")
    if not isinstance(genesis, dict) or not all(key in genesis for key in _GENESIS):
        raise IntegrityError(f"stream {stream.names.stream!r} was not written by checkpointd")
    return genesis


def _adopt(conn: sqlite3.Connection, genesis: dict[str, Any], name: str, path: str) -> None:
    store_id = str(genesis["store_id"])
    local_id = _meta(conn, "store_id")
    segment = applied_segment(conn)
    if local_id != store_id and segment:
        reason = (
            f"it holds another store's log (store {local_id}, the stream {name!r} is store"
            f" {store_id}); {_DISPOSABLE}"
        )
        raise ConfigError("database_path", path, reason)
    conn.execute("BEGIN IMMEDIATE")
    try:
        set_meta(conn, "store_id", store_id)
        set_meta(conn, "kdf_salt", bytes(genesis["kdf_salt"]))
        set_meta(conn, STREAM_KEY, name)
        set_meta(conn, SEGMENT_KEY, max(segment, 1))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _has_events(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None


def _meta(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]
