"""``<database>.lock``: one writing process per database file.

The writer keeps the chain head (and other facts about the log) in memory between groups, so a
second process appending to the same file would fork the hash chain. ``flock`` makes the second
one fail at open instead; the lock goes with the process, even on SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from checkpointd.errors import ConfigError, DatabaseInUseError


class WriterLock:
    """An exclusive ``flock`` on ``<database_path>.lock``, which records the holder's pid."""

    def __init__(self, database_path: str) -> None:
        self._database = database_path
        self._path = Path(f"{database_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the file; the directory must exist).

        Raises:
            DatabaseInUseError: another process (or another manager here) holds it.
            ConfigError: the lock file cannot be created (the path is unusable).
        """
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            reason = f"cannot open its lock file {self._path}: {exc.strerror}"
            raise ConfigError("database_path", self._database, reason) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUseError(
                f"database {self._database} is in use by another writer (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
