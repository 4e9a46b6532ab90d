"""Chunked transfers on the wire: bodies bigger than the server's ``max_payload``.

A nats-server with a 64 KiB ``max_payload`` serves this module, so a snapshot of a megabyte has
to travel through the upload/download protocol of ``checkpointd.daemon.transfers``, both as
CheckpointClient does it for its user and by hand as a client in another language would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import msgpack
import nats
import nats.errors
import pytest
from conftest import serving
from contract import (
    CHUNK,
    CONTENT_TYPE,
    DOWNLOAD,
    DOWNLOAD_CHUNKS,
    DOWNLOAD_SHA256,
    DOWNLOAD_SIZE,
    ERROR_CODE,
    JSON,
    MSGPACK,
    UPLOAD,
)
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from natsserver import NatsServer, start_nats_server, subscribed

from checkpointd import CheckpointClient, CheckpointManager

MAX_PAYLOAD = 64 * 1024
DEADLINE = 10.0


def big_snapshot(size: int) -> dict[str, Any]:
    """A snapshot of about ``size`` bytes of varied (not trivially compressible) content."""
    rows = []
    for i in range(size // 100):
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        rows.append({"i": i, "text": digest, "more": digest[:20]})
    return {"sessions": ["s-1"], "state": {"rows": rows, "progress": 50}}


def message_size(msg: Msg) -> int:
    """What a message counts against ``max_payload``: its payload and its header block."""
    size = len(msg.data)
    if msg.headers:
        size += len(b"NATS/1.0\r\n") + 2
        size += sum(len(k.encode()) + 2 + len(v.encode()) + 2 for k, v in msg.headers.items())
    return size


def checkpoint(snapshot: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": "big", "sessionId": "s-1", "snapshot": snapshot, "branches": ["main"]}
    body.update(fields)
    return body


def assert_success(msg: Msg) -> None:
    headers = msg.headers or {}
    assert ERROR_CODE not in headers, f"{headers.get(ERROR_CODE)}: {msg.data[:300]!r}"


async def fetch(nc: Client, prefix: str, download: str, chunks: int) -> bytes:
    """The bytes of a download, chunk by chunk, each reply checked against ``max_payload``."""
    parts = []
    for index in range(chunks):
        body = json.dumps({"id": download, "index": index}).encode()
        reply = await nc.request(f"{prefix}.download", body, timeout=DEADLINE)
        assert_success(reply)
        assert message_size(reply) <= MAX_PAYLOAD
        parts.append(reply.data)
    return b"".join(parts)


@pytest.fixture(scope="module")
def small_server() -> Iterator[NatsServer]:
    """A nats-server of this module's own with a 64 KiB ``max_payload``."""
    server = start_nats_server(max_payload=MAX_PAYLOAD)
    yield server
    server.stop()


@pytest.fixture
async def small(manager: CheckpointManager, small_server: NatsServer) -> AsyncIterator[str]:
    """``manager`` served on the small server; yields the subject prefix."""
    async with serving(manager, small_server.url) as prefix:
        yield prefix


@pytest.fixture
async def raw(small: str, small_server: NatsServer) -> AsyncIterator[Client]:
    """A raw nats-py connection to the small server."""
    nc = await nats.connect(small_server.url)
    assert nc.max_payload == MAX_PAYLOAD
    yield nc
    await nc.close()


@pytest.fixture
async def small_client(small: str, small_server: NatsServer) -> AsyncIterator[CheckpointClient]:
    async with CheckpointClient(small_server.url, prefix=small, request_timeout=10) as client:
        yield client


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_megabyte_snapshot_round_trips_through_the_client(
    small: str, small_server: NatsServer, encoding: str
) -> None:
    """A 1 MB snapshot over a 64 KiB server: create, then get returns it with its checksum."""
    snapshot = big_snapshot(1 << 20)
    async with CheckpointClient(
        small_server.url, prefix=small, encoding=encoding, request_timeout=10
    ) as client:
        created = await client.create(checkpoint(snapshot))
        got = await client.get_checkpoint(created.id)
    assert got is not None
    assert got.snapshot == snapshot
    assert got.checksum == created.checksum
    assert got.size == created.size > MAX_PAYLOAD


@pytest.mark.parametrize("encoding", [JSON, MSGPACK])
async def test_big_get_reply_is_offered_as_a_chunked_download(
    small_client: CheckpointClient, raw: Client, small: str, encoding: str
) -> None:
    """A ``get`` reply over ``max_payload`` is an empty body whose headers offer a download;
    its chunks reassemble to the reply in the request's encoding, matching size and sha256."""
    snapshot = big_snapshot(1 << 20)
    created = await small_client.create(checkpoint(snapshot))
    request = json.dumps({"id": created.id}).encode()
    if encoding == MSGPACK:
        request = msgpack.packb({"id": created.id})
    offer = await raw.request(
        f"{small}.get", request, timeout=DEADLINE, headers={CONTENT_TYPE: encoding}
    )
    assert_success(offer)
    assert offer.data == b""
    headers = offer.headers or {}
    assert headers[CONTENT_TYPE] == encoding
    chunks, size = int(headers[DOWNLOAD_CHUNKS]), int(headers[DOWNLOAD_SIZE])
    assert chunks > 1
    body = await fetch(raw, small, headers[DOWNLOAD], chunks)
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == headers[DOWNLOAD_SHA256]
    got = msgpack.unpackb(body, raw=False) if encoding == MSGPACK else json.loads(body)
    assert got["snapshot"] == snapshot
    assert got["checksum"] == created.checksum
    # Served in full, the download is gone.
    again = await raw.request(
        f"{small}.download",
        json.dumps({"id": headers[DOWNLOAD], "index": 0}).encode(),
        timeout=DEADLINE,
    )
    assert (again.headers or {}).get(ERROR_CODE) == "404"


async def test_nothing_on_the_wire_exceeds_max_payload(
    small_client: CheckpointClient, small: str, small_server: NatsServer
) -> None:
    """Through a big create, get and restore, no message the server carries is over
    ``max_payload`` with its headers counted, and the service keeps answering."""
    spy = await nats.connect(small_server.url)
    seen: list[Msg] = []
    marker = f"_marker.{uuid.uuid4().hex}"
    probe = f"_probe.{uuid.uuid4().hex}"
    listening, done = asyncio.Event(), asyncio.Event()

    async def record(msg: Msg) -> None:
        if msg.subject == probe:
            listening.set()
        elif msg.subject == marker:
            done.set()
        else:
            seen.append(msg)

    try:
        await spy.subscribe(">", cb=record)
        await spy.publish(probe, b"")  # behind the SUB: its arrival proves the SUB is in
        async with asyncio.timeout(DEADLINE):
            await listening.wait()
        snapshot = big_snapshot(1 << 20)
        created = await small_client.create(checkpoint(snapshot))
        assert (await small_client.get_checkpoint(created.id)) is not None
        other = await small_client.create(checkpoint({"state": {"small": True}}, name="small"))
        result = await small_client.restore_checkpoint(created.id, preserve_current_state=True)
        assert result.state == snapshot
        assert (await small_client.get_checkpoint(other.id)) is not None
        # Everything the service sent before its last reply reached the server before this.
        await spy.publish(marker, b"")
        async with asyncio.timeout(DEADLINE):
            await done.wait()
    finally:
        await spy.close()
    assert any(msg.subject.startswith(f"{small}.events.restored.") for msg in seen)
    assert sum(msg.subject == f"{small}.download" for msg in seen) > 10
    oversized = [
        (msg.subject, message_size(msg)) for msg in seen if message_size(msg) > MAX_PAYLOAD
    ]
    assert oversized == []
    assert (await small_client.get_checkpoint_stats()).total_checkpoints == 3


@pytest.mark.parametrize("order", ["in-order", "reversed"])
async def test_raw_chunked_upload_is_the_request_body(
    raw: Client, small: str, small_client: CheckpointClient, order: str
) -> None:
    """Chunks sent to ``<prefix>.upload`` (any order) and then a request naming the upload
    with an empty body act as that body."""
    snapshot = big_snapshot(200_000)
    body = json.dumps(checkpoint(snapshot)).encode()
    size = 30_000
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    upload = uuid.uuid4().hex
    indexes = list(range(len(chunks)))
    if order == "reversed":
        indexes.reverse()
    for index in indexes:
        headers = {UPLOAD: upload, CHUNK: f"{index}/{len(chunks)}"}
        ack = await raw.request(f"{small}.upload", chunks[index], timeout=DEADLINE, headers=headers)
        assert_success(ack)
        assert json.loads(ack.data) == {}
    reply = await raw.request(
        f"{small}.create", b"", timeout=DEADLINE, headers={UPLOAD: upload, CONTENT_TYPE: JSON}
    )
    assert_success(reply)
    created = json.loads(reply.data)
    assert "snapshot" not in created
    got = await small_client.get_checkpoint(created["id"])
    assert got is not None
    assert got.snapshot == snapshot


async def test_upload_missing_a_chunk_is_400(
    raw: Client, small: str, small_client: CheckpointClient
) -> None:
    """A request naming an upload that lacks a chunk is a 400; nothing is created."""
    body = json.dumps(checkpoint(big_snapshot(90_000))).encode()
    third = -(-len(body) // 3)
    chunks = [body[i : i + third] for i in range(0, len(body), third)]
    upload = uuid.uuid4().hex
    for index in (0, 2):
        headers = {UPLOAD: upload, CHUNK: f"{index}/3"}
        assert_success(
            await raw.request(f"{small}.upload", chunks[index], timeout=DEADLINE, headers=headers)
        )
    reply = await raw.request(f"{small}.create", b"", timeout=DEADLINE, headers={UPLOAD: upload})
    assert (reply.headers or {}).get(ERROR_CODE) == "400"
    error = json.loads(reply.data)["error"]
    assert error["code"] == "invalid"
    assert "missing 1 chunk" in error["message"]
    assert (await small_client.get_checkpoint_stats()).total_checkpoints == 0


async def test_big_restore_notification_carries_a_state_download(
    raw: Client, small: str, small_client: CheckpointClient
) -> None:
    """A restored notification whose state is over ``max_payload`` carries
    ``data.stateDownload`` instead of ``state``; the download is the state as JSON."""
    snapshot = big_snapshot(1 << 20)
    created = await small_client.create(checkpoint(snapshot))
    async with subscribed(raw, f"{small}.events.restored.>") as sub:
        result = await small_client.restore_checkpoint(created.id, target_session_id="s-2")
        msg = await sub.next_msg(timeout=DEADLINE)
    assert message_size(msg) <= MAX_PAYLOAD
    notification = json.loads(msg.data)
    data = notification["data"]
    assert "state" not in data
    assert data["conflicts"] == []
    assert "backupCheckpointId" in data
    assert notification["seq"] == result.event_seq
    download = data["stateDownload"]
    assert set(download) >= {"id", "size", "chunks", "sha256"}
    state = await fetch(raw, small, download["id"], download["chunks"])
    assert len(state) == download["size"]
    assert hashlib.sha256(state).hexdigest() == download["sha256"]
    assert json.loads(state) == result.state == snapshot


async def test_five_megabyte_snapshot_round_trips_on_the_default_server(
    client: CheckpointClient,
) -> None:
    """A 5 MB snapshot over the default 1 MB server: create, then get returns it equal."""
    snapshot = big_snapshot(5 << 20)
    created = await client.create(checkpoint(snapshot))
    got = await client.get_checkpoint(created.id)
    assert got is not None
    assert got.snapshot == snapshot
    assert got.checksum == created.checksum


async def next_notification(sub: Subscription) -> dict[str, Any]:
    """The next notification's JSON body, checked against ``max_payload``."""
    msg = await sub.next_msg(timeout=DEADLINE)
    assert message_size(msg) <= MAX_PAYLOAD
    body: dict[str, Any] = json.loads(msg.data)
    return body


async def test_created_notification_with_big_metadata_is_still_published(
    raw: Client, small: str, small_client: CheckpointClient
) -> None:
    """A create whose metadata alone is over ``max_payload`` still publishes its ``created``
    notification (the next notification is not the one after it)."""
    async with subscribed(raw, f"{small}.events.>") as sub:
        big = await small_client.create(
            checkpoint({"state": {}}, metadata={"notes": "x" * (2 * MAX_PAYLOAD)})
        )
        marker = await small_client.create(checkpoint({"state": {}}, name="marker"))
        # Notifications go out in seq order: the big one, if published, comes first.
        first = await next_notification(sub)
    assert first["checkpointId"] != marker.id, "the big create's notification was dropped"
    assert (first["type"], first["checkpointId"]) == ("created", big.id)


async def test_restore_notification_with_big_conflicts_is_still_published(
    raw: Client, small: str, small_client: CheckpointClient
) -> None:
    """A restore whose conflicts alone are over ``max_payload`` still publishes its
    ``restored`` notification."""
    ours = {"state": {f"k{i}": "a" * 100 for i in range(1000)}}
    theirs = {"state": {f"k{i}": "b" * 100 for i in range(1000)}}
    async with subscribed(raw, f"{small}.events.>") as sub:
        created = await small_client.create(checkpoint(ours))
        assert (await next_notification(sub))["checkpointId"] == created.id
        result = await small_client.restore_checkpoint(
            created.id, target_session_id="s-2", current_state=theirs
        )
        assert len(result.conflicts) == 1000
        marker = await small_client.create(checkpoint({"state": {}}, name="marker"))
        first = await next_notification(sub)
    assert first["checkpointId"] != marker.id, "the restore's notification was dropped"
    assert (first["type"], first["seq"]) == ("restored", result.event_seq)


async def test_client_stream_reassembles_a_notification_sent_by_download(
    small_client: CheckpointClient,
) -> None:
    """A notification whose data went by download arrives whole through the client's stream."""
    notes = "x" * (2 * MAX_PAYLOAD)
    async with small_client.notifications("created") as stream:
        big = await small_client.create(checkpoint({"state": {}}, metadata={"notes": notes}))
        async with asyncio.timeout(10):
            notification = await anext(stream)
    assert notification.checkpoint_id == big.id
    assert notification.data["metadata"]["notes"] == notes


async def start_upload(nc: Client, prefix: str, data: bytes = b"") -> Msg:
    """The reply to the first of two chunks of a new upload that is never finished."""
    headers = {UPLOAD: uuid.uuid4().hex, CHUNK: "0/2"}
    return await nc.request(f"{prefix}.upload", data, timeout=DEADLINE, headers=headers)


async def test_a_connection_past_its_uploads_in_progress_gets_503_and_others_are_served(
    raw: Client, small: str, small_server: NatsServer, small_client: CheckpointClient
) -> None:
    """One connection may have 16 uploads in progress, empty ones too; its 17th is a 503
    ``unavailable`` saying why, while another connection's uploads and a big create through
    the client still go through."""
    for _ in range(16):
        assert_success(await start_upload(raw, small))
    refused = await start_upload(raw, small)
    assert (refused.headers or {}).get(ERROR_CODE) == "503"
    error = json.loads(refused.data)["error"]
    assert error["code"] == "unavailable"
    assert "this connection has 16 uploads in progress" in error["message"]
    other = await nats.connect(small_server.url)
    try:
        assert_success(await start_upload(other, small))
    finally:
        await other.close()
    snapshot = big_snapshot(300_000)
    created = await small_client.create(checkpoint(snapshot))
    got = await small_client.get_checkpoint(created.id)
    assert got is not None
    assert got.snapshot == snapshot


async def test_many_concurrent_big_creates_through_one_client_all_succeed(
    small_client: CheckpointClient,
) -> None:
    """40 big creates at once through one client (one connection) all succeed: the client keeps
    its uploads in progress below what the daemon allows a connection."""
    snapshots = [big_snapshot(100_000 + i) for i in range(40)]
    created = await asyncio.gather(
        *(small_client.create(checkpoint(s, name=f"big-{i}")) for i, s in enumerate(snapshots))
    )
    assert len({c.id for c in created}) == 40
    assert (await small_client.get_checkpoint_stats()).total_checkpoints == 40
