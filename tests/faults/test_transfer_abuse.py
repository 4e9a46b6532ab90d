"""Transfer abuse: chunked uploads that nobody finishes, against a running daemon.

An attacker on a raw nats-py connection starts uploads and never finishes them: first 900 KB
chunks from its one connection until the daemon refuses (it used to accept them until the
memory for all transfers was gone, and then every big create and every big reply failed with
a 503 for five minutes); then a flood of empty chunks, each from a reply subject of its own, as
a client forging the name of its connection sends them (each used to be accepted, and every
later transfer scanned them all). What a user would notice is asserted: another client's big
create and big get go through beside the first attacker, the flood holds at most
``max_uploads``, and once the attacker stops its uploads are gone within seconds. Afterwards
the oracle finds every acknowledged create.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Any

import nats
from contract import CHUNK, ERROR_CODE, UPLOAD
from daemon.serving import DEADLINE, Daemon, Daemons
from nats.aio.client import Client
from nats.aio.msg import Msg

from checkpointd import CheckpointClient
from checkpointd.errors import UnavailableError
from checkpointd.models import Checkpoint

from .oracle import check_store

CHUNK_SIZE = 900_000
ATTEMPTS = 400
"""Uploads the attacker tries to start: more than the 256 MiB the daemon once held for all
transfers (``max_checkpoint_size`` below makes that the budget) takes in 900 KB chunks."""
SMALL_LIMIT = {"max_checkpoint_size": 4 << 20}
FLOOD = 2_000


def big_snapshot(size: int) -> dict[str, Any]:
    """A snapshot of about ``size`` bytes that does not compress to nothing."""
    rows = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(size // 64)]
    return {"sessions": ["s-1"], "state": {"rows": rows}}


def error_code(msg: Msg) -> str | None:
    return (msg.headers or {}).get(ERROR_CODE)


def error_message(msg: Msg) -> str:
    message: str = json.loads(msg.data)["error"]["message"]
    return message


async def abandon_uploads(nc: Client, prefix: str) -> tuple[int, Msg | None]:
    """Start uploads of two 900 KB chunks, sending only the first, until one is refused:
    how many were accepted, and the refusal."""
    data = bytes(CHUNK_SIZE)
    for accepted in range(ATTEMPTS):
        headers = {UPLOAD: uuid.uuid4().hex, CHUNK: "0/2"}
        reply = await nc.request(f"{prefix}.upload", data, timeout=DEADLINE, headers=headers)
        if error_code(reply) is not None:
            return accepted, reply
    return ATTEMPTS, None


async def big_round_trip(daemon: Daemon, snapshot: dict[str, Any]) -> Checkpoint:
    """A big create and a big get through a client of its own; the created checkpoint."""
    async with CheckpointClient(
        daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE, retries=0
    ) as client:
        created = await client.create(
            name="big", session_id="s-1", snapshot=snapshot, branches=["main"]
        )
        got = await client.get_checkpoint(created.id)
    assert got is not None
    assert got.snapshot == snapshot
    return created


async def test_one_connections_abandoned_uploads_do_not_deny_another_clients_big_create(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """An attacker's connection is refused (503 ``unavailable``) after its 16th unfinished
    upload; meanwhile another client's big create and big get (both chunked) succeed."""
    daemon = daemons.start(SMALL_LIMIT)
    attacker = await nats.connect(daemon.url, max_reconnect_attempts=0)
    try:
        accepted, refusal = await abandon_uploads(attacker, daemon.prefix)
        snapshot = big_snapshot(3 << 20)
        created = await big_round_trip(daemon, snapshot)
    finally:
        await attacker.close()
    assert refusal is not None, f"all {ATTEMPTS} uploads of 900 KB were accepted"
    assert error_code(refusal) == "503"
    assert "this connection has 16 uploads in progress" in error_message(refusal)
    assert accepted == 16
    assert await asyncio.to_thread(daemon.stop) == 0
    verdict = await check_store(daemon.db_path, acked={created.id: created.checksum})
    figures.update(
        rounds=1,
        operations=accepted + 1 + 2,
        acknowledged=verdict.acknowledged,
        losses=0,
        abandoned_uploads=accepted,
    )


async def flood(nc: Client, prefix: str) -> list[Msg]:
    """``FLOOD`` empty first chunks of new uploads, each from a reply subject of its own (each
    a connection of its own to the daemon); their replies."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(f"{inbox}.>")
    try:
        for n in range(FLOOD):
            headers = {UPLOAD: uuid.uuid4().hex, CHUNK: "0/2"}
            await nc.publish(f"{prefix}.upload", b"", reply=f"{inbox}.{n}.r", headers=headers)
        async with asyncio.timeout(DEADLINE):
            return [await sub.next_msg(timeout=DEADLINE) for _ in range(FLOOD)]
    finally:
        await sub.unsubscribe()


async def test_a_flood_of_empty_uploads_is_bounded_and_expires_within_seconds(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """2,000 empty chunks starting uploads from 2,000 reply subjects: ``max_uploads`` of them
    are accepted and the rest refused with a 503; once the flood stops, a big create goes
    through within seconds (its uploads went idle), not after minutes."""
    daemon = daemons.start({**SMALL_LIMIT, "max_uploads": 64, "transfer_idle_timeout": 1.0})
    attacker = await nats.connect(daemon.url, max_reconnect_attempts=0)
    try:
        replies = await flood(attacker, daemon.prefix)
    finally:
        await attacker.close()
    codes = [error_code(msg) for msg in replies]
    assert codes.count(None) == 64
    assert codes.count("503") == FLOOD - 64
    refused = next(msg for msg in replies if error_code(msg) == "503")
    assert "64 uploads are in progress, the most allowed" in error_message(refused)
    snapshot = big_snapshot(3 << 20)
    started, refusals = time.monotonic(), 0
    async with asyncio.timeout(30):  # the old expiry took 300 s
        while True:
            try:
                created = await big_round_trip(daemon, snapshot)
                break
            except UnavailableError:  # the flood's uploads are not idle long enough yet
                refusals += 1
                await asyncio.sleep(0.2)
    recovered = time.monotonic() - started
    assert await asyncio.to_thread(daemon.stop) == 0
    verdict = await check_store(daemon.db_path, acked={created.id: created.checksum})
    figures.update(
        rounds=1,
        operations=FLOOD + refusals + 3,
        acknowledged=verdict.acknowledged,
        losses=0,
        flood_accepted=64,
        recovered_after_s=round(recovered, 2),
    )
