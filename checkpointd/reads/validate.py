"""Validation of one stored snapshot: decrypt, decompress, re-checksum, re-size, check schema.

The checksum and size the view row records are checked against the log's create event too:
someone who rewrites a snapshot and its row to match must also rewrite the hash chain.
Damage is reported in the ValidationReport, never raised, so one bad checkpoint can be
diagnosed without affecting anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from checkpointd.errors import CheckpointError
from checkpointd.events import store
from checkpointd.events.types import EventRecord, EventType
from checkpointd.results import ValidationReport
from checkpointd.snapshots import SnapshotCodec, canonical_decode, checksum
from checkpointd.snapshots.schema import check_snapshot_schema
from checkpointd.storage.readers import ReaderPool


async def create_event(readers: ReaderPool, row: Mapping[str, Any]) -> EventRecord | None:
    """The log's event at a view row's ``seq``: the checkpoint's create event, if intact."""
    found = await readers.fetchone(f"{store.SELECT} WHERE seq = ?", (row["seq"],))
    return None if found is None else store.from_row(found)


def validate_stored(
    codec: SnapshotCodec,
    row: Mapping[str, Any],
    blob: bytes | None,
    created: EventRecord | None,
) -> ValidationReport:
    """Check a view row's blob against the row's recorded checksum, size and the schema, and
    the row's checksum and size against ``created`` (see ``create_event``)."""
    report = inspect_stored(codec, row, blob)[0]
    checksum_valid, size_matches, error = _against_log(row, created)
    if error is None:
        return report
    return replace(
        report,
        is_valid=False,
        checksum_valid=report.checksum_valid and checksum_valid,
        size_matches=report.size_matches and size_matches,
        errors=(error, *report.errors),
    )


def _against_log(
    row: Mapping[str, Any], created: EventRecord | None
) -> tuple[bool, bool, str | None]:
    """Whether the row's checksum and size are its create event's, and the error if not."""
    named = f"checkpoint {row['id']}:"
    if created is None or created.type != EventType.CREATED or created.stream != row["id"]:
        return False, False, f"{named} the log has no create event for it at seq {row['seq']}"
    checksum, size = created.checksum_and_size()
    checksum_valid, size_matches = checksum == row["checksum"], size == row["size"]
    if checksum_valid and size_matches:
        return True, True, None
    error = (
        f"{named} its view row records checksum {row['checksum']} and size {row['size']}, its"
        f" create event (seq {created.seq}) {checksum} and {size}:"
        " the row was edited (`checkpointd rebuild` restores it from the log; then validate"
        " again to check the snapshot)"
    )
    return checksum_valid, size_matches, error


def inspect_stored(
    codec: SnapshotCodec, row: Mapping[str, Any], blob: bytes | None
) -> tuple[ValidationReport, dict[str, Any] | None]:
    """``validate_stored``'s report, and the decoded snapshot when it could be decoded."""
    checkpoint_id = row["id"]
    if blob is None:
        return failed_report(f"checkpoint {checkpoint_id}: snapshot bytes are missing"), None
    try:
        canonical = codec.open(checkpoint_id, bytes(blob))
    except CheckpointError as exc:
        return failed_report(exc.message), None
    errors: list[str] = []
    named = f"checkpoint {checkpoint_id}:"
    size_matches = len(canonical) == row["size"]
    if not size_matches:
        errors.append(f"{named} size is {len(canonical)} bytes, recorded {row['size']}")
    checksum_valid = checksum(canonical) == row["checksum"]
    if not checksum_valid:
        errors.append(f"{named} checksum is {checksum(canonical)}, recorded {row['checksum']}")
    if len(blob) != row["stored_size"]:
        errors.append(f"{named} stored size is {len(blob)} bytes, recorded {row['stored_size']}")
    try:
        snapshot = canonical_decode(canonical)
    except CheckpointError as exc:
        errors.append(exc.message)
        return _report(checksum_valid, size_matches, False, errors, []), None
    schema = check_snapshot_schema(snapshot)
    errors.extend(schema.errors)
    report = _report(checksum_valid, size_matches, schema.valid, errors, list(schema.warnings))
    return report, snapshot


def failed_report(message: str) -> ValidationReport:
    """The report of a snapshot that could not be read at all."""
    return _report(False, False, False, [message], [])


def _report(
    checksum_valid: bool,
    size_matches: bool,
    schema_valid: bool,
    errors: list[str],
    warnings: list[str],
) -> ValidationReport:
    return ValidationReport(
        is_valid=not errors and checksum_valid and size_matches and schema_valid,
        checksum_valid=checksum_valid,
        size_matches=size_matches,
        schema_valid=schema_valid,
        errors=tuple(errors),
        warnings=tuple(warnings),
    )
