"""The field table: the schema, the API value and the filterable fields all follow it."""

from __future__ import annotations

import dataclasses
import sqlite3
import traceback
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.fields import ATTRIBUTES, COLUMNS, FIELDS
from checkpointd.query.columns import COLUMNS as FILTERABLE
from checkpointd.query.columns import LIST_COLUMNS
from checkpointd.rows import checkpoint_from_row
from checkpointd.storage.schema import create_views


def test_the_views_checkpoints_table_has_the_tables_columns(tmp_path: Path) -> None:
    """The views schema's checkpoints table has the table's columns, in order, each with its
    codec's type and NOT NULL unless the field may be null."""
    with closing(sqlite3.connect(tmp_path / "views.db")) as conn:
        create_views(conn)
        found = [row[1:4] for row in conn.execute("PRAGMA table_info(checkpoints)")]

    expected = [(f.name, f.codec.sql_type, int(not f.nullable)) for f in FIELDS if f.source]
    assert [name for name, _, _ in found] == list(COLUMNS)
    # seq, the rowid, is INTEGER PRIMARY KEY: never null, whatever table_info says.
    assert [(n, t, 1 if n == "seq" else nn) for n, t, nn in found] == expected


def test_checkpoint_has_the_tables_attributes() -> None:
    """Checkpoint's attributes are the table's, and exactly those that may be null are
    optional."""
    hints = {f.name: str(f.type) for f in dataclasses.fields(Checkpoint)}
    nullable = {f.name for f in FIELDS if f.wire is not None and f.nullable}

    assert set(hints) == set(ATTRIBUTES)
    assert {name for name, hint in hints.items() if hint.endswith("| None")} == nullable


def _request(**extra: Any) -> dict[str, Any]:
    return {
        "name": "first",
        "sessionId": "s-1",
        "snapshot": {"step": 1},
        "branches": ["main", "feature-x"],
        "metadata": {"feature": "auth", "priority": "high", "tags": ["a", "b"]},
        **extra,
    }


async def test_a_checkpoint_reads_back_the_same_in_every_form(manager: CheckpointManager) -> None:
    """A checkpoint with every optional field set, and one with none, read back equal to the
    create's reply, and their wire forms convert back to the same values."""
    base = await manager.create(_request())
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    full = await manager.create(
        _request(createdBy="ann", retentionExpiresAt=expires, restoredFrom=base.id)
    )

    for created in (base, full):
        read = await manager.get_checkpoint(created.id)
        assert read == created
        assert Checkpoint.from_wire(created.to_wire()) == created
    assert (full.created_by, full.retention_expires_at, full.restored_from) == (
        "ann",
        expires,
        base.id,
    )


async def test_every_filterable_field_filters_and_sorts_a_list(
    manager: CheckpointManager,
) -> None:
    """Each field the table marks filterable can be compared in ``where`` (with the value its
    wire form shows) and sorted by in ``orderBy``."""
    base = await manager.create(_request())
    expires = datetime.now(UTC) + timedelta(days=3)
    full = await manager.create(
        _request(name="second", createdBy="ann", retentionExpiresAt=expires, restoredFrom=base.id)
    )
    wire = full.to_wire()

    for name in FILTERABLE:
        found = await manager.get_checkpoints_by_session(
            "s-1", where=f"{name} = ?", params=[wire[name]]
        )
        assert full.id in [cp.id for cp in found], name
        ordered = await manager.get_checkpoints_by_session("s-1", order_by=[(name, "asc")])
        assert {cp.id for cp in ordered} == {base.id, full.id}, name
    for name in LIST_COLUMNS:
        found = await manager.get_checkpoints_by_session(
            "s-1", where=f"? IN {name}", params=["feature-x"]
        )
        assert {cp.id for cp in found} == {base.id, full.id}, name


def test_generated_code_shows_in_a_traceback() -> None:
    """A failure inside a conversion generated from the table shows the generated line."""
    with pytest.raises(KeyError) as raised:
        checkpoint_from_row({}, snapshot=None)

    shown = "".join(traceback.format_exception(raised.value))
    assert "id=row['id']" in shown
