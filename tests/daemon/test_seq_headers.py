"""Log positions on the wire: ``Checkpointd-Seq`` on replies, ``Checkpointd-Min-Seq`` on requests.

Every reply to a verb says the log position it was answered at (a write: the seq of its last
event; a read: the position the views answered at); a request's ``Checkpointd-Min-Seq`` makes
its reads wait for at least that position, failing with ``unavailable`` after the daemon's
``read_timeout``. ``CheckpointClient`` keeps the highest position it saw and asks for it on every
request, which is how a client reads its own writes whichever daemon answers.

Raw nats-py requests where the headers themselves are under test (their names from
``contract``, as the protocol spells them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from conftest import OpenManager, serving
from contract import CONTENT_TYPE, DOWNLOAD, ERROR, ERROR_CODE, JSON, MIN_SEQ, SEQ
from nats.aio.client import Client
from nats.aio.msg import Msg
from natsserver import NatsServer, start_nats_server, subscribed

from checkpointd import CheckpointClient, CheckpointManager

DEADLINE = 10.0  # seconds a reply may take before the test fails (read_timeout is far shorter)
READ_TIMEOUT = 0.3  # seconds a read waits for the views before it answers unavailable


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A raw nats-py connection to the session's nats-server."""
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.fixture
async def quick(open_manager: OpenManager) -> CheckpointManager:
    """A manager whose reads give up waiting for the views after READ_TIMEOUT seconds."""
    return await open_manager(read_timeout=READ_TIMEOUT)


@pytest.fixture
async def prefix(quick: CheckpointManager, nats_server: NatsServer) -> AsyncIterator[str]:
    """``quick`` served on the session's nats-server; its subject prefix."""
    async with serving(quick, nats_server.url) as served_prefix:
        yield served_prefix


class Wire:
    """Requests by hand: JSON bodies, extra headers as given."""

    def __init__(self, nc: Client, prefix: str) -> None:
        self.nc = nc
        self.prefix = prefix

    async def call(self, verb: str, body: Any = None, **headers: str) -> Msg:
        sent = {CONTENT_TYPE: JSON, **{name.replace("_", "-"): v for name, v in headers.items()}}
        return await self.nc.request(
            f"{self.prefix}.{verb}", json.dumps(body or {}).encode(), timeout=DEADLINE, headers=sent
        )

    async def create(self, **fields: Any) -> tuple[dict[str, Any], int]:
        """Create a checkpoint; the reply body and the reply's position."""
        msg = await self.call("create", checkpoint(**fields))
        return ok(msg), seq_of(msg)


def checkpoint(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "milestone",
        "sessionId": "s-1",
        "snapshot": {"state": {"step": 1}},
        "branches": ["main"],
    }
    body.update(fields)
    return body


def seq_of(msg: Msg) -> int:
    """The reply's Checkpointd-Seq, which every reply to a verb carries as decimal digits."""
    value = (msg.headers or {}).get(SEQ)
    assert value is not None, f"reply without {SEQ}: {msg.headers}"
    assert value.isascii(), value
    assert value.isdigit(), value
    return int(value)


def ok(msg: Msg) -> Any:
    headers = msg.headers or {}
    assert ERROR_CODE not in headers, f"{headers.get(ERROR_CODE)}: {headers.get(ERROR)}"
    return json.loads(msg.data)


def error_code(msg: Msg) -> str:
    headers = msg.headers or {}
    assert ERROR_CODE in headers, f"expected an error reply, got {msg.data[:300]!r}"
    code: str = json.loads(msg.data)["error"]["code"]
    return code


async def last_event_seq(wire: Wire, checkpoint_id: str) -> int:
    """The seq of a checkpoint's newest event, as ``checkpoint.history`` reports it."""
    events = ok(await wire.call("history", {"checkpointId": checkpoint_id}))["events"]
    return int(events[-1]["seq"])


@pytest.fixture
def wire(nc: Client, prefix: str) -> Wire:
    return Wire(nc, prefix)


async def test_a_write_reply_carries_the_seq_of_its_last_event(wire: Wire) -> None:
    created, created_at = await wire.create()
    assert created_at == await last_event_seq(wire, created["id"])

    update = await wire.call("update", {"id": created["id"], "changes": {"name": "renamed"}})
    ok(update)
    assert seq_of(update) == await last_event_seq(wire, created["id"])

    batch = await wire.call(
        "create_batch", {"checkpoints": [checkpoint(sessionId="s-b"), checkpoint(sessionId="s-b")]}
    )
    last = ok(batch)["checkpoints"][-1]
    assert seq_of(batch) == await last_event_seq(wire, last["id"])

    writes = [{"index": 0, "channel": "c", "value": 1}]
    put = await wire.call(
        "put_writes", {"checkpointId": created["id"], "taskId": "t", "writes": writes}
    )
    ok(put)
    assert seq_of(put) == await last_event_seq(wire, created["id"])


async def test_write_positions_increase_across_writes(wire: Wire) -> None:
    first, _ = await wire.create()
    positions = [(await wire.create(sessionId=f"s-{n}"))[1] for n in range(5)]
    update = await wire.call("update", {"id": first["id"], "changes": {"name": "renamed"}})
    delete = await wire.call("delete", {"id": first["id"]})
    positions += [seq_of(update), seq_of(delete)]

    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


READS = [
    ("get", lambda ids: {"id": ids[-1]}),
    ("list", lambda ids: {"sessionId": "s-1"}),
    ("search", lambda ids: {"query": "milestone"}),
    ("stats", lambda ids: {}),
    ("validate", lambda ids: {"id": ids[-1]}),
    ("lineage", lambda ids: {"id": ids[-1]}),
    ("diff", lambda ids: {"from": ids[0], "to": ids[-1]}),
    ("session_state", lambda ids: {"sessionId": "s-1"}),
    ("sessions", lambda ids: {}),
    ("history", lambda ids: {"sessionId": "s-1"}),
    ("health", lambda ids: {}),
    ("verify", lambda ids: {}),
    ("get_writes", lambda ids: {"checkpointId": ids[-1]}),
]


@pytest.mark.parametrize(("verb", "body"), READS, ids=[verb for verb, _ in READS])
async def test_a_read_is_answered_at_or_after_every_acknowledged_write(
    wire: Wire, verb: str, body: Any
) -> None:
    ids, acknowledged = [], []
    for step in range(3):
        created, seq = await wire.create(snapshot={"state": {"step": step}})
        ids.append(created["id"])
        acknowledged.append(seq)

    reply = await wire.call(verb, body(ids))

    ok(reply)
    assert seq_of(reply) >= max(acknowledged)


async def test_a_read_with_the_last_write_as_its_floor_sees_that_write(wire: Wire) -> None:
    created, seq = await wire.create(sessionId="s-floor")

    reply = await wire.call("list", {"sessionId": "s-floor"}, Checkpointd_Min_Seq=str(seq))

    assert [item["id"] for item in ok(reply)["items"]] == [created["id"]]
    assert seq_of(reply) >= seq


async def test_a_floor_beyond_the_log_head_is_unavailable_after_the_read_timeout(
    wire: Wire,
) -> None:
    created, head = await wire.create()

    reply = await wire.call("get", {"id": created["id"]}, Checkpointd_Min_Seq=str(head + 1000))

    assert error_code(reply) == "unavailable"
    assert (reply.headers or {})[ERROR_CODE] == "503"
    assert seq_of(reply) == head  # an error reply says the log head it knew


async def test_an_error_reply_carries_the_log_head(wire: Wire) -> None:
    _, head = await wire.create()

    reply = await wire.call("get", {"id": "no-such-checkpoint"})

    assert error_code(reply) == "not_found"
    assert seq_of(reply) == head


JUNK = [
    "abc",
    "-1",
    "+5",
    "1.5",
    "1e3",
    "0x10",
    "١٢",  # Arabic-Indic digits: digits to str.isdigit, not to the protocol
    "",
    "9007199254740992",  # 2^53: beyond any position
    "1" * 400,
]


@pytest.mark.parametrize("value", JUNK)
async def test_a_junk_floor_is_invalid_and_names_the_header(wire: Wire, value: str) -> None:
    _, head = await wire.create()

    reply = await wire.call("list", {"sessionId": "s-1"}, Checkpointd_Min_Seq=value)

    assert error_code(reply) == "invalid"
    assert MIN_SEQ in json.loads(reply.data)["error"]["message"]
    assert seq_of(reply) == head


async def test_the_client_keeps_the_highest_position_and_reads_its_writes(
    prefix: str, nats_server: NatsServer, wire: Wire
) -> None:
    async with CheckpointClient(nats_server.url, prefix=prefix, request_timeout=DEADLINE) as client:
        assert client.last_seq == 0
        seen = []
        for step in range(3):
            created = await client.create(
                name="milestone", session_id="s-client", snapshot={"step": step}, branches=[]
            )
            seen.append(client.last_seq)
            assert client.last_seq == await last_event_seq(wire, created.id)

        page = await client.get_checkpoints_by_session("s-client")

        assert seen == sorted(seen)
        assert len(set(seen)) == len(seen)
        assert created.id in [item.id for item in page]
        assert client.last_seq >= seen[-1]


async def test_the_client_asks_every_request_for_its_last_position(
    prefix: str, nats_server: NatsServer, nc: Client
) -> None:
    """What another daemon would see: the client's read carries the position of its write."""
    async with (
        CheckpointClient(nats_server.url, prefix=prefix, request_timeout=DEADLINE) as client,
        subscribed(nc, f"{prefix}.>") as messages,
    ):
        created = await client.create(
            name="milestone", session_id=f"s-{uuid.uuid4().hex}", snapshot={}, branches=[]
        )
        written_at = client.last_seq
        assert await client.get_checkpoint(created.id) is not None

        requests: dict[str, Msg] = {}
        while len(requests) < 2:  # the notification of the create comes by too
            msg = await messages.next_msg(timeout=DEADLINE)
            if msg.subject in (f"{prefix}.create", f"{prefix}.get"):
                requests[msg.subject.rsplit(".", 1)[1]] = msg

    assert written_at > 0
    assert (requests["create"].headers or {})[MIN_SEQ] == "0"
    assert (requests["get"].headers or {})[MIN_SEQ] == str(written_at)


SMALL_PAYLOAD = 64 * 1024


@pytest.fixture(scope="module")
def small_server() -> Iterator[NatsServer]:
    """A nats-server with a 64 KiB ``max_payload``: a 256 KiB snapshot goes in chunks."""
    server = start_nats_server(max_payload=SMALL_PAYLOAD)
    yield server
    server.stop()


async def test_chunked_requests_and_replies_carry_their_positions(
    quick: CheckpointManager, small_server: NatsServer
) -> None:
    """An uploaded create's reply, and a reply offered as a download, say their position on
    the request's own reply; the client keeps it as for any other reply."""
    snapshot = {"blob": "x" * (256 * 1024)}
    async with (
        serving(quick, small_server.url) as small,
        CheckpointClient(small_server.url, prefix=small, request_timeout=DEADLINE) as client,
    ):
        created = await client.create(
            name="big", session_id="s-big", snapshot=snapshot, branches=[]
        )
        written_at = client.last_seq
        raw = Wire(await nats.connect(small_server.url), small)
        try:
            offer = await raw.call("get", {"id": created.id})
            assert written_at == await last_event_seq(raw, created.id)
        finally:
            await raw.nc.close()

        assert DOWNLOAD in (offer.headers or {})
        assert seq_of(offer) >= written_at
        got = await client.get_checkpoint(created.id)
        assert got is not None
        assert got.snapshot == snapshot


async def test_health_reports_the_views_position_beside_the_log_head(wire: Wire) -> None:
    """``checkpoint.health`` says how far the views are behind the log: never ahead of it, and
    level with it once a read has waited for the views."""
    created, seq = await wire.create(name="health-views")
    health = ok(await wire.call("health"))
    assert 0 <= health["viewsSeq"] <= health["lastSeq"]
    assert health["lastSeq"] >= seq
    ok(await wire.call("get", {"id": created["id"]}))  # a read waits until the views reach seq
    health = ok(await wire.call("health"))
    assert health["viewsSeq"] >= seq
