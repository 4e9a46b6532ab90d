"""Time: the clock seam and the one timestamp format used in storage and on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from checkpointd.errors import InvalidRequestError

_MAX_TEXT = 64  # longer than any sensible ISO-8601 text; bounds the work done on client input
_SHOWN_TEXT = 40  # how much of a rejected value an error message quotes
_STORED_LENGTH = len("2024-05-01T12:00:00.000000Z")


class Clock(Protocol):
    """Source of the current time; tests pass a fake to move time without sleeping."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def format_timestamp(dt: datetime) -> str:
    """The one stored form of a datetime: ISO-8601 UTC text, e.g. ``2024-05-01T12:00:00.000000Z``.

    Fixed width (years before 1000 keep four digits), so text order is time order. A naive
    datetime, or one whose ``utcoffset()`` is None, is taken as UTC.

    Raises:
        OverflowError: ``dt`` has an offset and its UTC instant falls outside years 1-9999.
            Cannot happen for a value returned by ``parse_timestamp``.
    """
    if dt.tzinfo is UTC:  # the common case (every write): slice off isoformat's "+00:00"
        return dt.isoformat(timespec="microseconds")[:-6] + "Z"
    if dt.tzinfo is not None and dt.utcoffset():
        dt = dt.astimezone(UTC)
    # isoformat() is several times faster than strftime() and this runs on every write; unlike
    # glibc's strftime('%Y') it pads years before 1000 to four digits.
    return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(value: str | datetime, *, field: str | None = None) -> datetime:
    """An aware UTC datetime from a datetime or an ISO-8601 string (a trailing ``Z`` is accepted).

    A naive datetime or naive text is taken as UTC.

    Args:
        value: a datetime or ISO-8601 text of at most 64 characters.
        field: the request field ``value`` came from, named in the error.

    Raises:
        InvalidRequestError: ``value`` is neither a datetime nor ISO-8601 text, or its UTC
            instant falls outside years 1-9999 (e.g. ``0001-01-01T00:00:00+01:00``).
    """
    if isinstance(value, datetime):
        if value.tzinfo is UTC:  # the common case, e.g. from a Clock; skips the calls below
            return value
        try:
            return _as_utc(value)
        except OverflowError:
            message = f"{value.isoformat()} is outside the years 1-9999 in UTC"
            raise InvalidRequestError(message, field=field) from None
    if not isinstance(value, str):
        message = f"expected an ISO-8601 timestamp, got {type(value).__name__}"
        raise InvalidRequestError(message, field=field)
    if len(value) == _STORED_LENGTH and value[-1] == "Z":  # the stored form: every row read
        try:
            return datetime.fromisoformat(value)  # reads a trailing "Z" as UTC (3.11+)
        except ValueError:
            pass  # the general path below names the problem
    if len(value) > _MAX_TEXT:
        raise _not_a_timestamp(value, field)
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
        # fromisoformat() gives no tzinfo or a fixed offset, so the cheap tzinfo test suffices.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _not_a_timestamp(value, field) from None


def _as_utc(dt: datetime) -> datetime:
    # utcoffset(), not tzinfo: astimezone() would read a tzinfo without an offset as local time.
    if dt.utcoffset() is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _not_a_timestamp(text: str, field: str | None) -> InvalidRequestError:
    if len(text) > _SHOWN_TEXT:
        text = text[: _SHOWN_TEXT - 3] + "..."
    return InvalidRequestError(f"{text!r} is not an ISO-8601 timestamp", field=field)
