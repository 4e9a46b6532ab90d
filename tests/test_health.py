"""``health()``: the log's position once the store can answer, over both APIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checkpointd import CheckpointManager
from checkpointd.errors import UnavailableError

SNAPSHOT = {"state": {"progress": 1}}


async def test_health_reports_the_last_seq(store: Any) -> None:
    # A write first: the client's reads then answer at its position at least, whichever daemon
    # of a cluster answers (a new client's first read may come from one behind other writes).
    await store.create(name="h", session_id="health", snapshot=SNAPSHOT, branches=["m"])
    before = await store.health()
    for i in range(3):
        await store.create(name=f"h{i}", session_id="health", snapshot=SNAPSHOT, branches=["m"])
    assert await store.health() == before + 3


async def test_progress_is_reported_for_rebuild_and_verify(store: Any) -> None:
    for i in range(3):
        await store.create(name=f"p{i}", session_id="progress", snapshot=SNAPSHOT, branches=["m"])
    seen: list[int] = []
    events = await store.rebuild(progress=seen.append)
    verified = await store.verify_log(progress=seen.append)
    assert events == verified.events >= 3
    # Below 10,000 events the manager reports no intermediate step; the client reports the total.
    assert all(0 < count <= events for count in seen)


async def test_progress_is_reported_every_10000_events(tmp_path: Path) -> None:
    async with CheckpointManager(database_path=str(tmp_path / "p.db"), enable_fts=False) as manager:
        for start in range(0, 10_001, 1000):  # a batch holds at most 1,000
            await manager.create_batch(
                [
                    {"name": f"n{i}", "sessionId": "s", "snapshot": {}, "branches": ["m"]}
                    for i in range(start, min(start + 1000, 10_001))
                ]
            )
        seen: list[int] = []
        await manager.verify_log(progress=seen.append)
        assert seen == [10_000]
        seen.clear()
        assert await manager.rebuild(progress=seen.append) == 10_001
        assert seen == [10_000]


async def test_health_fails_once_closed(tmp_path: Path) -> None:
    manager = CheckpointManager(database_path=str(tmp_path / "h.db"))
    await manager.open()
    assert await manager.health() == 0
    await manager.close()
    with pytest.raises(UnavailableError):
        await manager.health()
