"""Scenario 5: NATS fails under the daemon; the daemon recovers without a restart.

The nats-server here is a private one the test kills (SIGKILL, then a new one on the same
port), freezes (SIGSTOP until the daemon has noticed, then SIGCONT), or starts only after the
daemon. Writers keep creating throughout; each logical create has one ``Nats-Msg-Id`` that every
retry reuses (the client's own retries and the writer's, after an UnavailableError), so however
many times a request reached the daemon, it must have one effect. The daemon pings every second
and counts the server dead after two missed pongs, so each fault is noticed in seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from typing import Any

import pytest
from daemon.serving import Daemon, Daemons
from natsserver import free_port, start_nats_server

from checkpointd import CheckpointClient
from checkpointd.errors import UnavailableError

from .oracle import check_store, log_and_views

WRITERS = 16
FAST_PINGS = {"ping_interval": 1, "max_outstanding_pings": 2}
DEADLINE = 120.0
"""Seconds a whole load may take before the test fails (faults included)."""


@dataclass
class Ledger:
    """What the writers asked for and what was acknowledged."""

    names: dict[str, str] = field(default_factory=dict)  # name -> acknowledged id
    acked: dict[str, str] = field(default_factory=dict)  # id -> checksum
    sent: int = 0
    unavailable: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def acknowledge(self, name: str, checkpoint_id: str, checksum: str) -> None:
        self.names[name] = checkpoint_id
        self.acked[checkpoint_id] = checksum
        self.progress.set()

    async def acks(self, at_least: int) -> None:
        """Wait until ``at_least`` creates are acknowledged in all."""
        while len(self.acked) < at_least:
            self.progress.clear()
            await self.progress.wait()


@asynccontextmanager
async def client_for(daemon: Daemon, url: str) -> AsyncIterator[CheckpointClient]:
    async with CheckpointClient(
        url, prefix=daemon.prefix, request_timeout=2, retries=1, connect_timeout=30
    ) as client:
        yield client


async def write(client: CheckpointClient, ledger: Ledger, writer: int, count: int) -> None:
    """``count`` logical creates, each retried with its own message id until acknowledged."""
    for n in range(count):
        name, key = f"w{writer}-{n}", uuid.uuid4().hex
        snapshot = {"state": {"writer": writer, "n": n, "pad": os.urandom(256 + 64 * n).hex()}}
        while True:
            ledger.sent += 1
            try:
                cp = await client.create(
                    name=name,
                    session_id=f"nats-{writer % 4}",
                    snapshot=snapshot,
                    branches=["main"],
                    idempotency_key=key,
                )
            except UnavailableError:
                ledger.unavailable += 1
                continue
            ledger.acknowledge(name, cp.id, cp.checksum)
            break


async def load_with_faults(
    daemon: Daemon, url: str, per_writer: int, faults: list[Callable[[], Awaitable[None]]]
) -> Ledger:
    """Run the writers; inject each fault once a further share of the creates is acknowledged."""
    ledger = Ledger()
    total = WRITERS * per_writer
    async with client_for(daemon, url) as client:
        writers = [write(client, ledger, w, per_writer) for w in range(WRITERS)]

        async def inject() -> None:
            for number, fault in enumerate(faults, 1):
                await ledger.acks(total * number // (len(faults) + 1))
                await fault()

        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(inject(), *writers)
    return ledger


def assert_exactly_once(daemon: Daemon, ledger: Ledger, expected: int) -> None:
    """Each logical create is stored once, under the id its acknowledgement named (read in the
    views: call it after the oracle, which catches them up with the log)."""
    assert len(ledger.names) == expected
    with closing(log_and_views(daemon.db_path)) as conn:
        stored = dict(conn.execute("SELECT name, id FROM checkpoints").fetchall())
        duplicates = conn.execute(
            "SELECT name, count(*) FROM checkpoints GROUP BY name HAVING count(*) > 1"
        ).fetchall()
    assert duplicates == []
    assert stored == ledger.names


async def survive(
    daemon: Daemon,
    url: str,
    faults: list[Callable[[], Awaitable[None]]],
    stop_server: Callable[[], None],
    figures: dict[str, Any],
) -> None:
    """The load with ``faults`` injected, a clean stop, then: each logical create stored
    exactly once, and the oracle."""
    per_writer = 10 + 5 * len(faults)
    try:
        ledger = await load_with_faults(daemon, url, per_writer, faults)
        assert await asyncio.to_thread(daemon.stop) == 0
    finally:
        stop_server()
    verdict = await check_store(daemon.db_path, acked=ledger.acked)
    assert_exactly_once(daemon, ledger, WRITERS * per_writer)
    figures.update(
        rounds=len(faults),
        operations=ledger.sent,
        acknowledged=verdict.acknowledged,
        losses=0,
        duplicates=0,
        unavailable=ledger.unavailable,
    )


async def expect_status(daemon: Daemon, line: str) -> None:
    await asyncio.to_thread(daemon.notify.expect, line, daemon.process)


async def test_a_daemon_started_while_nats_is_down_serves_once_it_is_up(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """No server at the URL: the daemon waits (saying so), and is READY once one starts."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    daemon = daemons.start({"nats": {"url": url, **FAST_PINGS}}, ready=False)
    await expect_status(daemon, f"STATUS=connecting to NATS at {url}")
    assert daemon.process.poll() is None
    server = start_nats_server(port=port)
    try:
        await expect_status(daemon, "READY=1")
        ledger = await load_with_faults(daemon, url, per_writer=4, faults=[])
        assert await asyncio.to_thread(daemon.stop) == 0
    finally:
        server.stop()
    verdict = await check_store(daemon.db_path, acked=ledger.acked)
    assert_exactly_once(daemon, ledger, WRITERS * 4)
    figures.update(
        rounds=1,
        operations=ledger.sent,
        acknowledged=verdict.acknowledged,
        losses=0,
        duplicates=0,
    )


@pytest.mark.parametrize(
    "kills", [pytest.param(2, id="2-kills"), pytest.param(8, id="8-kills", marks=pytest.mark.slow)]
)
async def test_nats_server_killed_and_restarted_under_load(
    daemons: Daemons, figures: dict[str, Any], kills: int
) -> None:
    """SIGKILL the server mid-load and start a new one on its port, ``kills`` times: the same
    daemon process serves again each time, and every logical create took effect once."""
    server = start_nats_server()
    daemon = daemons.start({"nats": {"url": server.url, **FAST_PINGS}})

    async def kill_and_restart() -> None:
        nonlocal server
        server.process.kill()
        server.process.wait()
        await expect_status(daemon, "STATUS=NATS disconnected; reconnecting")
        server = start_nats_server(port=server.port)
        await expect_status(daemon, f"STATUS=serving on {server.url} (reconnected)")

    def stop_the_last() -> None:  # ``server`` is the latest one started
        server.stop()

    await survive(daemon, server.url, [kill_and_restart] * kills, stop_the_last, figures)


@pytest.mark.parametrize(
    "freezes",
    [pytest.param(1, id="1-freeze"), pytest.param(4, id="4-freezes", marks=pytest.mark.slow)],
)
async def test_nats_server_frozen_and_thawed_under_load(
    daemons: Daemons, figures: dict[str, Any], freezes: int
) -> None:
    """SIGSTOP the server until the daemon counts it dead (missed pongs), then SIGCONT: the
    daemon reconnects by itself, and every logical create took effect once."""
    server = start_nats_server()
    daemon = daemons.start({"nats": {"url": server.url, **FAST_PINGS}})

    async def freeze_and_thaw() -> None:
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            await expect_status(daemon, "STATUS=NATS disconnected; reconnecting")
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        await expect_status(daemon, f"STATUS=serving on {server.url} (reconnected)")

    await survive(daemon, server.url, [freeze_and_thaw] * freezes, server.stop, figures)
