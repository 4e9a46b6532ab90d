"""``--db PATH`` checked before it is opened: a verb must not turn a typo into a new, empty
database, nor a config file into a damaged one with a ``.lock`` beside it.

Opening a store creates the file (and its ``.lock``) when it is missing, so the command looks
first: only ``create`` (or a verb given ``--create``) may start a database; a file that is not
SQLite, or SQLite without checkpointd's event log, is refused before anything is written.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from checkpointd.errors import ConfigError, InvalidRequestError

_SQLITE_MAGIC = b"SQLite format 3\x00"
_OURS = frozenset({"events", "schema_migrations"})


def check_database(path: str, *, may_create: bool) -> None:
    """Refuse a ``--db`` path that is not (or not yet) a checkpointd database.

    Raises:
        ConfigError: the file does not exist (nor is empty) and ``may_create`` is False, or it
            cannot be read.
        InvalidRequestError: the file is something else than a checkpointd database.
    """
    file = Path(path)
    try:
        with file.open("rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        header = None
    except OSError as exc:
        raise ConfigError("--db", path, f"cannot read it: {exc.strerror}") from None
    wal = Path(f"{path}-wal").exists()  # a writer may hold its first pages in the log still
    if header is None or (header == b"" and not wal):
        if not may_create:
            state = "does not exist" if header is None else "is empty"
            reason = f"{state}; `checkpointd create` makes a new database, as does --create"
            raise ConfigError("--db", path, reason)
        return
    if header and header != _SQLITE_MAGIC:
        raise InvalidRequestError(
            f"{path} is not a checkpointd database (not an SQLite file)", field="--db"
        )
    tables = _tables(path)
    if tables is None or wal or (not tables and may_create):
        # Unreadable here (opening it says why), written to right now (the file alone can lag
        # behind its -wal log), or a new database to set up.
        return
    if not tables:
        raise ConfigError(
            "--db", path, "is an empty SQLite file; `create` (or --create) sets it up"
        )
    if not tables >= _OURS:
        raise InvalidRequestError(
            f"{path} is not a checkpointd database (an SQLite file without its event log)",
            field="--db",
        )


def _tables(path: str) -> set[str] | None:
    """The file's table names, read without locking or writing anything; None if unreadable."""
    # immutable=1: no lock, no -wal/-shm files made beside someone else's database.
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return {str(name) for (name,) in rows}
