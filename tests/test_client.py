"""CheckpointClient beyond the contract suite: its surface, connecting, notifications."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from natsserver import NatsServer, free_port

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.errors import InvalidRequestError, UnavailableError

# Over NATS, the store's id is in each service instance's $SRV.INFO metadata instead, and the
# daemon publishes its metrics on <prefix>.metrics itself.
# The views' position is the embedded store's own: a client reads its writes through the
# Checkpointd-Seq / Checkpointd-Min-Seq headers instead (``CheckpointClient.last_seq``).
IN_PROCESS_ONLY = {
    "add_commit_listener",
    "store_id",
    "metrics",
    "publish_metrics_once",
    "wait_for_views",
}


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_client_has_every_manager_method_with_the_same_parameters() -> None:
    """Every public method of CheckpointManager exists on CheckpointClient, same parameters."""
    manager, client = _public(CheckpointManager), _public(CheckpointClient)
    for name, signature in manager.items():
        if name in IN_PROCESS_ONLY:
            continue
        assert name in client, f"CheckpointClient lacks {name}"
        assert list(client[name].parameters) == list(signature.parameters), name


async def test_connect_gives_up_at_its_deadline() -> None:
    """Opening a client with no NATS server listening raises UnavailableError at the deadline."""
    client = CheckpointClient(f"nats://127.0.0.1:{free_port()}", connect_timeout=1)
    async with asyncio.timeout(20):  # a hang guard, not a timing assertion
        with pytest.raises(UnavailableError, match="cannot connect"):
            await client.open()


async def test_no_service_is_unavailable(nats_server: NatsServer) -> None:
    """A request nobody serves raises UnavailableError naming the subject, after its retries."""
    async with CheckpointClient(nats_server.url, prefix="nobody.here", retries=1) as client:
        with pytest.raises(UnavailableError, match=r"nobody\.here\.stats"):
            await client.get_checkpoint_stats()


async def test_a_bad_request_is_refused_before_it_is_sent(nats_server: NatsServer) -> None:
    """The client checks a request as the store does: a wrong field is the store's own
    InvalidRequestError at once, even with no service to send it to."""
    async with CheckpointClient(nats_server.url, prefix="nobody.here", retries=0) as client:
        with pytest.raises(InvalidRequestError, match=r"unknown field\(s\) colour"):
            await client.create(name="n", session_id="s", snapshot={}, branches=[], colour="red")
        with pytest.raises(InvalidRequestError, match="immutable"):
            await client.update_checkpoint("x", snapshot={})
        with pytest.raises(InvalidRequestError, match=r"^metadata\.priority"):
            await client.update_checkpoint("x", metadata={"priority": "urgent"})
        with pytest.raises(InvalidRequestError, match=r"unknown field\(s\) colour"):
            await client.get_checkpoints_by_session("s", colour="red")
        with pytest.raises(InvalidRequestError, match=r"^id: length"):
            await client.get_checkpoint("")
        with pytest.raises(UnavailableError, match=r"nobody\.here\.get"):
            await client.get_checkpoint("x")  # a good request goes out; nobody answers it


async def test_closed_client_is_unavailable(client: CheckpointClient) -> None:
    """A closed client raises UnavailableError instead of hanging; close() is idempotent."""
    await client.close()
    await client.close()
    with pytest.raises(UnavailableError, match="not open"):
        await client.get_checkpoint_stats()


async def test_custom_resolver_is_in_process_only(client: CheckpointClient) -> None:
    """A custom resolver cannot travel over NATS: InvalidRequestError before anything is sent."""
    cp = await client.create(name="a", session_id="s", snapshot={"x": 1}, branches=[])
    with pytest.raises(InvalidRequestError, match="in-process only"):
        await client.restore_checkpoint(cp.id, custom_resolver=lambda c: c.checkpoint)


async def test_restore_notification_carries_the_state(client: CheckpointClient) -> None:
    """A subscriber to a session's restores receives each one with the resulting state."""
    source = await client.create(
        name="good", session_id="s-1", snapshot={"state": {"step": 3}}, branches=[]
    )
    await client.create(
        name="later", session_id="s-1", snapshot={"state": {"step": 9}}, branches=[]
    )
    async with client.notifications("restored", session_id="s-1") as stream:
        result = await client.restore_checkpoint(source.id)
        async with asyncio.timeout(10):
            notification = await anext(stream)
    assert notification.type == "restored"
    assert notification.seq == result.event_seq
    assert notification.checkpoint_id == source.id
    assert notification.session_id == "s-1"
    assert notification.data["state"] == result.state == {"state": {"step": 3}}


async def test_notifications_of_a_session_with_an_unsafe_id(client: CheckpointClient) -> None:
    """A session id holding '.', '*' or spaces is subscribed to by its encoded token."""
    session = "team.a * run 1"
    async with client.notifications("created", session_id=session) as stream:
        await client.create(name="x", session_id="other", snapshot={}, branches=[])
        created = await client.create(name="y", session_id=session, snapshot={}, branches=[])
        async with asyncio.timeout(10):
            notification = await anext(stream)
    assert (notification.checkpoint_id, notification.session_id) == (created.id, session)


async def test_notifications_have_gapless_seqs_and_history_fills_gaps(
    client: CheckpointClient,
) -> None:
    """All notifications carry consecutive seqs; events missed before subscribing come from
    history."""
    early = await client.create(name="early", session_id="s", snapshot={}, branches=[])
    async with client.notifications() as stream:
        await asyncio.gather(
            *(
                client.create(name=f"n{i}", session_id="s", snapshot={}, branches=[])
                for i in range(30)
            )
        )
        seqs = []
        async with asyncio.timeout(10):
            while len(seqs) < 30:
                seqs.append((await anext(stream)).seq)
    assert seqs == list(range(seqs[0], seqs[0] + 30))
    missed = await client.history(after_seq=0, limit=seqs[0] - 1)
    assert [e.seq for e in missed.events] == list(range(1, seqs[0]))
    assert missed.events[-1].stream == early.id


async def test_unknown_notification_type_is_refused(client: CheckpointClient) -> None:
    """Subscribing to a type that does not exist is an InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="must be one of"):
        client.notifications("renamed")
