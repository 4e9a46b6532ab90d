"""A database that refuses to grow (a full disk, provoked with SQLite's max_page_count)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from conftest import dump_projections, event_seqs

from checkpointd import CheckpointManager
from checkpointd.errors import StorageError
from checkpointd.write.handler import CommandHandler


async def cap_pages(manager: CheckpointManager, extra_pages: int | None) -> None:
    """Let the file grow by at most ``extra_pages`` pages from now (None: no cap)."""

    def run(handler: CommandHandler) -> None:
        pages = handler.conn.execute("PRAGMA page_count").fetchone()[0]
        limit = 1_073_741_823 if extra_pages is None else pages + extra_pages
        handler.conn.execute(f"PRAGMA max_page_count = {limit}")

    await manager._writer.exclusive(run)  # type: ignore[union-attr]  # test-only reach-in


async def create(manager: CheckpointManager, name: str, size: int) -> str:
    cp = await manager.create(
        name=name,
        session_id="s",
        snapshot={"state": {"blob": os.urandom(size // 2).hex()}},
        branches=["main"],
        compressed=False,
    )
    return cp.id


async def test_a_write_that_does_not_fit_fails_alone_and_writes_resume(
    manager: CheckpointManager, db_path: Path
) -> None:
    """With the disk full, a big create fails with StorageError, small ones in the same group
    still commit, nothing partial is left, and writes work again once space returns."""
    await create(manager, "before", 1_000)
    await cap_pages(manager, 40)  # room for small writes, not for 1 MB

    results = await asyncio.gather(
        create(manager, "huge", 1_000_000),
        *(create(manager, f"small-{n}", 200) for n in range(5)),
        return_exceptions=True,
    )
    assert isinstance(results[0], StorageError)
    assert all(isinstance(r, str) for r in results[1:])
    assert (await manager.verify_log()).ok
    assert event_seqs(db_path) == list(range(1, 7))
    live = dump_projections(db_path)
    assert await manager.rebuild() == 6
    assert dump_projections(db_path) == live

    await cap_pages(manager, None)
    huge = await create(manager, "huge-again", 1_000_000)
    found = await manager.get_checkpoint(huge)
    assert found is not None
    assert (await manager.get_checkpoint_stats()).total_checkpoints == 7


async def test_reads_keep_working_while_writes_are_refused(manager: CheckpointManager) -> None:
    """A full disk refuses writes with a clear storage error; reads still answer."""
    first = await create(manager, "first", 1_000)
    await cap_pages(manager, 0)
    with pytest.raises(StorageError, match="storage is full"):
        await create(manager, "more", 200_000)
    found = await manager.get_checkpoint(first)
    assert found is not None
    assert (await manager.get_checkpoint_stats()).total_checkpoints == 1
