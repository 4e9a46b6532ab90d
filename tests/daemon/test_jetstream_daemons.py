"""Two ``checkpointd serve`` processes on one JetStream stream: one writes, both serve reads.

A single nats-server with JetStream and replicas 1 (the three-server cluster and its faults
are in ``tests/cluster``); what is checked here is the daemon's wiring: the config keys, the
writer lease deciding which daemon subscribes the writes, reads on either daemon, and the
writes moving to the other daemon when the writer stops.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from natsserver import NatsServer
from natsserver import jetstream_server as lone_jetstream_server

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.daemon.run import EXIT_CONFIG

from .serving import DEADLINE, Daemons, daemons_under, run_cli

pytestmark = pytest.mark.system
MAX_PAYLOAD = 128 * 1024
BIG = {"blob": random.Random(1).randbytes(2 * MAX_PAYLOAD).hex()}  # past max_payload, zipped too


@pytest.fixture(scope="module")
def jetstream_server() -> Iterator[NatsServer]:
    """A nats-server with JetStream on, its store in a scratch directory."""
    with lone_jetstream_server(MAX_PAYLOAD) as server:
        yield server


@pytest.fixture
def cluster_daemons(tmp_path: Path, jetstream_server: NatsServer) -> Iterator[Daemons]:
    with daemons_under(tmp_path, jetstream_server.url) as factory:
        yield factory


def settings(stream: str, prefix: str) -> dict[str, Any]:
    return {
        "log_backend": "jetstream",
        "jetstream_stream": stream,
        "jetstream_replicas": 1,
        "encryption_key": "daemon-cluster-test-key-0123456789",
        "enable_encryption": True,
        "nats": {"subject_prefix": prefix},
    }


async def roles(url: str, prefix: str) -> dict[str, list[str]]:
    """The pids of the daemons on ``prefix`` by the role their ``$SRV.INFO`` advertises."""
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.INFO.checkpointd", b"", reply=inbox)
        found: dict[str, list[str]] = {}
        try:
            while True:
                info = json.loads((await sub.next_msg(timeout=0.5)).data)
                metadata = info.get("metadata") or {}
                if metadata.get("prefix") == prefix:
                    found.setdefault(metadata["role"], []).append(metadata["pid"])
        except nats.errors.TimeoutError:
            pass
        return {role: sorted(pids) for role, pids in found.items()}
    finally:
        await nc.close()


async def writer_pid(url: str, prefix: str) -> str:
    async with asyncio.timeout(DEADLINE):
        while True:
            writers = (await roles(url, prefix)).get("writer", [])
            if len(writers) == 1:
                return writers[0]
            await asyncio.sleep(0.2)


async def test_two_daemons_share_one_stream_and_the_writes_move_when_the_writer_stops(
    cluster_daemons: Daemons, jetstream_server: NatsServer
) -> None:
    """One daemon takes the lease and serves the writes, both serve reads at the client's
    position; when the writer stops, the other takes the writes and nothing is lost."""
    stream, prefix = f"T{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:12]}.checkpoint"
    first = cluster_daemons.start(settings(stream, prefix))
    second = cluster_daemons.start(settings(stream, prefix))
    url = jetstream_server.url
    writer = await writer_pid(url, prefix)
    assert (await roles(url, prefix))["reader"] == sorted([str(first.pid), str(second.pid)])
    async with CheckpointClient(url, prefix=prefix, request_timeout=20) as client:
        created = [
            await client.create(name=f"cp{n}", session_id="s", snapshot={"n": n}, branches=[])
            for n in range(10)
        ]
        big = await client.create(name="big", session_id="b", snapshot=BIG, branches=[])
        for _ in range(6):  # reads spread over both daemons, each at the client's position
            page = await client.get_checkpoints_by_session("s", page_size=100)
            assert sorted(cp.id for cp in page.items) == sorted(cp.id for cp in created)
            # A reply bigger than max_payload is fetched in chunks from the daemon that made it.
            found = await client.get_checkpoint(big.id)
            assert found is not None
            assert found.snapshot == BIG
        stopping = first if writer == str(first.pid) else second
        assert stopping.stop() == 0
        after = await client.create(name="after", session_id="s", snapshot={}, branches=[])
        assert await writer_pid(url, prefix) != writer
        found = await client.get_checkpoint(after.id)
        assert found is not None
        assert found.name == "after"
        assert (await client.verify_log()).ok
        assert len((await client.get_checkpoints_by_session("s", page_size=100)).items) == 11


def test_config_check_refuses_jetstream_without_a_nats_url(tmp_path: Path) -> None:
    """``config check`` with the jetstream backend and no URL: exit 78 naming the key."""
    config = tmp_path / "c.toml"
    config.write_text('log_backend = "jetstream"\n')
    done = run_cli("config", "check", "--config", str(config), cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert "log_backend" in done.stderr
    assert "nats.url" in done.stderr


def test_config_check_refuses_more_replicas_than_the_cluster_has_servers(
    tmp_path: Path, jetstream_server: NatsServer
) -> None:
    """``config check`` asks the NATS server: 3 replicas on a lone server is 78, 1 is OK."""
    config = tmp_path / "c.toml"
    for replicas, code in ((3, EXIT_CONFIG), (1, 0)):
        config.write_text(
            f'log_backend = "jetstream"\njetstream_replicas = {replicas}\n'
            f'[nats]\nurl = "{jetstream_server.url}"\n'
        )
        done = run_cli("config", "check", "--config", str(config), cwd=tmp_path)
        assert done.returncode == code, done.stderr
        if code:
            assert "jetstream_replicas" in done.stderr
            assert "has 1 server" in done.stderr
    assert "config OK" in done.stdout


async def test_the_embedded_log_moves_into_a_stream_and_a_daemon_serves_it(
    cluster_daemons: Daemons, jetstream_server: NatsServer, tmp_path: Path
) -> None:
    """``stream-import --db`` puts an embedded store's log into a new stream; a daemon on that
    stream then serves its checkpoints, verifies its chain and takes new writes."""
    stream, prefix = f"T{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:12]}.checkpoint"
    source = tmp_path / "embedded.db"
    values = settings(stream, prefix)
    async with CheckpointManager(
        database_path=str(source),
        encryption_key=values["encryption_key"],
        enable_encryption=True,
    ) as embedded:
        kept = await embedded.create(name="kept", session_id="s", snapshot=BIG, branches=[])
        gone = await embedded.create(name="gone", session_id="s", snapshot={}, branches=[])
        await embedded.delete_checkpoint(gone.id)
    config = tmp_path / "import.toml"
    config.write_text(
        f'jetstream_stream = "{stream}"\njetstream_replicas = 1\n'
        f'[nats]\nurl = "{jetstream_server.url}"\n'
    )
    done = run_cli("stream-import", "--db", str(source), "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"imported 3 events into stream {stream}" in done.stdout
    cluster_daemons.start(values)
    async with CheckpointClient(jetstream_server.url, prefix=prefix) as client:
        found = await client.get_checkpoint(kept.id)
        assert found is not None
        assert found.snapshot == BIG
        assert await client.get_checkpoint(gone.id) is None
        await client.create(name="new", session_id="s", snapshot={}, branches=[])
        result = await client.verify_log()
        assert result.ok
        assert result.events == 4
