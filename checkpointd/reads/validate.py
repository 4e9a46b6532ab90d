"""Validation of one stored snapshot: decrypt, decompress, re-checksum, re-size, check schema.

Damage is reported in the ValidationReport, never raised, so one bad checkpoint can be
diagnosed without affecting anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from checkpointd.errors import CheckpointError
from checkpointd.results import ValidationReport
from checkpointd.snapshots import SnapshotCodec, canonical_decode, checksum
from checkpointd.snapshots.schema import check_snapshot_schema


def validate_stored(
    codec: SnapshotCodec, row: Mapping[str, Any], blob: bytes | None
) -> ValidationReport:
    """Check a view row's blob against the row's recorded checksum, size and the schema."""
    return inspect_stored(codec, row, blob)[0]


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
