"""The oracle itself: it passes on a healthy store and catches each kind of damage it claims to."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from conftest import TEST_KEY, views_file

from checkpointd import CheckpointManager

from .oracle import check_store


async def populate(db_path: Path) -> dict[str, str]:
    async with CheckpointManager(database_path=str(db_path), encryption_key=TEST_KEY) as manager:
        acked = {}
        for n in range(6):
            cp = await manager.create(
                name=f"cp-{n}",
                session_id=f"s{n % 2}",
                snapshot={"state": {"n": n}},
                branches=["main"],
                encrypted=n % 2 == 0,
            )
            acked[cp.id] = cp.checksum
        await manager.update_checkpoint(next(iter(acked)), {"name": "renamed"})
        return acked


async def test_a_healthy_store_passes(tmp_path: Path) -> None:
    db_path = tmp_path / "cp.db"
    acked = await populate(db_path)
    verdict = await check_store(db_path, acked=acked, encryption_key=TEST_KEY)
    assert (verdict.events, verdict.checkpoints, verdict.acknowledged) == (7, 6, 6)


def _sql(path: Path | str, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            conn.execute(statement)


@pytest.mark.parametrize(
    ("damage", "finding"),
    [
        ("lost", "is lost"),
        ("projection", "differs from a rebuild"),
        ("blob", "checksum_valid=False"),
        ("gap", "seq has gaps"),
    ],
)
async def test_each_kind_of_damage_is_caught(tmp_path: Path, damage: str, finding: str) -> None:
    db_path = tmp_path / "cp.db"
    acked = await populate(db_path)
    if damage == "lost":
        acked["cp-never-stored"] = "0" * 64
    elif damage == "projection":
        _sql(views_file(db_path), "UPDATE stats_totals SET checkpoints = checkpoints + 1")
    elif damage == "blob":
        _sql(db_path, "UPDATE blobs SET data = zeroblob(length(data)) WHERE seq = 2")
    else:
        _sql(
            db_path,
            *[f"DROP TRIGGER {name}" for name in _triggers(db_path, "events")],
            "DELETE FROM events WHERE seq = 3",
        )
    with pytest.raises(AssertionError, match=finding):
        await check_store(db_path, acked=acked, encryption_key=TEST_KEY)


def _triggers(db_path: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
        )
        return [row[0] for row in rows]
