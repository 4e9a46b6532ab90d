"""Scenario 8, races: one of many updates with one expected version wins; duplicates of one
keyed create take effect once and all get the same reply.

Through a ``checkpointd serve`` process and several separate NATS connections (as separate
client processes would race), and, for the updates, against the in-process manager too. Every
test ends with the oracle on the stopped store.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import OpenManager
from daemon.serving import DEADLINE, Daemon, Daemons
from nats.aio.client import Client

from checkpointd import Checkpoint, CheckpointClient, CheckpointManager
from checkpointd.errors import ConflictError

from .oracle import check_store

RACERS = 64
DUPLICATES = 100
CONNECTIONS = 8


@asynccontextmanager
async def clients_of(daemon: Daemon, count: int = CONNECTIONS) -> AsyncIterator[list[Any]]:
    """``count`` CheckpointClients, each on a NATS connection of its own."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                CheckpointClient(daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE)
            )
            for _ in range(count)
        ]
        yield clients


@asynccontextmanager
async def connections(url: str, count: int = CONNECTIONS) -> AsyncIterator[list[Client]]:
    """``count`` plain nats-py connections."""
    opened: list[Client] = []
    try:
        for _ in range(count):
            opened.append(await nats.connect(url))
        yield opened
    finally:
        for nc in opened:
            await nc.close()


async def stop(daemon: Daemon) -> None:
    assert await asyncio.to_thread(daemon.stop) == 0, daemon.diagnostics()


# -- racing updates -----------------------------------------------------------------------------


async def race_once(
    stores: Sequence[Any], checkpoint_id: str, expected_version: int, round_: int
) -> Checkpoint:
    """RACERS updates expecting ``expected_version``, spread over ``stores``: the one winner.

    Every loser must be a ConflictError: anything else (a timeout, a 500) fails the round.
    """
    results = await asyncio.gather(
        *(
            stores[n % len(stores)].update_checkpoint(
                checkpoint_id,
                {"name": f"round-{round_}-racer-{n}", "metadata": {"feature": f"racer-{n}"}},
                expected_version=expected_version,
            )
            for n in range(RACERS)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Checkpoint)]
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    others = [r for r in results if not isinstance(r, Checkpoint | ConflictError)]
    assert not others, others[:3]
    assert (len(winners), len(conflicts)) == (1, RACERS - 1)
    (winner,) = winners
    assert winner.version == expected_version + 1
    # The stored checkpoint is exactly what the winner was told, names and metadata alike.
    stored = await stores[0].get_checkpoint(checkpoint_id, include_snapshot=False)
    assert stored == winner
    return winner


async def race_rounds(stores: Sequence[Any], rounds: int) -> tuple[Checkpoint, list[Checkpoint]]:
    """A checkpoint, then ``rounds`` races on it, round r expecting version r."""
    created: Checkpoint = await stores[0].create(
        name="raced", session_id="races", snapshot={"state": {"n": 1}}, branches=["main"]
    )
    winners = [await race_once(stores, created.id, r, r) for r in range(1, rounds + 1)]
    history = await stores[0].history(checkpoint_id=created.id, limit=1000)
    assert [e.version for e in history.events] == list(range(1, rounds + 2))
    return created, winners


def lost_updates(events: Sequence[Any], winners: Sequence[Checkpoint]) -> int:
    """How many winners' changes the log does not hold as the update of their version."""
    updates = {e.version: e.data for e in events if e.type == "checkpoint.updated"}
    return sum(
        1
        for w in winners
        if (updates.get(w.version) or {}).get("changes", {}).get("name") != w.name
    )


async def test_one_of_64_racing_updates_wins_through_the_daemon(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """64 updates with one expected version over 8 connections: one wins, 63 get 409, the
    version goes up by one and the winner's change is what is stored, round after round."""
    await racing_updates_through_the_daemon(daemons, figures, rounds=3)


@pytest.mark.slow
async def test_one_of_64_racing_updates_wins_through_the_daemon_long(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """The same, 40 rounds."""
    await racing_updates_through_the_daemon(daemons, figures, rounds=40)


async def racing_updates_through_the_daemon(
    daemons: Daemons, figures: dict[str, Any], rounds: int
) -> None:
    daemon = daemons.start()
    async with clients_of(daemon) as clients:
        created, winners = await race_rounds(clients, rounds)
    await stop(daemon)
    await report(daemon.db_path, created, winners, figures, rounds)


async def test_one_of_64_racing_updates_wins_in_process(
    open_manager: OpenManager, db_path: Path, figures: dict[str, Any]
) -> None:
    """The same race against the in-process manager, where all 64 reach the writer within one
    group commit: 20 rounds, one winner each, the log holds exactly the winners' changes."""
    manager = await open_manager()
    created, winners = await race_rounds([manager], rounds=20)
    await manager.close()
    await report(db_path, created, winners, figures, 20)


async def report(
    db_path: Path,
    created: Checkpoint,
    winners: list[Checkpoint],
    figures: dict[str, Any],
    rounds: int,
) -> None:
    """The oracle, then the log read back from the file: every winner's change is there."""
    verdict = await check_store(db_path, acked={created.id: created.checksum})
    async with CheckpointManager(database_path=str(db_path)) as reopened:
        events = (await reopened.history(checkpoint_id=created.id, limit=1000)).events
        stored = await reopened.get_checkpoint(created.id, include_snapshot=False)
    losses = lost_updates(events, winners)
    assert losses == 0
    assert stored == winners[-1]
    assert verdict.events == rounds + 1
    figures.update(
        rounds=rounds,
        operations=1 + rounds * RACERS,
        acknowledged=1 + len(winners),
        conflicts=rounds * (RACERS - 1),
        losses=losses,
    )


# -- duplicate creates under one message id -----------------------------------------------------


def create_request(session_id: str, n: int = 0) -> dict[str, Any]:
    return {
        "name": f"duplicated {session_id}",
        "sessionId": session_id,
        "snapshot": {"state": {"n": n, "pad": "x" * 512}},
        "branches": ["main"],
        "metadata": {"feature": "dedup", "tags": ["race"]},
    }


async def raw_create(
    nc: Client, daemon: Daemon, body: bytes, msg_id: str
) -> tuple[bytes, dict[str, str]]:
    """One JSON create on plain NATS with ``Nats-Msg-Id``: the reply's bytes and headers."""
    reply = await nc.request(
        f"{daemon.prefix}.create",
        body,
        timeout=DEADLINE,
        headers={"Nats-Msg-Id": msg_id, "Content-Type": "application/json"},
    )
    return reply.data, dict(reply.headers or {})


async def duplicate_round(
    daemon: Daemon, clients: list[Any], ncs: list[Client], token: str
) -> tuple[Checkpoint, dict[str, Any]]:
    """DUPLICATES concurrent creates under one key through CheckpointClient (session
    ``token``-c) and as many as raw JSON (``token``-r): the replies, identical across the
    duplicates."""
    request = create_request(f"{token}-c")
    raw_body = json.dumps(create_request(f"{token}-r")).encode()
    through_clients, raw = await asyncio.gather(
        asyncio.gather(
            *(
                clients[n % len(clients)].create(request, idempotency_key=f"{token}-c")
                for n in range(DUPLICATES)
            )
        ),
        asyncio.gather(
            *(
                raw_create(ncs[n % len(ncs)], daemon, raw_body, f"{token}-r")
                for n in range(DUPLICATES)
            )
        ),
    )
    first = through_clients[0]
    assert all(reply == first for reply in through_clients)  # id, checksum, createdAt...
    assert first.version == 1
    assert all("Nats-Service-Error-Code" not in headers for _, headers in raw)
    replies = [json.loads(body) for body, _ in raw]
    assert all(reply == replies[0] for reply in replies), "the raw duplicates differ"
    return first, replies[0]


async def test_100_duplicate_creates_under_one_message_id(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """100 concurrent duplicates of a create under one Nats-Msg-Id over 8 connections, through
    CheckpointClient and as raw JSON: one checkpoint, 100 identical replies; the same id with
    another body is a 409; after a restart a retry still gets the first reply."""
    await duplicate_creates(daemons, figures, keys=1)


@pytest.mark.slow
async def test_100_duplicate_creates_under_one_message_id_long(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """The same with 20 message ids raced at once (4,000 concurrent requests)."""
    await duplicate_creates(daemons, figures, keys=20)


async def duplicate_creates(daemons: Daemons, figures: dict[str, Any], keys: int) -> None:
    daemon = daemons.start()
    tokens = [uuid.uuid4().hex[:8] for _ in range(keys)]
    async with clients_of(daemon) as clients, connections(daemon.url) as ncs:
        rounds = await asyncio.gather(*(duplicate_round(daemon, clients, ncs, t) for t in tokens))
        for token, (through_client, raw) in zip(tokens, rounds, strict=True):
            other = create_request(f"{token}-c", n=2)
            with pytest.raises(ConflictError, match="already used for another request"):
                await clients[1].create(other, idempotency_key=f"{token}-c")
            other_body = json.dumps(create_request(f"{token}-r", n=2)).encode()
            _, headers = await raw_create(ncs[1], daemon, other_body, f"{token}-r")
            assert headers.get("Nats-Service-Error-Code") == "409", headers
            for session, created_id in (
                (f"{token}-c", through_client.id),
                (f"{token}-r", raw["id"]),
            ):
                page = await clients[2].get_checkpoints_by_session(session)
                assert (page.total, page.items[0].id) == (1, created_id)
            assert (await clients[3].get_checkpoint(through_client.id)) == through_client

    await stop(daemon)
    restarted = daemons.restart(daemon)
    async with clients_of(restarted, 1) as (client,), connections(restarted.url, 1) as (nc,):
        for token, (through_client, raw) in zip(tokens, rounds, strict=True):
            again = await client.create(create_request(f"{token}-c"), idempotency_key=f"{token}-c")
            assert again == through_client
            body = json.dumps(create_request(f"{token}-r")).encode()
            assert json.loads((await raw_create(nc, restarted, body, f"{token}-r"))[0]) == raw
    await stop(restarted)

    acked = {}
    for through_client, raw in rounds:
        acked[through_client.id] = through_client.checksum
        acked[raw["id"]] = raw["checksum"]
    verdict = await check_store(daemon.db_path, acked=acked)
    assert (verdict.events, verdict.checkpoints) == (2 * keys, 2 * keys), verdict
    figures.update(
        rounds=keys,
        operations=keys * (4 * DUPLICATES + 4),  # duplicates, conflicts, retries after restart
        acknowledged=len(acked),
        replies=keys * (2 * DUPLICATES + 2),
        losses=len(acked) - verdict.checkpoints,
    )


async def test_a_retried_create_gets_the_first_reply_byte_for_byte(daemons: Daemons) -> None:
    """A raw create retried under its Nats-Msg-Id gets back the very bytes of the first reply
    (metadata in canonical key order, as a get returns it), not an equal-but-reordered one."""
    daemon = daemons.start()
    body = json.dumps(create_request("bytes")).encode()  # metadata keys not in sorted order
    async with connections(daemon.url, 1) as (nc,):
        first, _ = await raw_create(nc, daemon, body, "bytes-1")
        retried, _ = await raw_create(nc, daemon, body, "bytes-1")
        got = await nc.request(
            f"{daemon.prefix}.get",
            json.dumps({"id": json.loads(first)["id"], "includeSnapshot": False}).encode(),
            timeout=DEADLINE,
        )
    assert list(json.loads(got.data)["metadata"]) == ["feature", "priority", "tags"]
    assert json.loads(retried) == json.loads(first)
    assert retried == first
    await stop(daemon)
    await check_store(
        daemon.db_path, acked={json.loads(first)["id"]: json.loads(first)["checksum"]}
    )
