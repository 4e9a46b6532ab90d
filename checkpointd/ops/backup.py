"""Online backup of the log, and restoring one in its place.

A backup is the log alone (``database_path``): events, snapshot blobs, idempotency keys, signed
chain heads and the store's id. The views are not in it; they are rebuilt from the log.

``backup`` copies the log with SQLite's online backup API in a single step, which reads one
snapshot of the database: a daemon may go on writing meanwhile, and the copy holds exactly the
events up to the ``seq`` it reports, no more and no fewer. The copy is written beside its
destination, made one self-contained file (rollback journal, no ``-wal``), synced, checked like
``checkpointd verify`` (its hash chain, and its signed heads when a key is configured), and only
then renamed into place, so a file at the destination is always a whole, verified backup.

``restore_backup`` needs the daemon stopped: it takes the writer lock, which a running daemon
holds, so it refuses rather than pull the log from under a writer. It copies the backup the same
way, verifies the copy, moves the current log (with its ``-wal`` and ``-shm``) aside as
``<database_path>.replaced-<time>`` and renames the copy into place. The views file, built from
the replaced log, is removed with it: the store builds fresh views from the restored log when it
opens. (Kept, it would be caught anyway: the projector compares a views file with the log, by
store id, position and the hash at its position, and rebuilds one that is ahead of the log or
disagrees with it; removing it spares that check's warning and a view that could only be a
prefix of the restored log at best.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from checkpointd.config import Config
from checkpointd.errors import ConfigError, IntegrityError, InvalidRequestError
from checkpointd.events.verify import verify_file
from checkpointd.models import VerifyResult
from checkpointd.ops.files import (
    chain_keys,
    fsync_directory,
    fsync_file,
    head_seq,
    is_log,
    read_only,
    remove,
)
from checkpointd.storage.lock import WriterLock
from checkpointd.storage.sqlite import create_private, translate

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Backup:
    """A verified backup: the file, the ``seq`` it is consistent to, its size and its check."""

    path: str
    seq: int
    bytes: int
    verified: VerifyResult

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "seq": self.seq,
            "bytes": self.bytes,
            "events": self.verified.events,
            "signedSeq": self.verified.signed_seq,
        }


@dataclass(frozen=True, slots=True)
class Restored:
    """A backup installed as the log: its ``seq``, and where the log it replaced went."""

    path: str
    seq: int
    verified: VerifyResult
    replaced: str | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "seq": self.seq,
            "events": self.verified.events,
            "signedSeq": self.verified.signed_seq,
            "replaced": self.replaced,
        }


def backup(config: Config, destination: str, progress: Progress | None = None) -> Backup:
    """Copy the log of ``config`` to ``destination`` while it may be in use, and verify the copy.

    ``destination`` is a file (replaced atomically if it exists) or an existing directory, where
    the file is named ``checkpointd-<UTC time>.db``. ``progress(events_so_far)`` is called while
    the copy is verified.

    Returns the backup, consistent to its ``seq``: it holds every event up to that ``seq``.

    Raises:
        ConfigError: there is no log at ``database_path``, or the destination's directory does
            not exist.
        InvalidRequestError: the file at ``database_path`` is not a checkpointd log.
        IntegrityError: the copy does not verify (the log itself is damaged: run
            ``checkpointd verify``); nothing is left at the destination.
        StorageError: the copy cannot be written (disk full, permissions).
    """
    source = os.fspath(config.database_path)
    target = _backup_path(destination)
    if Path(target).resolve() == Path(source).resolve():
        raise ConfigError("DEST", destination, "is the log itself")
    partial = f"{target}.partial"
    try:
        seq = _copy(source, partial)
        verified = _verified(config, partial, progress)
        os.replace(partial, target)
        fsync_directory(target)
    finally:
        remove(partial)
    return Backup(target, seq, os.stat(target).st_size, verified)


def restore_backup(config: Config, source: str, progress: Progress | None = None) -> Restored:
    """Install the backup at ``source`` as the log of ``config``, once it verifies.

    Atomic: the log is either the one it was or the backup. The log it replaces is kept as
    ``<database_path>.replaced-<UTC time>`` (with its ``-wal``/``-shm``), never deleted; the
    views file is deleted (the store rebuilds it from the restored log).

    Raises:
        DatabaseInUseError: a daemon (or another process) has the log open for writing.
        ConfigError: there is no file at ``source``, or ``database_path``'s directory is missing.
        InvalidRequestError: ``source`` is not a checkpointd log.
        IntegrityError: the backup does not verify; the log is left as it was.
    """
    target = os.fspath(config.database_path)
    if not Path(target).parent.is_dir():
        raise ConfigError("database_path", target, "its directory does not exist")
    if Path(source).resolve() == Path(target).resolve():
        raise ConfigError("SRC", source, "is the log itself")
    lock = WriterLock(target)
    lock.acquire()
    partial = f"{target}.restoring"
    try:
        seq = _copy(source, partial, "SRC")
        verified = _verified(config, partial, progress)
        replaced = _move_aside(target)
        os.replace(partial, target)
        fsync_directory(target)
        remove(config.views_file)  # the replaced log's: rebuilt from the backup on open
    finally:
        remove(partial)
        lock.release()
    return Restored(target, seq, verified, replaced)


def _backup_path(destination: str) -> str:
    path = Path(destination)
    if path.is_dir():
        return str(path / f"checkpointd-{_stamp()}.db")
    if not path.parent.is_dir():
        raise ConfigError("DEST", destination, "its directory does not exist")
    return destination


def _copy(source: str, target: str, key: str = "database_path") -> int:
    """Copy the log at ``source`` into a new file at ``target``; the ``seq`` it holds up to."""
    remove(target)
    conn = read_only(source, key)
    try:
        if not is_log(conn):
            raise InvalidRequestError(f"{source} is not a checkpointd database (no event log)")
        create_private(target)
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            # pages=-1: the whole database in one step, so in one read transaction of the
            # source: one consistent snapshot, whatever a writer commits meanwhile.
            conn.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            seq = head_seq(copy)
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    finally:
        conn.close()
    fsync_file(target)
    return seq


def _verified(config: Config, path: str, progress: Progress | None) -> VerifyResult:
    result = verify_file(path, progress, chain_keys(config, path))
    if not result.ok:
        raise IntegrityError(
            f"the copy does not verify at seq {result.first_bad_seq}: {result.problem}"
            " (run `checkpointd verify` on the source)"
        )
    return result


def _move_aside(path: str) -> str | None:
    """Rename the log at ``path`` (and its journal files) to a name of its own; that name."""
    if not Path(path).exists():
        return None
    # Fold its WAL into the file first, so that it is one file, and stays whole if the moves
    # below are interrupted; a log SQLite cannot open is moved with its journal files as is.
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    kept = f"{path}.replaced-{_stamp()}"
    for suffix in ("-wal", "-shm", "-journal", ""):  # the database last: it names the rest
        if Path(path + suffix).exists():
            os.replace(path + suffix, kept + suffix)
    return kept


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
