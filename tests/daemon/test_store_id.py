"""The store's id: kept in the log, advertised in ``$SRV.INFO``, checked before serving a prefix."""

from __future__ import annotations

import re
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import nats
from natsserver import NatsServer

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.daemon.discovery import services

from .serving import DEADLINE, Daemons


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}.checkpoint"


async def test_the_store_id_is_chosen_once_and_kept(tmp_path: Path) -> None:
    """A new log gets a random 32-hex-digit id that reopening keeps; another log gets another."""
    async with CheckpointManager(database_path=str(tmp_path / "a.db")) as manager:
        first = await manager.store_id()
    async with CheckpointManager(database_path=str(tmp_path / "a.db")) as manager:
        again = await manager.store_id()
    async with CheckpointManager(database_path=str(tmp_path / "b.db")) as manager:
        other = await manager.store_id()

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert again == first
    assert other != first


async def test_the_service_advertises_its_store_id_and_prefix(
    manager: CheckpointManager, served: str, nats_server: NatsServer
) -> None:
    """$SRV.INFO.checkpointd carries the store's id and the subject prefix as metadata."""
    nc = await nats.connect(nats_server.url)
    try:
        seen = [service for service in await services(nc) if service.serves(served)]
    finally:
        await nc.close()

    assert [(s.store_id, s.prefix) for s in seen] == [(await manager.store_id(), served)]


async def test_a_second_store_on_the_same_prefix_refuses_to_start(daemons: Daemons) -> None:
    """Two daemons on different databases and one prefix: the second exits 78, naming both."""
    shared = {"nats": {"subject_prefix": prefix()}}
    first = daemons.start(shared)
    second = daemons.start(shared, ready=False)

    assert second.wait() == 78, second.diagnostics()
    assert "READY=1" not in second.notify.states()
    with closing(sqlite3.connect(first.db_path)) as conn:
        (first_id,) = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    refusal = second.stderr()
    assert "nats.subject_prefix" in refusal
    assert "different store" in refusal
    assert first_id in refusal
    async with CheckpointClient(first.url, prefix=first.prefix, request_timeout=DEADLINE) as c:
        created = await c.create(name="kept", session_id="s", snapshot={}, branches=["main"])
    with closing(sqlite3.connect(second.db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    with closing(sqlite3.connect(first.db_path)) as conn:
        assert conn.execute("SELECT stream FROM events").fetchall() == [(created.id,)]


async def test_a_copy_of_the_store_may_share_the_prefix(daemons: Daemons, tmp_path: Path) -> None:
    """A daemon on a copy of the database (the same store id) starts beside the original."""
    shared = {"nats": {"subject_prefix": prefix()}}
    original = daemons.start(shared)
    assert original.stop() == 0
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(original.db_path)) as source, closing(sqlite3.connect(copy)) as to:
        source.backup(to)
    daemons.restart(original)

    replica = daemons.start({**shared, "database_path": str(copy)})

    assert "READY=1" in replica.notify.states()
