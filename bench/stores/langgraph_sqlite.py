"""LangGraph's ``AsyncSqliteSaver`` (langgraph-checkpoint-sqlite) on its defaults.

A session is a LangGraph thread (``thread_id``); checkpoint ``i`` is one ``aput`` whose
``channel_values`` hold the snapshot under ``state`` and whose metadata holds the name and the
metadata checkpointd gets. The saver commits every ``aput`` (WAL, SQLite's default
``synchronous=FULL``); it has no batch write, so populating is one ``aput`` after another with
``PRAGMA synchronous=OFF`` on its connection (load speed only: the timed creates run on a fresh
saver with its defaults).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import LATEST_VERSION, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from bench import data
from bench.stores import writer_session

NAME = "langgraph AsyncSqliteSaver"


def config(thread: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(i: int) -> Checkpoint:
    return Checkpoint(
        v=LATEST_VERSION,
        id=str(uuid6(clock_seq=i)),
        ts=datetime.now(UTC).isoformat(),
        channel_values={"state": data.pooled_snapshot(i)},
        channel_versions={"state": i},
        versions_seen={},
        updated_channels=["state"],
    )


class LangGraph:
    name = NAME

    def __init__(self, saver: AsyncSqliteSaver, path: Path) -> None:
        self.saver = saver
        self.path = path
        self.heads: dict[str, str] = {}  # thread -> its newest checkpoint id, the next's parent

    async def _put(self, i: int, thread: str) -> None:
        cp = checkpoint(i)
        # Extra keys are stored and filterable; the TypedDict names only LangGraph's own.
        metadata = cast(
            "CheckpointMetadata",
            {"source": "loop", "step": i, "name": data.name(i), **data.metadata(i)},
        )
        await self.saver.aput(
            config(thread, self.heads.get(thread)),
            cp,
            metadata,
            {"state": i},
        )
        self.heads[thread] = cp["id"]

    async def create(self, i: int) -> None:
        await self._put(i, writer_session(i))

    async def populate(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            await self._put(i, data.session_of(i))

    async def latest(self, session: str) -> None:
        found = await self.saver.aget_tuple(config(session))
        assert found is not None

    async def list10(self, session: str) -> None:
        found = [t async for t in self.saver.alist(config(session), limit=10)]
        assert len(found) == 10

    async def get(self, ref: tuple[str, str]) -> None:
        found = await self.saver.aget_tuple(config(*ref))
        assert found is not None

    async def refs(self, k: int, seed: int, stored: int) -> list[tuple[str, str]]:
        del stored  # sampled from the file
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as conn:
            high = conn.execute("SELECT max(rowid) FROM checkpoints").fetchone()[0]
            find = "SELECT thread_id, checkpoint_id FROM checkpoints WHERE rowid >= ? LIMIT 1"
            rng = random.Random(seed)
            return [conn.execute(find, (rng.randint(1, high),)).fetchone() for _ in range(k)]


@asynccontextmanager
async def open_store(path: Path, *, populating: bool = False) -> AsyncIterator[LangGraph]:
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        if populating:
            await saver.conn.execute("PRAGMA synchronous=OFF")
        yield LangGraph(saver, path)
