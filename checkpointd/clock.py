"""Time: the clock seam and the one timestamp format used in storage and on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from checkpointd.errors import InvalidRequestError


class Clock(Protocol):
    """Source of the current time; tests pass a fake to move time without sleeping."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def format_timestamp(dt: datetime) -> str:
    """ISO-8601 UTC with microseconds and ``Z``: fixed width, so text order is time order.

    A naive datetime is taken as UTC.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    elif dt.utcoffset():
        dt = dt.astimezone(UTC)
    # isoformat() is several times faster than strftime() and this runs on every write.
    return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(value: str | datetime, *, field: str | None = None) -> datetime:
    """An aware UTC datetime from a datetime or an ISO-8601 string.

    Raises:
        InvalidRequestError: the value is not a datetime or an ISO-8601 string.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRequestError("expected an ISO-8601 datetime string", field=field)
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"not an ISO-8601 datetime: {value!r}", field=field) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
