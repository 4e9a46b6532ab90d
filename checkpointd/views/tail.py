"""The projector: tails the log by ``seq`` and applies its events to the views file in batches.

Runs on a thread of the embedded manager or, under the daemon, in a process of its own (another
core than the writer and the event loop). It talks to its owner (``checkpointd.views.Views``)
over one ``multiprocessing`` pipe: the owner sends the log head after each commit (a nudge, or
``None`` to stop); the projector answers with ``("position", seq)`` after every batch and every
nudge, ``("progress", events)`` while it builds a fresh file, and ``("stale", reason)`` when the
views file cannot be used (another log's, another layout, damaged), after which it stops.

Each batch is one transaction on the views file that also records the position, so a projector
killed mid-batch resumes from the last batch that committed. It reads only committed events,
and the one writer assigns ``seq`` inside its transaction and commits in order, so no event can
appear later below a position the projector has passed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from checkpointd import faults
from checkpointd.events import store
from checkpointd.projections import Projector, fts, stored_position
from checkpointd.projections.replay import rebuild
from checkpointd.storage.schema import VIEWS_VERSION, create_views
from checkpointd.storage.sqlite import BUSY_TIMEOUT_MS, create_private

BATCH = 2_000
"""Events applied per transaction at most while tailing."""
BULK_FROM = 20_000
"""A fresh views file facing more events than this is built in one bulk pass (indexes and FTS
built once at the end, much faster than event by event)."""
_PR_SET_PDEATHSIG = 1  # prctl(2)
DRAIN = 5.0
"""Seconds a stopping projector goes on applying events the log already has."""
POLL = 0.5
"""Seconds a caught-up projector waits for a nudge before looking at the log anyway."""


class StaleViewsError(Exception):
    """The views file cannot be used: it must be rebuilt from the log."""


def connect(views_path: str, log_path: str) -> sqlite3.Connection:
    """The projector's connection: the views file, with the log attached as ``log``.

    Unqualified names resolve to the views first, so ``events`` and ``blobs`` are the log's
    and every view table is the views file's.
    """
    create_private(views_path)  # its owner's alone, like the log: it holds names and metadata
    conn = sqlite3.connect(views_path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in (
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",  # disposable: a lost batch is projected again
            "PRAGMA wal_autocheckpoint = 256",  # a small WAL: it must fit the writer's reserve
            f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
            "PRAGMA cache_size = -65536",
            "PRAGMA temp_store = MEMORY",
        ):
            conn.execute(pragma)
        conn.execute("ATTACH DATABASE ? AS log", (log_path,))
    except BaseException:
        conn.close()
        raise
    return conn


def open_views(
    views_path: str, log_path: str, *, store_id: str, fts_enabled: bool
) -> sqlite3.Connection:
    """Open the views file (creating its tables in an empty one) and check it is this log's.

    Raises:
        StaleViewsError: the file belongs to another log or layout, is ahead of the log or
            disagrees with it at its position, or SQLite cannot read it.
    """
    try:
        conn = connect(views_path, log_path)
    except sqlite3.DatabaseError as exc:
        raise StaleViewsError(f"cannot open it ({type(exc).__name__})") from None
    try:
        _check(conn, store_id, fts_enabled)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StaleViewsError(f"cannot read it ({type(exc).__name__})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check(conn: sqlite3.Connection, store_id: str, fts_enabled: bool) -> None:
    tables = conn.execute("SELECT count(*) FROM main.sqlite_master").fetchone()[0]
    if tables == 0:
        conn.execute("BEGIN")
        create_views(conn)
        _put(conn, "store_id", store_id)
        _put(conn, "fts", int(fts_enabled))
        conn.execute("COMMIT")
        return
    # A page damaged while no one had the file open shows only when a query reaches it (and
    # then as damage to restore from a backup): look at every page once, before using them.
    if conn.execute("PRAGMA main.quick_check(1)").fetchone()[0] != "ok":
        raise StaleViewsError("it is damaged")
    meta = dict(conn.execute("SELECT key, value FROM views_meta").fetchall())
    if meta.get("version") != VIEWS_VERSION:
        raise StaleViewsError(f"layout {meta.get('version')!r}, not {VIEWS_VERSION}")
    if meta.get("store_id") != store_id:
        raise StaleViewsError("it was built from another log")
    position = stored_position(conn)
    head, _ = store.head(conn)
    if position > head:
        raise StaleViewsError(f"it is at {position}, past the log's head {head}")
    if position and meta.get("position_hash") != _hash_at(conn, position):
        raise StaleViewsError(f"it disagrees with the log at {position}")
    if meta.get("fts") != int(fts_enabled):
        conn.execute("BEGIN")
        if fts_enabled:  # maintained again from here: rebuilt once from the view
            fts.rebuild(conn)
        _put(conn, "fts", int(fts_enabled))
        conn.execute("COMMIT")


def _hash_at(conn: sqlite3.Connection, seq: int) -> bytes | None:
    row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else bytes(row[0])


def _put(conn: sqlite3.Connection, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO views_meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def step(conn: sqlite3.Connection, projector: Projector, limit: int = BATCH) -> int:
    """Apply the next events (at most ``limit``) in one transaction; returns how many."""
    first = projector.position
    rows = conn.execute(
        f"SELECT {store.REPLAY_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
        (first, limit),
    ).fetchall()
    if not rows:
        return 0
    conn.execute("BEGIN")
    try:
        projector.apply_rows(conn, rows)
        faults.crash_point("projector-mid-batch")
        projector.flush(conn)
        _put(conn, "position_hash", _hash_at(conn, rows[-1][0]))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        projector.discard_group(first)
        projector.track_restores(conn)
        raise
    return len(rows)


def build(
    conn: sqlite3.Connection, projector: Projector, progress: Callable[[int], None] | None
) -> int:
    """Replay the whole log into empty views in one pass; returns the events applied."""
    count = rebuild(conn, projector, progress)
    conn.execute("BEGIN")
    head = projector.position
    _put(conn, "position_hash", _hash_at(conn, head) if head else None)
    conn.execute("COMMIT")
    return count


def run(
    log_path: str, views_path: str, store_id: str, fts_enabled: bool, channel: Connection
) -> None:
    """The projector's loop, until its owner sends ``None`` or closes the pipe.

    It holds ``<views>.lock`` while it runs: a projector orphaned by a killed daemon (it stops
    at its next look at the pipe) finishes before a restarted daemon's projector writes.
    """
    owner = multiprocessing.parent_process()
    if owner is not None and owner.pid is not None:
        _die_with_parent(owner.pid)
    try:
        with _exclusive(views_path + ".lock"):
            _run(log_path, views_path, store_id, fts_enabled, channel)
    except (EOFError, ConnectionError, KeyboardInterrupt):
        pass  # the owner is gone (closed, or killed: the pipe reads EOF or a reset)
    except Exception as exc:  # told to the owner, which logs it and starts another projector
        with contextlib.suppress(OSError, ValueError):
            channel.send(("failed", _reason(exc)))
    finally:
        with contextlib.suppress(OSError):
            channel.close()


def _reason(exc: Exception) -> str:
    """What went wrong, without SQL or paths: the error's kind and SQLite's error name."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{type(exc).__name__}" + (f" ({name})" if name else "")


def _die_with_parent(parent: int) -> None:
    """In a projector process on Linux: be killed when the daemon dies (mid-batch is safe)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by an orphan for at most its batch and a poll
        yield
    finally:
        os.close(fd)  # releases the lock


def _run(
    log_path: str, views_path: str, store_id: str, fts_enabled: bool, channel: Connection
) -> None:
    try:
        conn = open_views(views_path, log_path, store_id=store_id, fts_enabled=fts_enabled)
    except StaleViewsError as exc:
        channel.send(("stale", str(exc)))
        return
    try:
        projector = Projector(fts_enabled=fts_enabled)
        projector.position = stored_position(conn)
        projector.track_restores(conn)
        channel.send(("position", projector.position))
        head, _ = store.head(conn)
        if projector.position == 0 and head > BULK_FROM:
            build(conn, projector, lambda n: channel.send(("progress", n)))
            channel.send(("position", projector.position))
        while True:
            try:
                applied = step(conn, projector)
            except sqlite3.DatabaseError as exc:
                if _damaged(exc):
                    channel.send(("stale", f"damaged ({type(exc).__name__})"))
                    return
                raise
            # Report after every step, before any wait: the report is also what tells the
            # owner its last wake-up was taken (it sends no other until then). A step that
            # found nothing (its events came in the step before) must still answer, or the
            # owner's next wake-ups would wait out the whole POLL.
            channel.send(("position", projector.position))
            if not _listen(channel, wait=0.0 if applied else POLL):
                _drain(conn, projector)
                return
    finally:
        conn.close()


def _drain(conn: sqlite3.Connection, projector: Projector) -> None:
    """On a clean stop (the writer has closed): apply what is left, for at most ``DRAIN``
    seconds, so the views are level with the log when the store next opens."""
    deadline = time.monotonic() + DRAIN
    while time.monotonic() < deadline and step(conn, projector):
        pass


def _listen(channel: Connection, *, wait: float) -> bool:
    """Take every waiting message (nudges); False once told to stop."""
    ready = channel.poll(wait)
    while ready:
        if channel.recv() is None:
            return False
        ready = channel.poll(0)
    return True


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def remove_files(views_path: str) -> None:
    """Delete a views file and its WAL and shared-memory files (the owner's connections closed)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(views_path + suffix)
