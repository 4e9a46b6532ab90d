"""Opening SQLite connections, and the one place SQLite errors become checkpointd errors."""

from __future__ import annotations

import os
import sqlite3

from checkpointd.errors import (
    CheckpointError,
    ConflictError,
    IntegrityError,
    InternalError,
    StorageError,
    UnavailableError,
)

BUSY_TIMEOUT_MS = 5000


def writer_pragmas(durability: str) -> list[str]:
    synchronous = "FULL" if durability == "full" else "NORMAL"
    return [
        "PRAGMA journal_mode = WAL",
        f"PRAGMA synchronous = {synchronous}",
        "PRAGMA secure_delete = ON",
        "PRAGMA foreign_keys = OFF",
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA cache_size = -65536",
        "PRAGMA temp_store = MEMORY",
    ]


READER_PRAGMAS = (
    "PRAGMA query_only = ON",
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA cache_size = -32768",
    "PRAGMA temp_store = MEMORY",
)


def connect_writer(path: str, durability: str) -> sqlite3.Connection:
    """The single writing connection: autocommit mode, transactions are explicit.

    A new database file is created 0600, its owner's alone, whatever the umask; SQLite gives
    the ``-wal`` and ``-shm`` files the database file's mode. An existing file keeps its mode.
    """
    create_private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in writer_pragmas(durability):
            conn.execute(pragma)
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc) from exc
    return conn


def create_private(path: str) -> None:
    """Create ``path`` empty and 0600 unless it exists (an empty file is an empty database)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        # It exists (and keeps its mode), or sqlite3.connect meets the same problem (a missing
        # directory) and reports it in the terms its callers translate.
        return
    os.close(fd)


def translate(exc: sqlite3.Error) -> CheckpointError:
    """The checkpointd error for a SQLite error; the SQLite text is never part of the message."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in name.upper() + str(exc).upper():
        return ConflictError("a concurrent write changed this checkpoint; retry")
    if name.startswith("SQLITE_FULL") or code == sqlite3.SQLITE_FULL:
        return StorageError("storage is full: the write was not applied")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return UnavailableError("the database is busy; retry")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return IntegrityError(
            "the database file is damaged (SQLite's PRAGMA integrity_check lists where);"
            " restore it from a backup"
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
        return StorageError("storage failed: the write was not applied")
    return InternalError("internal storage error")
