"""Idempotency keys: a keyed command takes effect once and a retry gets the first reply back.

Tests drive the keys through CheckpointManager on a real SQLite file; the digest helpers of
``checkpointd.write.idempotency`` are pure and tested on their own first.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from conftest import FakeClock, OpenManager

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.errors import ConflictError, InvalidRequestError, NotFoundError
from checkpointd.write.idempotency import MAX_KEY_LENGTH, Reply, keyed, request_digest


def request(name: str = "cp", session_id: str = "s-1", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sessionId": session_id,
        "snapshot": {"state": {"name": name}},
        "branches": ["main"],
        **fields,
    }


async def event_types(manager: CheckpointManager, **selector: Any) -> list[str]:
    return [e.type for e in (await manager.history(**selector, limit=1000)).events]


async def checkpoint_count(manager: CheckpointManager, session_id: str = "s-1") -> int:
    return (await manager.get_checkpoints_by_session(session_id)).total


async def no_revive(reply: object) -> object:
    return reply


no_reply = Reply(lambda value: {}, no_revive)


# -- the digest --------------------------------------------------------------------------------


def test_digest_is_stable_for_the_same_request() -> None:
    """The same operation and request always give the same digest."""
    assert request_digest("create", request()) == request_digest("create", request())


def test_digest_tells_operations_and_requests_apart() -> None:
    """Another operation or another request gives another digest."""
    digests = {
        request_digest("create", request()),
        request_digest("create_batch", request()),
        request_digest("create", request(name="other")),
        request_digest("delete", {"id": "x"}),
        request_digest("delete", {"id": "y"}),
    }
    assert len(digests) == 5


def test_no_key_means_not_keyed() -> None:
    """A command without a key is not keyed."""
    assert keyed(None, "create", request(), no_reply) is None


@pytest.mark.parametrize("key", ["", "k" * (MAX_KEY_LENGTH + 1), 0, 12, b"bytes", ["k"]])
def test_malformed_key_is_invalid(key: Any) -> None:
    """A key of 0 or more than 256 characters, or not a string, is InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey: must be a string of 1\.\.256"):
        keyed(key, "create", request(), no_reply)


# -- create ------------------------------------------------------------------------------------


async def test_retried_create_returns_the_first_result(manager: CheckpointManager) -> None:
    """The same key and request returns the identical checkpoint and writes one event."""
    first = await manager.create(request(), idempotency_key="k-1")
    again = await manager.create(request(), idempotency_key="k-1")
    assert again == first
    assert again.snapshot == {"state": {"name": "cp"}}
    assert await checkpoint_count(manager) == 1
    assert await event_types(manager) == ["checkpoint.created"]


async def test_retried_keyword_create_returns_the_first_result(
    manager: CheckpointManager,
) -> None:
    """Keyword-argument creates are keyed just like mapping creates."""
    fields: dict[str, Any] = {"name": "kw", "session_id": "s-1", "snapshot": {}, "branches": []}
    first = await manager.create(idempotency_key="k-kw", **fields)
    again = await manager.create(idempotency_key="k-kw", **fields)
    assert again == first
    assert await checkpoint_count(manager) == 1


async def test_retried_create_returns_the_first_result_after_an_update(
    manager: CheckpointManager,
) -> None:
    """A retry after the checkpoint changed still gets the create's reply (from its event)."""
    fields = {"metadata": {"feature": "f", "tags": ["a", "b"], "zeta": 1, "alpha": {"y": 2}}}
    first = await manager.create(
        request(timestamp="2024-05-01T12:00:00Z", createdBy="me", **fields),
        idempotency_key="k-1",
    )
    await manager.update_checkpoint(first.id, {"name": "renamed"})
    again = await manager.create(
        request(timestamp="2024-05-01T12:00:00Z", createdBy="me", **fields),
        idempotency_key="k-1",
    )
    assert again == first
    assert again.name == "cp"
    assert again.version == 1


async def test_create_reply_stored_by_an_older_version_is_replayed(
    open_manager: OpenManager,
) -> None:
    """A key whose create reply was stored whole (as before issue 6) still replays it."""
    manager = await open_manager()
    first = await manager.create(request(), idempotency_key="k-1")
    await manager.close()
    reply = msgpack.packb(replace(first, snapshot=None).to_wire(), use_bin_type=True)
    with sqlite3.connect(manager.config.database_path) as db:
        db.execute("UPDATE idempotency SET reply = ? WHERE key = 'k-1'", (reply,))
    db.close()
    reopened = await open_manager()
    assert await reopened.create(request(), idempotency_key="k-1") == first
    assert await checkpoint_count(reopened) == 1


async def test_same_key_with_another_request_is_a_conflict(manager: CheckpointManager) -> None:
    """Reusing a key for a different request is ConflictError and writes nothing."""
    await manager.create(request(), idempotency_key="k-1")
    with pytest.raises(ConflictError, match=r"'k-1' was already used for another request"):
        await manager.create(request(name="different"), idempotency_key="k-1")
    assert await checkpoint_count(manager) == 1
    assert await event_types(manager) == ["checkpoint.created"]


async def test_same_key_for_another_operation_is_a_conflict(manager: CheckpointManager) -> None:
    """A key used by a create cannot be reused by a delete: ConflictError, nothing deleted."""
    cp = await manager.create(request(), idempotency_key="k-1")
    with pytest.raises(ConflictError, match=r"already used for another request"):
        await manager.delete_checkpoint(cp.id, idempotency_key="k-1")
    assert await manager.get_checkpoint(cp.id) is not None


async def test_distinct_keys_are_distinct_commands(manager: CheckpointManager) -> None:
    """The same request under two keys runs twice."""
    first = await manager.create(request(), idempotency_key="k-1")
    second = await manager.create(request(), idempotency_key="k-2")
    assert first.id != second.id
    assert await checkpoint_count(manager) == 2


async def test_refused_command_records_no_key(manager: CheckpointManager) -> None:
    """A keyed command that fails writes nothing and leaves its key free for another request."""
    with pytest.raises(NotFoundError, match=r"not found"):
        await manager.create(
            request(metadata={"parentCheckpoint": "01J00000000000000000000000"}),
            idempotency_key="k-1",
        )
    cp = await manager.create(request(), idempotency_key="k-1")
    assert await event_types(manager) == ["checkpoint.created"]
    assert (await manager.create(request(), idempotency_key="k-1")) == cp


async def test_concurrent_duplicates_create_once(manager: CheckpointManager) -> None:
    """100 concurrent duplicates of one keyed create make one checkpoint; all get its result."""
    results = await asyncio.gather(
        *(manager.create(request(), idempotency_key="k-race") for _ in range(100))
    )
    assert all(result == results[0] for result in results)
    assert await checkpoint_count(manager) == 1
    assert await event_types(manager) == ["checkpoint.created"]


# -- the other writes --------------------------------------------------------------------------


async def test_retried_create_batch_returns_the_first_result(manager: CheckpointManager) -> None:
    """A keyed batch retried returns the same checkpoints and creates them once."""
    batch = [request(f"b{i}", "batch") for i in range(3)]
    first = await manager.create_batch(batch, idempotency_key="k-batch")
    again = await manager.create_batch(batch, idempotency_key="k-batch")
    assert again == first
    assert [cp.snapshot for cp in again] == [item["snapshot"] for item in batch]
    assert await checkpoint_count(manager, "batch") == 3
    assert await event_types(manager) == ["checkpoint.created"] * 3


async def test_retried_update_returns_the_first_result(manager: CheckpointManager) -> None:
    """A keyed update retried (even with a now-stale expected version) applies once."""
    cp = await manager.create(request())
    first = await manager.update_checkpoint(
        cp.id, {"name": "renamed"}, expected_version=1, idempotency_key="k-up"
    )
    again = await manager.update_checkpoint(
        cp.id, {"name": "renamed"}, expected_version=1, idempotency_key="k-up"
    )
    assert again == first
    assert (again.version, again.name) == (2, "renamed")
    assert await event_types(manager, checkpoint_id=cp.id) == [
        "checkpoint.created",
        "checkpoint.updated",
    ]


async def test_update_with_another_change_under_the_key_is_a_conflict(
    manager: CheckpointManager,
) -> None:
    """The same key on an update with other changes is ConflictError."""
    cp = await manager.create(request())
    await manager.update_checkpoint(cp.id, {"name": "one"}, idempotency_key="k-up")
    with pytest.raises(ConflictError, match=r"already used for another request"):
        await manager.update_checkpoint(cp.id, {"name": "two"}, idempotency_key="k-up")
    stored = await manager.get_checkpoint(cp.id, include_snapshot=False)
    assert stored is not None
    assert stored.name == "one"


async def test_retried_delete_returns_the_first_result(manager: CheckpointManager) -> None:
    """A keyed delete retried returns True again (not False) and deletes once."""
    cp = await manager.create(request())
    assert await manager.delete_checkpoint(cp.id, idempotency_key="k-del") is True
    assert await manager.delete_checkpoint(cp.id, idempotency_key="k-del") is True
    assert await manager.delete_checkpoint(cp.id) is False
    assert await event_types(manager, checkpoint_id=cp.id) == [
        "checkpoint.created",
        "checkpoint.deleted",
    ]


async def test_retried_delete_expired_returns_the_first_result(
    manager: CheckpointManager, clock: FakeClock
) -> None:
    """A keyed expiry retried returns the first count and expires nothing more."""
    due = clock.now() + timedelta(minutes=1)
    for n in range(3):
        await manager.create(request(f"old{n}", retentionExpiresAt=due))
    clock.advance(timedelta(minutes=2))
    assert await manager.delete_expired_checkpoints(idempotency_key="k-exp") == 3
    await manager.create(request("late", retentionExpiresAt=due))
    assert await manager.delete_expired_checkpoints(idempotency_key="k-exp") == 3
    assert await checkpoint_count(manager) == 1  # "late" is due, but the retry did not run
    assert (await event_types(manager)).count("checkpoint.expired") == 3


async def test_retried_delete_expired_over_many_steps_returns_the_total(
    manager: CheckpointManager, clock: FakeClock
) -> None:
    """An expiry that took several steps is replayed with its total, not its last step's count."""
    due = clock.now() + timedelta(minutes=1)
    await manager.create_batch(
        [request(f"old{n}", "many", retentionExpiresAt=due) for n in range(501)]
    )
    clock.advance(timedelta(minutes=2))
    assert await manager.delete_expired_checkpoints(idempotency_key="k-exp") == 501
    assert await manager.delete_expired_checkpoints(idempotency_key="k-exp") == 501
    assert await checkpoint_count(manager, "many") == 0


async def test_retried_restore_returns_the_first_result(manager: CheckpointManager) -> None:
    """A keyed restore retried returns the same result, state and eventSeq, and restores once."""
    source = await manager.create(request("source", snapshot={"state": {"a": 1, "b": 1}}))
    await manager.create(request("current", snapshot={"state": {"a": 2, "c": 3}}))
    options: dict[str, Any] = {"merge_strategy": "merge", "preserve_current_state": True}
    first = await manager.restore_checkpoint(source.id, idempotency_key="k-rs", **options)
    again = await manager.restore_checkpoint(source.id, idempotency_key="k-rs", **options)
    assert again == first
    assert again.state == {"state": {"a": 1, "b": 1, "c": 3}}
    assert again.event_seq == first.event_seq is not None
    assert again.backup_checkpoint_id == first.backup_checkpoint_id is not None
    types = await event_types(manager, session_id="s-1")
    assert types.count("checkpoint.restored") == 1
    assert types.count("checkpoint.created") == 3  # source, current, one backup
    assert await checkpoint_count(manager) == 3


async def test_retried_wire_restore_returns_the_first_result(manager: CheckpointManager) -> None:
    """A keyed restore given as a wire mapping is replayed the same way."""
    source = await manager.create(request("source"))
    options = {"mergeStrategy": "overwrite", "timeout": 5000}
    first = await manager.restore_checkpoint(source.id, options, idempotency_key="k-rs")
    again = await manager.restore_checkpoint(source.id, options, idempotency_key="k-rs")
    assert again == first
    assert (await event_types(manager, session_id="s-1")).count("checkpoint.restored") == 1


async def test_restore_with_another_request_under_the_key_is_a_conflict(
    manager: CheckpointManager,
) -> None:
    """The same key on a restore with other options is ConflictError and restores nothing."""
    source = await manager.create(request("source"))
    await manager.restore_checkpoint(source.id, idempotency_key="k-rs")
    with pytest.raises(ConflictError, match=r"already used for another request"):
        await manager.restore_checkpoint(
            source.id, target_session_id="elsewhere", idempotency_key="k-rs"
        )
    assert await event_types(manager, session_id="elsewhere") == []


async def test_concurrent_duplicate_restores_restore_once(manager: CheckpointManager) -> None:
    """20 concurrent duplicates of one keyed restore write one restore; all get its result."""
    source = await manager.create(request("source", snapshot={"state": {"v": 1}}))
    results = await asyncio.gather(
        *(manager.restore_checkpoint(source.id, idempotency_key="k-rs") for _ in range(20))
    )
    assert all(result == results[0] for result in results)
    assert (await event_types(manager, session_id="s-1")).count("checkpoint.restored") == 1


# -- lifetime of a key -------------------------------------------------------------------------


async def test_key_survives_reopening(open_manager: OpenManager) -> None:
    """A key recorded before close is still honoured after reopening the same file."""
    first_manager = await open_manager()
    first = await first_manager.create(request(), idempotency_key="k-1")
    await first_manager.close()
    reopened = await open_manager()
    again = await reopened.create(request(), idempotency_key="k-1")
    assert again == first
    assert await checkpoint_count(reopened) == 1
    with pytest.raises(ConflictError, match=r"already used for another request"):
        await reopened.create(request(name="other"), idempotency_key="k-1")


async def test_cleanup_forgets_keys_older_than_the_window(
    open_manager: OpenManager, clock: FakeClock
) -> None:
    """cleanup_once() forgets keys older than idempotency_window; the key then runs again."""
    manager = await open_manager(idempotency_window=60)
    first = await manager.create(request(), idempotency_key="k-1")
    clock.advance(timedelta(seconds=61))
    await manager.cleanup_once()
    second = await manager.create(request(), idempotency_key="k-1")
    assert second.id != first.id
    assert await checkpoint_count(manager) == 2


async def test_cleanup_keeps_keys_within_the_window(
    open_manager: OpenManager, clock: FakeClock
) -> None:
    """cleanup_once() keeps keys younger than idempotency_window."""
    manager = await open_manager(idempotency_window=60)
    first = await manager.create(request(), idempotency_key="k-1")
    clock.advance(timedelta(seconds=59))
    await manager.cleanup_once()
    assert await manager.create(request(), idempotency_key="k-1") == first
    assert await checkpoint_count(manager) == 1


# -- malformed keys ----------------------------------------------------------------------------

BAD_KEYS = ["", "k" * (MAX_KEY_LENGTH + 1), 0, 42]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_malformed_key_on_create_is_invalid(manager: CheckpointManager, key: Any) -> None:
    """create with a key of 0 or 257 characters or a non-string is 400 and writes nothing."""
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.create(request(), idempotency_key=key)
    assert await event_types(manager) == []


async def test_longest_key_is_accepted(manager: CheckpointManager) -> None:
    """A key of exactly 256 characters is accepted and honoured."""
    key = "k" * MAX_KEY_LENGTH
    first = await manager.create(request(), idempotency_key=key)
    assert await manager.create(request(), idempotency_key=key) == first


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_malformed_key_on_other_writes_is_invalid(
    manager: CheckpointManager, clock: FakeClock, key: Any
) -> None:
    """Every writing method refuses a malformed key with InvalidRequestError and writes nothing."""
    cp = await manager.create(request(retentionExpiresAt=clock.now()))
    clock.advance(timedelta(seconds=1))
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.create_batch([request("b")], idempotency_key=key)
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.update_checkpoint(cp.id, {"name": "x"}, idempotency_key=key)
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.delete_checkpoint(cp.id, idempotency_key=key)
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.delete_expired_checkpoints(idempotency_key=key)
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.restore_checkpoint(cp.id, idempotency_key=key)
    assert await event_types(manager) == ["checkpoint.created"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_malformed_key_on_dry_run_restore_is_invalid(
    manager: CheckpointManager, key: Any
) -> None:
    """A dry-run restore refuses a malformed key too, like every other call that takes one."""
    cp = await manager.create(request())
    with pytest.raises(InvalidRequestError, match=r"idempotencyKey"):
        await manager.restore_checkpoint(cp.id, dry_run=True, idempotency_key=key)


async def test_keyed_checkpoint_read_back_matches(manager: CheckpointManager) -> None:
    """What a replayed create returns is what get_checkpoint reads."""
    await manager.create(request(), idempotency_key="k-1")
    again: Checkpoint = await manager.create(request(), idempotency_key="k-1")
    assert await manager.get_checkpoint(again.id) == again
