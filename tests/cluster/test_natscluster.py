"""The test cluster itself: three nats-servers with JetStream keep acknowledging through a kill.

What the checkpointd cluster stands on, checked on its own: an R3 stream on the three servers
acknowledges a publish only once it is stored; after the stream's leader server is SIGKILLed, a
publish is acknowledged again (by a new leader, on the two servers left) and nothing acknowledged
before is gone; the killed server, started again on its store, catches up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError

from .natscluster import NatsCluster, running_cluster

PUBLISH_DEADLINE = 30.0


async def publish_until_acked(js: nats.js.JetStreamContext, subject: str, data: bytes, msg_id: str):
    """Publish with one ``Nats-Msg-Id`` until a PubAck comes back (the stream deduplicates the
    retries): while a new stream leader is elected, a publish gets no answer or no responders."""
    async with asyncio.timeout(PUBLISH_DEADLINE):
        while True:
            try:
                return await js.publish(subject, data, timeout=1, headers={"Nats-Msg-Id": msg_id})
            except (NatsTimeout, NoStreamResponseError):
                await asyncio.sleep(0.1)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A cluster of this test's own: it kills one of the servers."""
    with running_cluster(tmp_path) as started:
        yield started


async def test_an_r3_stream_acknowledges_after_its_leader_server_is_killed(
    nats_cluster: NatsCluster,
) -> None:
    """Every publish acknowledged before the stream leader's server dies is still in the stream
    after it, a publish after it is acknowledged, and the restarted server catches up."""
    nc = await nats.connect(servers=nats_cluster.url.split(","), reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        await js.add_stream(name="SMOKE", subjects=["smoke.>"], num_replicas=3)
        acked = [(await js.publish("smoke.x", f"m{i}".encode())).seq for i in range(20)]
        assert acked == list(range(1, 21))

        leader = nats_cluster.stream_leader("SMOKE")
        leader.kill()
        killed_at = time.monotonic()
        ack = await publish_until_acked(js, "smoke.x", b"after", "after-kill")
        print(f"first ack {time.monotonic() - killed_at:.2f} s after the leader's server died")
        assert ack.seq == 21
        assert nats_cluster.stream_leader("SMOKE") is not leader

        await asyncio.to_thread(nats_cluster.restart, leader)
        info = await js.stream_info("SMOKE")
        assert (info.state.first_seq, info.state.last_seq) == (1, 21)
        for seq in range(1, 22):
            message = await js.get_msg("SMOKE", seq)
            assert message.data == (f"m{seq - 1}".encode() if seq <= 20 else b"after")
        await js.delete_stream("SMOKE")
    finally:
        await nc.close()
