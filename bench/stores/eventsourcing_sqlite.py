"""The eventsourcing library with its SQLite persistence, on its defaults.

Model: one ``Session`` aggregate per session; each checkpoint is a ``Checkpointed`` event in the
session's stream (the session is the consistency boundary, as checkpointd's ``session:<id>``
stream is for restores), so the session's state is its latest checkpoint. The library is
synchronous: the drivers call it from threads (a ``ThreadPoolExecutor`` of 64 threads at 64
callers). A caller holds its session aggregate, as a running agent would, so a create is
``session.checkpoint(...)`` and ``app.save(session)``: one transaction, one commit (WAL,
SQLite's default ``synchronous=FULL``). Saves of one session are serialised by a lock here, since
two threads triggering events on one aggregate object would race. Populating saves ten sessions
(1,000 checkpoints) per ``app.save``.

Reads: "latest" two ways — ``repository.get`` (the idiomatic current state: replays the
session's stream, 101 events) and the last event of the stream (``app.events.get(id,
desc=True, limit=1)``); list-10 is ``app.events.get(id, desc=True, limit=10)``; get by id is the
event at a (session, version).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench import data
from bench.stores import writer_session

NAME = "eventsourcing sqlite"
SESSIONS_PER_SAVE = 10


class Session(Aggregate):
    """A session whose state is its latest checkpoint."""

    @staticmethod
    def create_id(session: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"checkpointd-bench/{session}")

    def __init__(self, session: str) -> None:
        self.session = session
        self.latest: dict[str, Any] | None = None

    @event("Checkpointed")
    def checkpoint(self, name: str, snapshot: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.latest = {"name": name, "snapshot": snapshot, "metadata": metadata}


class Checkpoints(Application[UUID]):
    pass


def version_of(i: int) -> int:
    """Stream version of checkpoint ``i``'s event in a populated store (1 is ``Created``)."""
    return i % data.SESSION_SIZE + 2


class EventSourcing:
    name = NAME

    def __init__(self, app: Checkpoints) -> None:
        self.app = app
        self.sessions: dict[str, Session] = {}
        self.locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def create(self, i: int) -> None:
        name = writer_session(i)
        with self.locks[name]:
            session = self.sessions.get(name) or self.sessions.setdefault(name, Session(name))
            session.checkpoint(data.name(i), data.pooled_snapshot(i), data.metadata(i))
            self.app.save(session)

    async def populate(self, start: int, stop: int) -> None:
        # Whole sessions only, so every populated session has SESSION_SIZE checkpoints.
        assert start % data.SESSION_SIZE == 0
        assert stop % data.SESSION_SIZE == 0
        block = data.SESSION_SIZE * SESSIONS_PER_SAVE
        for first in range(start, stop, block):
            sessions = []
            for s in range(first, min(first + block, stop), data.SESSION_SIZE):
                session = Session(data.session_of(s))
                for i in range(s, s + data.SESSION_SIZE):
                    session.checkpoint(data.name(i), data.pooled_snapshot(i), data.metadata(i))
                sessions.append(session)
            self.app.save(*sessions)

    def latest(self, session: str) -> None:
        aggregate: Session = self.app.repository.get(Session.create_id(session))
        assert aggregate.latest is not None

    def latest_event(self, session: str) -> None:
        found = list(self.app.events.get(Session.create_id(session), desc=True, limit=1))
        assert len(found) == 1

    def list10(self, session: str) -> None:
        found = list(self.app.events.get(Session.create_id(session), desc=True, limit=10))
        assert len(found) == 10

    def get(self, ref: tuple[UUID, int]) -> None:
        stream, version = ref
        found = list(self.app.events.get(stream, gt=version - 1, lte=version))
        assert len(found) == 1

    async def refs(self, k: int, seed: int, stored: int) -> list[tuple[UUID, int]]:
        return [
            (Session.create_id(data.session_of(i)), version_of(i))
            for i in data.sample(k, stored, seed)
        ]


@asynccontextmanager
async def open_store(path: Path, *, populating: bool = False) -> AsyncIterator[EventSourcing]:
    del populating  # batches of 1,000 events per commit load fast enough on the defaults
    app = Checkpoints(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    try:
        yield EventSourcing(app)
    finally:
        app.close()
