"""What backup, restore and export share: read-only connections to a log, its snapshot codec
and chain keys, and making a finished file durable."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from checkpointd.config import Config
from checkpointd.engine import build_codec
from checkpointd.errors import ConfigError
from checkpointd.events.signing import ChainKeys
from checkpointd.snapshots import SnapshotCodec
from checkpointd.storage.sqlite import BUSY_TIMEOUT_MS, translate


def read_only(path: str, key: str = "database_path") -> sqlite3.Connection:
    """A read-only connection to the log at ``path`` (autocommit: the caller opens its read
    transaction). Works beside a running writer: SQLite's WAL lets readers see one snapshot.

    Raises:
        ConfigError: there is no file at ``path`` (``key`` names the setting or argument).
        StorageError, IntegrityError: SQLite cannot open it.
    """
    if not Path(path).is_file():
        raise ConfigError(key, path, "no such file")
    uri = Path(path).resolve().as_uri() + "?mode=ro"  # as_uri escapes '?', '#', '%'
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    return conn


def codec_for(config: Config, conn: sqlite3.Connection) -> SnapshotCodec:
    """The snapshot codec the settings describe, with the key salt of the log on ``conn``.

    Raises ConfigError when the encryption settings are unusable.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = 'kdf_salt'").fetchone()
    # A log never opened with a key has no salt; no blob in it is encrypted either.
    salt = bytes(row[0]) if row is not None else bytes(16)
    return build_codec(config, salt)


def chain_keys(config: Config, path: str) -> ChainKeys | None:
    """The keys that check the signed chain heads of the log at ``path`` (None: no key set)."""
    if config.encryption_secret() is None and not config.encryption_old_keys:
        return None
    conn = read_only(path)
    try:
        return ChainKeys.from_keyring(codec_for(config, conn).keyring)
    finally:
        conn.close()


def is_log(conn: sqlite3.Connection) -> bool:
    """Whether the database on ``conn`` holds a checkpointd event log."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"events", "schema_migrations", "meta"} <= tables


def head_seq(conn: sqlite3.Connection) -> int:
    (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
    return int(seq)


def fsync_file(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: str) -> None:
    """Make a rename in the directory of ``path`` durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Remove an SQLite file and the journal files beside it, if there are any."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
