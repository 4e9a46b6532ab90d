"""The log on a JetStream stream, engine level: segments, the fenced append, followers, lease.

One nats-server with JetStream (replicas 1) and a small ``max_payload``, so that snapshots
travel through the object store; each test has a stream of its own. Two stores (``Node``) on
two files stand for two daemons: one writes through the stream, the other follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from natsserver import NatsServer
from natsserver import jetstream_server as lone_jetstream_server

from checkpointd.daemon.cluster import Cluster
from checkpointd.daemon.settings import SettingsError, load
from checkpointd.errors import ConfigError, UnavailableError
from checkpointd.manager import CheckpointManager
from checkpointd.storage import capture
from checkpointd.storage.genesis import prepare_copy
from checkpointd.storage.jetstream import LEASE_TTL, JetStreamLog
from checkpointd.storage.replica import StreamReplica
from checkpointd.storage.segment import Segment, pack, resolve, unpack
from checkpointd.storage.sqlite import connect_writer
from checkpointd.storage.stream_import import import_log

KEY = "jetstream-test-key-0123456789abcdef"
MAX_PAYLOAD = 64 * 1024
DEADLINE = 30.0
LOG_TABLES = ("events", "blobs", "idempotency", "restore_sources")
BIG = random.Random(0).randbytes(3 * MAX_PAYLOAD).hex()  # compresses less than max_payload


@pytest.fixture(scope="module")
def jetstream_server() -> Iterator[NatsServer]:
    """A nats-server with JetStream on, its store in a scratch directory."""
    with lone_jetstream_server(MAX_PAYLOAD) as server:
        yield server


class Node:
    """One daemon's store: its copy of the log over a stream, as the daemon opens it."""

    def __init__(self, nc: Client, stream: str, path: Path) -> None:
        self.log = JetStreamLog(nc, stream, replicas=1)
        self.path = path
        self.replica: StreamReplica
        self.manager: CheckpointManager

    async def open(self, stack: AsyncExitStack) -> Node:
        await self.log.open()
        await prepare_copy(self.log, str(self.path), "full")
        self.replica = StreamReplica(self.log, asyncio.get_running_loop())
        self.manager = CheckpointManager(
            database_path=str(self.path),
            encryption_key=KEY,
            enable_encryption=True,
            cleanup_loop=False,
            replica=self.replica,
        )
        await self.manager.open()
        stack.push_async_callback(self.manager.close)
        return self

    def lease(self, seconds: float = 60.0) -> None:
        """Hold the writer lease (as the lease loop would after taking it)."""
        self.replica.lease_until = time.monotonic() + seconds


@pytest.fixture
async def nodes(jetstream_server: NatsServer, tmp_path: Path) -> AsyncIterator[Any]:
    """``await nodes(name)``: a Node on this test's stream, on a connection of its own."""
    stream = f"T{uuid.uuid4().hex[:10]}"
    async with AsyncExitStack() as stack:

        async def node(name: str) -> Node:
            nc = await nats.connect(jetstream_server.url)
            stack.push_async_callback(nc.close)
            return await Node(nc, stream, tmp_path / f"{name}.db").open(stack)

        yield node


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every replicated table of the log at ``path`` (whatever tables it has), row by row."""
    conn = sqlite3.connect(path)
    try:
        tables = capture.log_tables(conn)
        assert set(LOG_TABLES) <= set(tables)
        return {
            name: conn.execute(
                f"SELECT {', '.join(t.columns)} FROM {name} ORDER BY {', '.join(t.key)}"
            ).fetchall()
            for name, t in tables.items()
        }
    finally:
        conn.close()


async def write_some(manager: CheckpointManager) -> None:
    """Creates (one with a snapshot too big for one message), an update, a keyed create, a
    restore and a delete: events, blobs inline and in the object store, keys, removals."""
    big = {"blob": BIG}
    first = await manager.create(branches=[], name="one", session_id="s", snapshot={"n": 1})
    second = await manager.create(branches=[], name="two", session_id="s", snapshot=big)
    await manager.update_checkpoint(first.id, name="one, renamed")
    await manager.create(
        branches=[], name="keyed", session_id="k", snapshot={"k": 1}, idempotency_key="key-1"
    )
    await manager.restore_checkpoint(second.id, target_session_id="r")
    await manager.delete_checkpoint(first.id)


async def caught_up(follower: Node, leader: Node) -> None:
    async with asyncio.timeout(DEADLINE):
        while await follower.replica.position() < await leader.replica.position():
            await follower.replica.follow_once()


# -- segments ----------------------------------------------------------------------------------


def test_a_segment_travels_inline_or_through_the_object_store_and_comes_back_the_same() -> None:
    """A segment's rows come back unchanged whether they fit in one message, had their big
    values moved to the object store, or had the whole body moved there."""
    table = capture.Table("blobs", ("seq", "data", "details"), ("seq",))
    changes = (
        *(
            capture.Change("blobs", capture.INSERT, (n, bytes([n]) * 5000 * n, None))
            for n in (1, 2, 3)
        ),
        capture.Change("blobs", capture.DELETE, (7,)),
    )
    segment = Segment({"blobs": table}, changes)
    for budget in (1_000_000, 12_000, 100):
        packed = pack(segment, budget)
        assert len(packed.body) <= max(budget, 200)
        wire, references = unpack(packed.body)
        fetched = dict(packed.objects)
        if "body" in wire:
            wire, references = unpack(fetched[references[0].name])
        assert {r.name for r in references} <= set(fetched)
        assert resolve(wire, fetched) == segment


def test_capture_ships_the_rows_a_transaction_left_and_another_copy_ends_up_equal(
    tmp_path: Path,
) -> None:
    """Rows inserted, changed and deleted in one transaction arrive as their final state."""
    with (
        contextlib.closing(connect_writer(str(tmp_path / "a.db"), "full")) as source,
        contextlib.closing(connect_writer(str(tmp_path / "b.db"), "full")) as target,
    ):
        ship_and_compare(source, target)


def ship_and_compare(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    for conn in (source, target):
        conn.execute("CREATE TABLE t (k TEXT, n INTEGER, PRIMARY KEY (k)) WITHOUT ROWID")
        conn.execute("CREATE TABLE r (v BLOB)")
    tables = capture.install(source)
    source.execute("BEGIN")
    source.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1), ("b", 2), ("c", 3)])
    source.execute("UPDATE t SET n = 20 WHERE k = 'b'")
    source.execute("DELETE FROM t WHERE k = 'c'")
    source.execute("INSERT INTO r (v) VALUES (x'01'), (x'02')")
    source.execute("DELETE FROM r WHERE v = x'01'")
    changes = capture.collect(source, tables)
    source.execute("COMMIT")
    target.execute("BEGIN")
    capture.apply(target, tables, changes)
    target.execute("COMMIT")
    for query in ("SELECT * FROM t ORDER BY k", "SELECT rowid, v FROM r"):
        assert target.execute(query).fetchall() == source.execute(query).fetchall()
    assert source.execute("SELECT * FROM t ORDER BY k").fetchall() == [("a", 1), ("b", 20)]


# -- the writer and its followers --------------------------------------------------------------


async def test_a_follower_copy_equals_the_writers_and_serves_the_same_reads(nodes: Any) -> None:
    """Everything the writer committed through the stream reaches a follower row for row
    (events, blobs, keys, removals); its chain verifies and it decrypts the snapshots."""
    leader, follower = await nodes("leader"), await nodes("follower")
    leader.lease()
    await write_some(leader.manager)
    await caught_up(follower, leader)
    assert dump(follower.path) == dump(leader.path)
    assert follower.manager.log_head == leader.manager.log_head
    result = await follower.manager.verify_log()
    assert result.ok
    assert result.events == leader.manager.log_head
    assert await follower.manager.store_id() == await leader.manager.store_id()
    page = await follower.manager.get_checkpoints_by_session("s")
    assert [cp.name for cp in page.items] == ["two"]
    again = await follower.manager.get_checkpoint(page.items[0].id)
    assert again is not None
    assert again.snapshot == {"blob": BIG}
    assert await leader.log.blobs.list()  # the big snapshot went through the object store


async def test_pending_writes_and_session_copies_replicate_with_no_code_of_their_own(
    nodes: Any,
) -> None:
    """Writes the follower knows nothing about (pending writes, a session copied, then
    pruned) arrive as rows like any other: the copies are equal and read the same."""
    leader, follower = await nodes("leader"), await nodes("follower")
    leader.lease()
    manager = leader.manager
    first = await manager.create(branches=[], name="a", session_id="s", snapshot={"n": 1})
    await manager.create(branches=[], name="b", session_id="s", snapshot={"n": 2})
    await manager.put_writes(first.id, "task", [(0, "messages", b"\x00bytes"), (1, "c", BIG)])
    await manager.copy_session("s", "copy")
    await manager.prune_session("s", keep=1)
    await caught_up(follower, leader)
    assert dump(follower.path) == dump(leader.path)
    assert (await follower.manager.verify_log()).ok
    read = []
    for session in ("s", "copy"):
        ours = await follower.manager.get_checkpoints_by_session(session)
        theirs = await manager.get_checkpoints_by_session(session)
        assert [cp.id for cp in ours.items] == [cp.id for cp in theirs.items]
        for cp in ours.items:
            writes = await follower.manager.get_writes(cp.id)
            assert writes == await manager.get_writes(cp.id)
            read += writes
    assert len(read) == 2  # the copy of the first checkpoint kept its writes


async def test_a_follower_waits_for_a_position_it_has_not_reached_yet(nodes: Any) -> None:
    """A read asking for a position the follower's copy lacks waits until the copy has it (the
    follower follows at once), and is unavailable, never stale, when it cannot get there."""
    leader, follower = await nodes("leader"), await nodes("follower")
    leader.lease()
    await leader.manager.create(branches=[], name="a", session_id="s", snapshot={})
    waiting = asyncio.ensure_future(follower.replica.wait_for_head(1, within=DEADLINE))
    async with asyncio.timeout(DEADLINE):
        while not waiting.done():
            await follower.replica.follow_once()  # what the loop does when woken
            await asyncio.sleep(0)
    await waiting
    assert follower.manager.log_head == 1
    with pytest.raises(UnavailableError, match="did not reach position 2"):
        await follower.replica.wait_for_head(2, within=0.2)


async def test_a_keyed_retry_on_the_next_writer_returns_the_first_reply(nodes: Any) -> None:
    """The idempotency keys travel with the log: a retry that reaches another writer after
    the first attempt was applied gets the stored checkpoint, not a second one."""
    first, second = await nodes("first"), await nodes("second")
    first.lease()
    created = await first.manager.create(
        branches=[], name="once", session_id="s", snapshot={"v": 1}, idempotency_key="retry-me"
    )
    first.replica.lease_until = 0.0
    await second.replica.catch_up()
    second.lease()
    again = await second.manager.create(
        branches=[], name="once", session_id="s", snapshot={"v": 1}, idempotency_key="retry-me"
    )
    assert again.id == created.id
    page = await second.manager.get_checkpoints_by_session("s")
    assert [cp.id for cp in page.items] == [created.id]


async def test_an_append_on_a_stale_copy_is_refused_and_nothing_is_committed(nodes: Any) -> None:
    """A writer whose copy lacks the stream's last segment (another writer appended) gets
    its group refused by the fence: UnavailableError, and its copy unchanged."""
    one, two = await nodes("one"), await nodes("two")
    one.lease()
    await one.manager.create(branches=[], name="first", session_id="s", snapshot={})
    before = dump(two.path)
    two.lease()  # both believe they write: the fence decides
    with pytest.raises(UnavailableError, match="another writer appended"):
        await two.manager.create(branches=[], name="forked", session_id="s", snapshot={})
    assert dump(two.path) == before
    assert await one.log.last_seq() == await one.replica.position()
    await two.replica.catch_up()  # caught up, it may write again
    await two.manager.create(branches=[], name="second", session_id="s", snapshot={})
    await caught_up(one, two)
    assert dump(one.path) == dump(two.path)
    assert (await one.manager.verify_log()).ok


async def test_a_writer_without_the_lease_appends_nothing(nodes: Any) -> None:
    """A writer whose lease ran out by its own clock (a paused process) does not publish:
    its write fails as unavailable and the stream is unchanged."""
    node = await nodes("paused")
    node.lease()
    await node.manager.create(branches=[], name="before", session_id="s", snapshot={})
    last = await node.log.last_seq()
    node.replica.lease_until = time.monotonic() - 1  # what a SIGSTOP past the lease leaves
    with pytest.raises(UnavailableError, match="not the log's writer"):
        await node.manager.create(branches=[], name="after", session_id="s", snapshot={})
    assert await node.log.last_seq() == last
    assert node.manager.log_head == 1


async def test_a_copy_written_to_directly_is_refused_at_start(nodes: Any) -> None:
    """A daemon's copy that got events the stream does not have (written with the embedded
    store) is not served from: its start names the file and says to remove it."""
    node = await nodes("tampered")
    node.lease()
    await node.manager.create(branches=[], name="replicated", session_id="s", snapshot={})
    await node.manager.create(branches=[], name="replicated", session_id="s", snapshot={})
    await node.manager.close()
    async with CheckpointManager(database_path=str(node.path), encryption_key=KEY) as direct:
        await direct.create(branches=[], name="local only", session_id="s", snapshot={})
    with pytest.raises(ConfigError, match=r"not the stream's.*remove it"):
        await prepare_copy(node.log, str(node.path), "full")


async def test_an_embedded_log_imported_into_a_stream_is_copied_with_its_chain(
    nodes: Any, tmp_path: Path, jetstream_server: NatsServer
) -> None:
    """``stream-import``: the embedded store's log goes into an empty stream row for row; a
    daemon's copy of it verifies the same chain, keeps the store id and opens the snapshots.
    A second import into the now non-empty stream is refused."""
    source = tmp_path / "embedded.db"
    async with CheckpointManager(
        database_path=str(source), encryption_key=KEY, enable_encryption=True
    ) as embedded:
        await write_some(embedded)
        store_id, head = await embedded.store_id(), embedded.log_head
    nc = await nats.connect(jetstream_server.url)
    try:
        stream = JetStreamLog(nc, f"T{uuid.uuid4().hex[:10]}", replicas=1)
        await stream.open()
        events, _ = await import_log(stream, str(source))
        assert events == head
        with pytest.raises(ConfigError, match="not empty"):
            await import_log(stream, str(source))
        async with AsyncExitStack() as stack:
            copy = await Node(nc, stream.names.stream, tmp_path / "copy.db").open(stack)
            await copy.replica.catch_up()
            assert dump(copy.path) == dump(source)
            assert (await copy.manager.verify_log()).ok
            assert await copy.manager.store_id() == store_id
            page = await copy.manager.get_checkpoints_by_session("s")
            found = await copy.manager.get_checkpoint(page.items[0].id)
            assert found is not None
            assert found.snapshot == {"blob": BIG}
    finally:
        await nc.close()


# -- the lease ---------------------------------------------------------------------------------


async def test_the_lease_moves_to_another_daemon_when_its_holder_stops_renewing(
    nodes: Any,
) -> None:
    """One daemon takes the lease and serves writes; when it stops renewing (paused), the
    lease expires, the other takes it, and the first, resumed, finds it lost and stops."""
    first, second = await nodes("first"), await nodes("second")
    told: dict[str, list[bool]] = {"first": [], "second": []}

    def cluster(node: Node, name: str) -> Cluster:
        async def on_writer(writing: bool) -> None:
            told[name].append(writing)

        return Cluster(node.replica, node.log.nc, on_writer, str(node.path.parent))

    one, two = cluster(first, "first"), cluster(second, "second")
    await one.lease_step()
    await two.lease_step()
    assert (one.is_writer, two.is_writer) == (True, False)
    await first.manager.create(branches=[], name="by first", session_id="s", snapshot={})
    async with asyncio.timeout(LEASE_TTL * 10):  # the first is paused: no lease_step
        while not two.is_writer:
            await two.lease_step()
            await asyncio.sleep(0.2)
    assert second.manager.log_head == 1  # it caught up before it took writes
    await second.manager.create(branches=[], name="by second", session_id="s", snapshot={})
    await one.lease_step()  # resumed
    assert not one.is_writer
    assert told == {"first": [True, False], "second": [True]}
    with pytest.raises(UnavailableError):
        await first.manager.create(branches=[], name="deposed", session_id="s", snapshot={})
    await caught_up(first, second)
    assert dump(first.path) == dump(second.path)
    await two.release()
    await one.lease_step()
    assert one.is_writer  # a released lease is taken at once


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"log_backend": "jetstream"}, "log_backend"),
        ({"log_backend": "kafka", "nats.url": "nats://a:4222"}, "log_backend"),
        ({"jetstream_replicas": 0}, "jetstream_replicas"),
        ({"jetstream_replicas": 6}, "jetstream_replicas"),
        ({"jetstream_stream": "A.B"}, "jetstream_stream"),
    ],
)
def test_a_bad_backend_setting_is_refused_naming_its_key(values: dict[str, Any], key: str) -> None:
    """The jetstream backend needs a NATS URL; backend, stream and replicas are checked."""
    with pytest.raises(SettingsError, match=key):
        load(None, environ={}, flags=values)


def test_the_backend_settings_default_to_the_embedded_log() -> None:
    """Without settings the log is SQLite, the stream CHECKPOINTD with 3 replicas."""
    daemon = load(None, environ={}).daemon
    assert (daemon.log_backend, daemon.jetstream_stream, daemon.jetstream_replicas) == (
        "sqlite",
        "CHECKPOINTD",
        3,
    )


async def test_more_replicas_than_the_cluster_has_servers_is_a_config_error(
    jetstream_server: NatsServer,
) -> None:
    """A lone server cannot hold 3 copies: the stream is not created, the error names the key."""
    nc = await nats.connect(jetstream_server.url)
    try:
        stream = JetStreamLog(nc, f"T{uuid.uuid4().hex[:10]}", replicas=3)
        with pytest.raises(ConfigError, match="jetstream_replicas"):
            await stream.open()
    finally:
        await nc.close()
