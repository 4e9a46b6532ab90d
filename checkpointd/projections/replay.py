"""Replaying the log into the views: a full rebuild in one pass (``checkpointd.views``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from checkpointd import faults
from checkpointd.events import store
from checkpointd.projections import Projector, fts
from checkpointd.storage.schema import PROJECTION_TABLES

_FLUSH_EVERY = 10_000


def replay(
    conn: sqlite3.Connection,
    projector: Projector,
    after_seq: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Apply every event after ``after_seq``; the caller holds the transaction.

    The log is read 10,000 events at a time and each chunk is applied as a whole
    (``Projector.apply_rows``), then flushed; ``progress(count)`` is called after each full
    chunk, on this (the caller's) thread.
    """
    count = 0
    # Crash points are armed from the environment, in fault tests only: without one, a chunk
    # does not pay a call per event for them.
    crash_points = bool(os.environ.get(faults.ENV))
    projector.bulk = True
    try:
        for rows in store.scan_rows(conn, after_seq, _FLUSH_EVERY, store.REPLAY_COLUMNS):
            projector.apply_rows(conn, rows)
            if crash_points:
                for _ in rows:
                    faults.crash_point("mid-rebuild")
            count += len(rows)
            projector.flush(conn)
            if progress is not None and count % _FLUSH_EVERY == 0:
                progress(count)
        if count == 0:
            projector.flush(conn)
    finally:
        projector.bulk = False
    return count


def rebuild(
    conn: sqlite3.Connection, projector: Projector, progress: Callable[[int], None] | None = None
) -> int:
    """Drop every projection and rebuild it from event 0, atomically. Returns events replayed.

    The FTS index is rebuilt in one pass from the view at the end, which is much faster than
    maintaining it event by event.
    """
    fts_enabled = projector.fts_enabled
    conn.execute("BEGIN")
    try:
        projector.reset(conn)
        projector.fts_enabled = False
        indexes = _drop_indexes(conn)
        count = replay(conn, projector, 0, progress)
        for sql in indexes:
            conn.execute(sql)
        if fts_enabled:
            fts.rebuild(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        projector.fts_enabled = fts_enabled
    return count


def _drop_indexes(conn: sqlite3.Connection) -> list[str]:
    """Drop the views' secondary indexes; returns the statements that create them again.

    Building an index once over the replayed rows (a sort) is much cheaper than keeping it up to
    date row by row. The statements are the schema's own, read back from ``sqlite_master``;
    the implicit indexes of PRIMARY KEY and UNIQUE constraints (no SQL) stay.
    """
    marks = ", ".join("?" * len(PROJECTION_TABLES))
    rows = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        f" AND tbl_name IN ({marks}) ORDER BY name",
        PROJECTION_TABLES,
    ).fetchall()
    for name, _ in rows:
        conn.execute(f'DROP INDEX "{name}"')
    return [sql for _, sql in rows]
