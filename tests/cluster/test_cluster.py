"""Three daemons on one JetStream log: one writer, every daemon's copy and views follow it.

A create acknowledged through any server is in every daemon's local log and views; the three
copies hold the same events (same hashes) and the same views; exactly one daemon serves writes.
"""

from __future__ import annotations

import asyncio

from checkpointd import CheckpointClient

from .checkpointcluster import CheckpointCluster, event_hashes_of, positions, views_of


async def test_a_write_reaches_every_daemons_copy_and_views(cluster: CheckpointCluster) -> None:
    """Creates acknowledged by the writer are in every daemon's log and views, identically."""
    leader = await cluster.leader()
    async with CheckpointClient(cluster.url, prefix=cluster.prefix, request_timeout=30) as client:
        created = await asyncio.gather(
            *(
                client.create(name=f"c{i}", session_id="s", snapshot={"i": i}, branches=[])
                for i in range(20)
            )
        )
    head = positions((await cluster.leader()).db_path)[0]  # the writer commits before it replies
    cluster.wait_for_seq(head)
    hashes = [event_hashes_of(d) for d in cluster.daemons]
    assert hashes[0] == hashes[1] == hashes[2]
    assert len(hashes[0]) >= len(created)
    views = [views_of(d) for d in cluster.daemons]
    assert views[0] == views[1] == views[2]
    assert await cluster.leader() is leader


async def test_a_daemon_added_later_copies_the_log_and_serves_it(
    cluster: CheckpointCluster,
) -> None:
    """A fourth daemon on a fresh state directory copies the stream (its events and views are
    the others') and stops cleanly; the others carry on."""
    async with CheckpointClient(cluster.url, prefix=cluster.prefix, request_timeout=30) as client:
        made = await client.create(name="before-join", session_id="join", snapshot={}, branches=[])
        joined = cluster.start_daemon(len(cluster.daemons))
        cluster.daemons.append(joined)
        try:
            head = positions((await cluster.leader()).db_path)[0]
            cluster.wait_for_seq(head)
            assert event_hashes_of(joined) == event_hashes_of(cluster.daemons[0])
            assert views_of(joined) == views_of(cluster.daemons[0])
        finally:
            assert joined.stop() == 0, joined.diagnostics()
            cluster.daemons.remove(joined)
        assert (await client.get_checkpoint(made.id)) is not None
