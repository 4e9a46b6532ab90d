"""checkpointd, embedded: ``CheckpointManager`` in this process."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench import data
from bench.stores import writer_session
from checkpointd import CheckpointManager, Config

NAME = "checkpointd"
PROJECTORS = ("thread", "process")  # Config.projector: the embedded default first
BATCH = 1000  # create_batch's maximum
NEWEST_FIRST = [("timestamp", "desc")]


def label(projector: str) -> str:
    """The row name of a projector setting: the embedded default is plain ``checkpointd``."""
    return NAME if projector == PROJECTORS[0] else f"{NAME} projector={projector}"


def views_file(path: Path) -> Path:
    """Where the manager on its defaults keeps the views of the log at ``path``."""
    return Path(Config(database_path=str(path)).views_file)


def item(i: int, session: str) -> dict[str, Any]:
    return {
        "name": data.name(i),
        "sessionId": session,
        "snapshot": data.pooled_snapshot(i),
        "branches": ["main"],
        "metadata": data.metadata(i),
    }


class Checkpointd:
    name = NAME

    def __init__(self, manager: CheckpointManager, path: Path) -> None:
        self.manager = manager
        self.path = path

    async def create(self, i: int) -> None:
        await self.manager.create(item(i, writer_session(i)))

    async def populate(self, start: int, stop: int) -> None:
        for first in range(start, stop, BATCH):
            items = [item(i, data.session_of(i)) for i in range(first, min(first + BATCH, stop))]
            await self.manager.create_batch(items)

    async def latest(self, session: str) -> None:
        page = await self.manager.get_checkpoints_by_session(
            session, order_by=NEWEST_FIRST, page=1, page_size=1, include_snapshot=True
        )
        assert page[0].snapshot is not None

    async def list10(self, session: str) -> None:
        page = await self.manager.get_checkpoints_by_session(
            session, order_by=NEWEST_FIRST, page=1, page_size=10
        )
        assert len(page) == 10

    async def list10_snapshots(self, session: str) -> None:
        page = await self.manager.get_checkpoints_by_session(
            session, order_by=NEWEST_FIRST, page=1, page_size=10, include_snapshot=True
        )
        assert len(page) == 10

    async def get(self, ref: str) -> None:
        assert await self.manager.get_checkpoint(ref) is not None

    async def refs(self, k: int, seed: int, stored: int) -> list[str]:
        del stored  # sampled from the file
        return checkpoint_ids(self.path, k, seed)


def checkpoint_ids(path: Path, k: int, seed: int) -> list[str]:
    """``k`` random checkpoint ids from the views (read directly: the API has no sampling)."""
    with sqlite3.connect(f"file:{views_file(path)}?mode=ro", uri=True) as conn:
        low, high = conn.execute("SELECT min(seq), max(seq) FROM checkpoints").fetchone()
        rng = random.Random(seed)
        find = "SELECT id FROM checkpoints WHERE seq >= ? ORDER BY seq LIMIT 1"
        return [conn.execute(find, (rng.randint(low, high),)).fetchone()[0] for _ in range(k)]


@asynccontextmanager
async def open_store(
    path: Path, *, populating: bool = False, **options: Any
) -> AsyncIterator[Checkpointd]:
    """The manager on its defaults; ``durability="normal"`` while populating (load speed)."""
    if populating:
        options.setdefault("durability", "normal")
    async with CheckpointManager(database_path=str(path), **options) as manager:
        yield Checkpointd(manager, path)
