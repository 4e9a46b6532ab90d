"""The one timestamp format: ``format_timestamp`` and ``parse_timestamp`` in ``clock``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.clock import format_timestamp, parse_timestamp
from checkpointd.errors import InvalidRequestError


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset, which makes a datetime naive in all but name."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_format_timestamp_is_utc_with_microseconds() -> None:
    """A datetime in any zone formats as its UTC instant with six fractional digits and a Z."""
    stamp = datetime(2024, 5, 1, 14, 30, 5, 42, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(stamp) == "2024-05-01T12:30:05.000042Z"
    assert format_timestamp(stamp) == stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_format_timestamp_pads_early_years() -> None:
    """Years before 1000 keep four digits so stored text sorts in time order."""
    assert format_timestamp(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("tz", [None, _NoOffset()])
def test_format_timestamp_takes_a_datetime_without_offset_as_utc(tz: tzinfo | None) -> None:
    """A naive datetime, or one whose tzinfo has no offset, formats as that time in UTC."""
    assert format_timestamp(datetime(2024, 5, 1, 12, tzinfo=tz)) == "2024-05-01T12:00:00.000000Z"


@pytest.mark.parametrize(
    "text", ["2024-05-01T12:30:05Z", "2024-05-01T14:30:05+02:00", "2024-05-01T12:30:05"]
)
def test_parse_timestamp_returns_aware_utc(text: str) -> None:
    """ISO-8601 text with Z, an offset or no zone parses to the same aware UTC datetime."""
    assert parse_timestamp(text) == datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
    assert parse_timestamp(text).tzinfo is UTC


@pytest.mark.parametrize("tz", [None, _NoOffset()])
def test_parse_timestamp_takes_a_datetime_without_offset_as_utc(tz: tzinfo | None) -> None:
    """A naive datetime, or one whose tzinfo has no offset, is read as UTC, not local time."""
    assert parse_timestamp(datetime(2024, 5, 1, 12, tzinfo=tz)) == datetime(
        2024, 5, 1, 12, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024-13-01",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2024-05-01T12:30:05." + "1" * 45,  # parseable, but over the 64-character bound
    ],
)
def test_parse_timestamp_rejects_non_timestamps(text: str) -> None:
    """Text that is not a representable ISO-8601 timestamp raises InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="is not an ISO-8601 timestamp"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=1))),
    ],
)
def test_parse_timestamp_rejects_datetimes_with_no_utc_form(stamp: datetime) -> None:
    """A datetime whose UTC instant is outside years 1-9999 raises InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="outside the years 1-9999 in UTC"):
        parse_timestamp(stamp)


def test_parse_timestamp_rejects_other_types() -> None:
    """A value that is neither text nor a datetime is rejected with its type named."""
    with pytest.raises(InvalidRequestError, match="expected an ISO-8601 timestamp, got int"):
        parse_timestamp(1700000000)  # type: ignore[arg-type]


def test_parse_timestamp_error_names_the_field_and_cuts_long_values() -> None:
    """The error names the request field and quotes at most 40 characters of the value."""
    with pytest.raises(InvalidRequestError, match="is not an ISO-8601 timestamp") as caught:
        parse_timestamp("x" * 60, field="timestamp")
    assert caught.value.field == "timestamp"
    assert caught.value.message == f"timestamp: {'x' * 37 + '...'!r} is not an ISO-8601 timestamp"


_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES
)


@given(_DATETIMES)
def test_timestamp_round_trips(stamp: datetime) -> None:
    """Parsing a formatted timestamp gives back the same instant."""
    assert parse_timestamp(format_timestamp(stamp)) == stamp


@given(_DATETIMES, _DATETIMES)
def test_formatted_text_sorts_in_time_order(first: datetime, second: datetime) -> None:
    """Comparing formatted text gives the same answer as comparing the instants."""
    assert (format_timestamp(first) < format_timestamp(second)) == (first < second)
