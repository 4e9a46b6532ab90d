"""The errors checkpointd raises, each with a stable ``code``.

The tree::

    CheckpointError                  code         wire status
    ├── InvalidRequestError          invalid      400
    │   └── ConfigError              invalid      400 (the daemon exits 78 on it)
    ├── NotFoundError                not_found    404
    ├── ConflictError                conflict     409
    ├── TooLargeError                too_large    413
    ├── IntegrityError               integrity    422
    ├── UnavailableError             unavailable  503
    │   ├── WriterMovedError         unavailable  503 (a cluster's writer moved; retried)
    │   ├── StorageError             unavailable  503
    │   └── DatabaseInUseError       unavailable  503 (at open; the daemon exits 75)
    └── InternalError                internal     500

Messages are built from the fields, never from internal exception text, so they are safe to send
to a client. ``code`` and the wire status never change for a class.
"""

from __future__ import annotations

from typing import ClassVar, Self


class CheckpointError(Exception):
    """Root of every error checkpointd raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, object]:
        """The ``{"error": {...}}`` body the NATS interface sends."""
        return {"error": {"code": self.code, "message": self.message}}

    @classmethod
    def from_wire(cls, message: str) -> Self:
        """The error as ``CheckpointClient`` raises it from a reply: class and message only."""
        error = cls.__new__(cls)
        CheckpointError.__init__(error, message)
        return error


class InvalidRequestError(CheckpointError):
    """The request is malformed: a missing or wrong-typed field, a bad filter, an unknown key.

    ``position`` is the 0-based character offset of the problem in a filter string, when known.
    """

    code = "invalid"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, position: int | None = None):
        parts = [message]
        if field is not None:
            parts.insert(0, f"{field}:")
        if position is not None:
            parts.append(f"(at position {position})")
        super().__init__(" ".join(parts))
        self.field = field
        self.position = position


class ConfigError(InvalidRequestError):
    """A setting has a wrong value; names the key, the value and the reason."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        shown = "***" if _is_secret(key) else repr(value)
        super().__init__(f"config key {key!r} = {shown}: {reason}")
        self.key = key
        self.reason = reason


class NotFoundError(CheckpointError):
    """The named checkpoint (or session) does not exist."""

    code = "not_found"
    status = 404

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.ident = ident


class ConflictError(CheckpointError):
    """The request conflicts with the stored state (a stale ``expected_version``, a reused id)."""

    code = "conflict"
    status = 409


class TooLargeError(CheckpointError):
    """A snapshot or request is bigger than the configured limit."""

    code = "too_large"
    status = 413

    def __init__(self, what: str, size: int, limit: int, *, hint: str | None = None) -> None:
        message = f"{what} is {size} bytes, over the limit of {limit} bytes"
        super().__init__(message if hint is None else f"{message}: {hint}")
        self.size = size
        self.limit = limit


class IntegrityError(CheckpointError):
    """Stored or supplied bytes do not match what they claim: checksum, size, key, tampering."""

    code = "integrity"
    status = 422

    def __init__(self, message: str, *, checkpoint_id: str | None = None) -> None:
        if checkpoint_id is not None:
            message = f"checkpoint {checkpoint_id}: {message}"
        super().__init__(message)
        self.checkpoint_id = checkpoint_id


class UnavailableError(CheckpointError):
    """The store cannot serve the request now (closed, shutting down, timed out)."""

    code = "unavailable"
    status = 503


class WriterMovedError(UnavailableError):
    """A cluster's write was not applied because the daemon that got it is not (or no longer)
    the log's writer, or the stream did not take its append. Nothing of it was applied: sent
    again with the same idempotency key, it reaches the writer (``CheckpointClient`` does so).
    Over NATS its 503 carries the header ``Checkpointd-Retry: writer``."""


class StorageError(UnavailableError):
    """The database refused a write (disk full, I/O error); nothing of the request was kept."""


class DatabaseInUseError(UnavailableError):
    """Another process (or manager) is the database's writer: its lock file is held."""


class InternalError(CheckpointError):
    """An unexpected failure; the details are in the log, not in the message."""

    code = "internal"
    status = 500


_SECRET_WORDS = ("key", "password", "token", "secret", "passphrase", "nkey", "credentials")


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS) and not key.endswith("_file")


ERRORS_BY_CODE: dict[str, type[CheckpointError]] = {
    cls.code: cls
    for cls in (
        InvalidRequestError,
        NotFoundError,
        ConflictError,
        TooLargeError,
        IntegrityError,
        UnavailableError,
        InternalError,
    )
}
