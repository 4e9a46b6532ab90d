"""Re-hash the event log from event 0: proves no stored event was changed, removed or reordered."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from checkpointd.events import store
from checkpointd.events.types import GENESIS_HASH
from checkpointd.models import VerifyResult

Progress = Callable[[int], None]


def verify_chain(conn: sqlite3.Connection, progress: Progress | None = None) -> VerifyResult:
    """Check ``seq`` is gapless from 1 and every hash chains to its predecessor.

    Reads in one read transaction so a concurrent writer cannot make the scan inconsistent.
    ``events`` in the result counts the events found good before the first bad one.
    """
    prev_hash, expected_seq, good = GENESIS_HASH, 1, 0
    conn.execute("BEGIN")
    try:
        for record in store.scan(conn):
            if record.seq != expected_seq:
                return VerifyResult(ok=False, events=good, first_bad_seq=expected_seq)
            if record.prev_hash != prev_hash or record.expected_hash() != record.hash:
                return VerifyResult(ok=False, events=good, first_bad_seq=record.seq)
            prev_hash, expected_seq, good = record.hash, expected_seq + 1, good + 1
            if progress is not None and good % 10_000 == 0:
                progress(good)
    finally:
        conn.execute("COMMIT")
    return VerifyResult(ok=True, events=good, first_bad_seq=None)


def verify_file(path: str, progress: Progress | None = None) -> VerifyResult:
    """``verify_chain`` on a fresh read-only connection to the database at ``path``."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"  # as_uri escapes '?', '#', '%' in paths
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        return verify_chain(conn, progress)
    finally:
        conn.close()
