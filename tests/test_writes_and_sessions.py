"""Pending writes tied to a checkpoint, and whole sessions: copy, prune, delete by metadata.

What a workflow engine's checkpointer (LangGraph's) needs from the store, as general features.
Tests on ``store`` run in-process and over NATS (msgpack, so bytes values travel); tests on
``manager`` also look into the SQLite files.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TEST_KEY,
    OpenManager,
    blob_count,
    damage_blob,
    dump_projections,
    event_seqs,
    views_file,
)

from checkpointd import (
    Checkpoint,
    CheckpointClient,
    CheckpointManager,
    CopySessionResult,
    PendingWrite,
    PutWritesResult,
)
from checkpointd.errors import (
    ConflictError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
)

Store = Any  # CheckpointManager or CheckpointClient

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


async def checkpoint(store: Store, name: str, session_id: str = "s-1", **fields: Any) -> Checkpoint:
    fields.setdefault("snapshot", {"state": {"name": name}})
    fields.setdefault("branches", ["main"])
    return await store.create(name=name, session_id=session_id, **fields)


def events_of_type(db_path: Path, kind: str) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT seq, stream FROM events WHERE type = ? ORDER BY seq", (kind,))
        return [(seq, stream) for seq, stream in rows]


def stored_bytes(db_path: Path) -> bytes:
    """Every byte of the store's files: the log, the views, their WAL and shared memory."""
    files = db_path.parent.iterdir()
    return b"".join(p.read_bytes() for p in files if p.name.startswith(db_path.name))


def blob_seqs(db_path: Path) -> set[int]:
    with closing(sqlite3.connect(db_path)) as conn:
        return {seq for (seq,) in conn.execute("SELECT seq FROM blobs")}


# -- put_writes / get_writes --------------------------------------------------------------------


async def test_writes_round_trip_with_bytes_in_langgraph_order(store: Store) -> None:
    """Values of any snapshot shape, bytes included, come back as written, ordered by
    (task path, task id, index) whatever order they were put in."""
    cp = await checkpoint(store, "step-1")
    value = {"type": "msgpack", "blob": b"\x00\x01\xff", "nested": [1, 2.5, None, b"", "s"]}
    first = await store.put_writes(
        cp.id, "task-b", [{"index": 0, "channel": "messages", "value": value}], task_path="~p, b"
    )
    assert first == PutWritesResult(cp.id, 1)
    await store.put_writes(
        cp.id,
        "task-a",
        [(1, "branch:to:x", b"raw bytes"), (0, "messages", "hello"), (-3, "__interrupt__", [1])],
        task_path="~p, b",
    )
    await store.put_writes(cp.id, "task-z", [(0, "early", True)], task_path="~p, a")

    writes = await store.get_writes(cp.id)

    assert writes == [
        PendingWrite("task-z", "~p, a", 0, "early", True),
        PendingWrite("task-a", "~p, b", -3, "__interrupt__", [1]),
        PendingWrite("task-a", "~p, b", 0, "messages", "hello"),
        PendingWrite("task-a", "~p, b", 1, "branch:to:x", b"raw bytes"),
        PendingWrite("task-b", "~p, b", 0, "messages", value),
    ]
    assert await store.get_writes((await checkpoint(store, "no writes")).id) == []


async def test_an_index_from_0_is_written_once_a_negative_one_is_replaced(store: Store) -> None:
    """Per (checkpoint, task, index) an index from 0 keeps its first write, a negative one its
    latest."""
    cp = await checkpoint(store, "step-1")
    writes = [(0, "a", "first"), (-1, "__error__", "boom")]
    assert (await store.put_writes(cp.id, "t", writes)).written == 2

    retried = [(0, "a", "second"), (1, "b", "new"), (-1, "__error__", "boom again")]
    assert (await store.put_writes(cp.id, "t", retried, task_path="again")).written == 2
    # The same index of another task is another write.
    assert (await store.put_writes(cp.id, "u", [(0, "a", "u's")])).written == 1
    # A request naming one special index twice stores its last value.
    assert (await store.put_writes(cp.id, "u", [(-2, "s", 1), (-2, "s", 2)])).written == 1

    found = {
        (w.task_id, w.index): (w.channel, w.value, w.task_path)
        for w in await store.get_writes(cp.id)
    }
    assert found == {
        ("t", 0): ("a", "first", ""),
        ("t", 1): ("b", "new", "again"),
        ("t", -1): ("__error__", "boom again", "again"),
        ("u", 0): ("a", "u's", ""),
        ("u", -2): ("s", 2, ""),
    }
    assert (await store.put_writes(cp.id, "t", [(0, "a", "third")])).written == 0


async def test_concurrent_puts_of_one_index_store_one_value(store: Store) -> None:
    """Retries racing each other (one group commit or several) store an index from 0 once."""
    cp = await checkpoint(store, "raced")
    results = await asyncio.gather(
        *(store.put_writes(cp.id, "t", [(0, "c", f"try-{n}")]) for n in range(24))
    )
    assert sum(result.written for result in results) == 1
    (stored,) = await store.get_writes(cp.id)
    assert stored.value in {f"try-{n}" for n in range(24)}


async def test_writes_of_a_missing_or_deleted_checkpoint_are_not_found(store: Store) -> None:
    """Putting or getting the writes of a checkpoint that is not live raises NotFoundError."""
    cp = await checkpoint(store, "doomed")
    await store.put_writes(cp.id, "t", [(0, "c", 1)])
    assert await store.delete_checkpoint(cp.id)
    for checkpoint_id in (cp.id, "no-such-checkpoint"):
        with pytest.raises(NotFoundError):
            await store.put_writes(checkpoint_id, "t", [(1, "c", 2)])
        with pytest.raises(NotFoundError):
            await store.get_writes(checkpoint_id)


async def test_writes_count_in_the_checkpoints_version(store: Store) -> None:
    """Every event of a checkpoint counts in its version, so an update expecting the version
    read after the writes goes through, and one expecting the one before them does not."""
    cp = await checkpoint(store, "versioned")
    await store.put_writes(cp.id, "t", [(0, "c", 1)])
    after = await store.get_checkpoint(cp.id, include_snapshot=False)
    assert after is not None
    assert after.version == cp.version + 1
    with pytest.raises(ConflictError):
        await store.update_checkpoint(cp.id, {"name": "stale"}, expected_version=cp.version)
    updated = await store.update_checkpoint(cp.id, {"name": "ok"}, expected_version=after.version)
    assert updated.version == after.version + 1


@pytest.mark.parametrize(
    ("writes", "field"),
    [
        ("not a list", "writes"),
        ([{"index": True, "channel": "c", "value": 1}], "writes[0].index"),
        ([{"index": 0, "channel": "", "value": 1}], "writes[0].channel"),
        ([{"index": 0, "channel": "c"}], "writes[0].value"),
        ([{"index": 0, "channel": "c", "value": 1, "extra": 2}], "writes[0]"),
        ([(0, "c", 1), (1, "c", {"bad": float("nan")})], "writes[1].value/bad"),
        ([(0, "c", {1: "non-string key"})], "writes[0].value"),
        ([(0, "c", 1)] * 1001, "writes"),
    ],
)
async def test_bad_writes_are_refused_and_write_nothing(
    store: Store, writes: Any, field: str
) -> None:
    """A malformed write or a value no snapshot could hold is a 400 naming it; nothing is
    written."""
    cp = await checkpoint(store, "target")
    before = await store.history(checkpoint_id=cp.id)
    with pytest.raises(InvalidRequestError) as raised:
        await store.put_writes(cp.id, "t", writes)
    if isinstance(store, CheckpointManager):  # the client may refuse it before sending
        assert raised.value.field == field
    assert await store.get_writes(cp.id) == []
    assert (await store.history(checkpoint_id=cp.id)).events == before.events


async def test_deleting_a_checkpoint_removes_its_writes_bytes_and_keeps_the_events(
    manager: CheckpointManager, db_path: Path
) -> None:
    """A delete removes the writes' values with the snapshot; the log keeps their events and
    verifies."""
    cp = await checkpoint(manager, "with writes")
    await manager.put_writes(cp.id, "t", [(0, "c", "secret-ish value")])
    await manager.put_writes(cp.id, "u", [(-1, "__error__", "boom")])
    writes_events = events_of_type(db_path, "checkpoint.writes")
    assert [stream for _, stream in writes_events] == [cp.id, cp.id]
    assert {seq for seq, _ in writes_events} <= blob_seqs(db_path)

    assert await manager.delete_checkpoint(cp.id)

    assert not {seq for seq, _ in writes_events} & blob_seqs(db_path)
    assert blob_count(db_path) == 0
    assert events_of_type(db_path, "checkpoint.writes") == writes_events
    assert (await manager.verify_log()).ok
    assert dump_projections(db_path)["writes"] == []


async def test_expiry_removes_the_writes_too(
    open_manager: OpenManager, db_path: Path, clock: Any
) -> None:
    """An expired checkpoint's writes go with it."""
    manager = await open_manager(default_retention_days=1)
    cp = await checkpoint(manager, "short-lived")
    await manager.put_writes(cp.id, "t", [(0, "c", "v")])
    clock.advance(timedelta(days=2))
    assert await manager.delete_expired_checkpoints() == 1
    assert blob_count(db_path) == 0
    with pytest.raises(NotFoundError):
        await manager.get_writes(cp.id)


async def test_an_encrypted_store_keeps_the_values_encrypted_at_rest(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    """With encryption on, no file of the store holds a value's bytes (without it, they are
    found)."""
    marker = b"PLAINTEXT-MARKER-4f1c9e"
    found = {}
    for encrypted in (False, True):
        path = tmp_path / f"{encrypted}.db"
        settings: dict[str, Any] = {"database_path": str(path), "enable_compression": False}
        if encrypted:
            settings.update(encryption_key=TEST_KEY, enable_encryption=True)
        manager = await open_manager(**settings)
        cp = await checkpoint(manager, "cp", snapshot={"state": {}})
        await manager.put_writes(cp.id, "t", [(0, "c", marker), (1, "d", marker.decode())])
        assert [w.value for w in await manager.get_writes(cp.id)] == [marker, marker.decode()]
        await manager.close()
        found[encrypted] = marker in stored_bytes(path)
    assert found == {False: True, True: False}  # the check finds plaintext where there is some


async def test_a_damaged_value_is_an_integrity_error(
    manager: CheckpointManager, db_path: Path
) -> None:
    """A writes blob changed on disk fails its checksum: IntegrityError, not a wrong value."""
    cp = await checkpoint(manager, "cp")
    await manager.put_writes(cp.id, "t", [(0, "c", "value " * 20)])
    ((seq, _),) = events_of_type(db_path, "checkpoint.writes")
    with closing(sqlite3.connect(db_path)) as conn, conn:
        (data,) = conn.execute("SELECT data FROM blobs WHERE seq = ?", (seq,)).fetchone()
        damaged = bytearray(data)
        damaged[-1] ^= 1
        conn.execute("UPDATE blobs SET data = ? WHERE seq = ?", (bytes(damaged), seq))
    with pytest.raises(IntegrityError):
        await manager.get_writes(cp.id)


async def test_a_put_with_an_idempotency_key_takes_effect_once(store: Store) -> None:
    """A keyed put retried returns the first result and appends nothing; another body is a 409."""
    cp = await checkpoint(store, "cp")
    writes = [(-1, "__error__", "boom")]
    first = await store.put_writes(cp.id, "t", writes, idempotency_key="put-1")
    again = await store.put_writes(cp.id, "t", writes, idempotency_key="put-1")
    assert again == first == PutWritesResult(cp.id, 1)
    events = (await store.history(checkpoint_id=cp.id)).events
    assert [e.type for e in events] == ["checkpoint.created", "checkpoint.writes"]
    with pytest.raises(ConflictError):
        await store.put_writes(cp.id, "t", [(-1, "__error__", "x")], idempotency_key="put-1")


async def test_writes_are_notified_under_the_word_writes(store: Store) -> None:
    """A put is published on ``events.writes.<session>`` with the keys, never the values."""
    cp = await checkpoint(store, "cp", session_id="s-n")
    async with store.notifications("writes", "s-n") as stream:
        await store.put_writes(cp.id, "t", [(0, "c", b"\x00")], task_path="p")
        notification = await asyncio.wait_for(anext(stream), 10)
    assert (notification.type, notification.checkpoint_id) == ("writes", cp.id)
    assert notification.data["taskId"] == "t"
    assert notification.data["writes"] == [{"channel": "c", "index": 0}]
    assert "value" not in str(notification.data)


# -- copy_session ----------------------------------------------------------------------------


async def test_copy_session_copies_every_live_checkpoint_and_leaves_the_source(
    store: Store,
) -> None:
    """Each live checkpoint is copied with its snapshot, metadata, parent link and writes; the
    source stays as it was."""
    root = await checkpoint(
        store, "root", timestamp=T0, metadata={"feature": "auth", "run_id": "r-1"}
    )
    gone = await checkpoint(store, "deleted", metadata={"parentCheckpoint": root.id})
    child = await checkpoint(
        store,
        "child",
        timestamp=T0 + timedelta(minutes=1),
        snapshot={"state": {"blob": "x" * 3000}},
        branches=["main", "exp"],
        metadata={"parentCheckpoint": root.id, "tags": ["stable"]},
    )
    await store.put_writes(child.id, "t", [(0, "messages", b"\x01"), (-1, "__error__", "e")])
    await store.delete_checkpoint(gone.id)
    elsewhere = await checkpoint(store, "other session", session_id="s-other")
    source_before = await store.get_checkpoints_by_session("s-1", include_snapshot=True)

    result = await store.copy_session("s-1", "s-copy")

    assert isinstance(result, CopySessionResult)
    assert result.copied == 2
    assert set(result.ids) == {root.id, child.id}
    copies = {
        cp.id: cp for cp in await store.get_checkpoints_by_session("s-copy", include_snapshot=True)
    }
    assert set(copies) == set(result.ids.values())
    for source in (root, child):
        original = await store.get_checkpoint(source.id)
        copy = copies[result.ids[source.id]]
        assert copy.id != source.id
        assert copy.session_id == "s-copy"
        assert (copy.name, copy.timestamp, copy.snapshot, copy.branches, copy.checksum) == (
            original.name,
            original.timestamp,
            original.snapshot,
            original.branches,
            original.checksum,
        )
        assert copy.restored_from == source.id
    assert copies[result.ids[root.id]].metadata == root.metadata
    assert copies[result.ids[child.id]].metadata == {
        **child.metadata,
        "parentCheckpoint": result.ids[root.id],
    }
    assert await store.get_writes(result.ids[child.id]) == await store.get_writes(child.id)
    # The source is unchanged; the other session is not copied.
    assert await store.get_checkpoints_by_session("s-1", include_snapshot=True) == source_before
    assert elsewhere.id not in result.ids
    # The copy's lineage shows its parent's copy and where it came from.
    lineage = await store.get_lineage(result.ids[child.id])
    ancestors = [cp.id for cp in lineage.ancestors]
    assert result.ids[root.id] in ancestors
    assert child.id in ancestors


async def test_copy_session_of_an_empty_or_unknown_session_copies_nothing(store: Store) -> None:
    """A session with no live checkpoint copies nothing, without an error."""
    assert await store.copy_session("nobody", "s-copy") == CopySessionResult(0, {})
    cp = await checkpoint(store, "gone", session_id="s-empty")
    await store.delete_checkpoint(cp.id)
    assert (await store.copy_session("s-empty", "s-copy")).copied == 0
    assert (await store.get_checkpoints_by_session("s-copy")).total == 0


async def test_copy_session_refusals_write_nothing(store: Store) -> None:
    """A copy into the same session, a bad or taken chosen id, is refused and appends no event."""
    a = await checkpoint(store, "a")
    b = await checkpoint(store, "b")
    head = (await store.history(after_seq=0, limit=1000)).events[-1].seq
    with pytest.raises(InvalidRequestError):
        await store.copy_session("s-1", "s-1")
    with pytest.raises(InvalidRequestError):
        await store.copy_session("s-1", "s-2", ids={a.id: "session:reserved"})
    with pytest.raises(ConflictError):  # b's chosen id is a's: the whole copy is refused
        await store.copy_session("s-1", "s-2", ids={a.id: "fresh-id", b.id: a.id})
    assert (await store.history(after_seq=head)).events == ()
    chosen = await store.copy_session("s-1", "s-2", ids={a.id: "fresh-id"})
    assert chosen.ids[a.id] == "fresh-id"
    assert chosen.ids[b.id] not in {a.id, b.id}


async def test_copy_session_is_atomic_when_a_blob_cannot_be_read(
    open_manager: OpenManager, db_path: Path
) -> None:
    """A source blob that cannot be opened refuses the whole copy: no checkpoint is copied."""
    manager = await open_manager(encryption_key=TEST_KEY, enable_encryption=True)
    await checkpoint(manager, "fine")
    bad = await checkpoint(manager, "damaged")
    damage_blob(db_path, bad.id)
    seqs = event_seqs(db_path)
    with pytest.raises(IntegrityError):
        await manager.copy_session("s-1", "s-2")
    assert event_seqs(db_path) == seqs
    assert (await manager.get_checkpoints_by_session("s-2")).total == 0


async def test_copies_of_an_encrypted_store_stay_readable_and_encrypted(
    open_manager: OpenManager,
) -> None:
    """Encrypted blobs are bound to the copy's id: the copy reads, validates and stays encrypted."""
    manager = await open_manager(encryption_key=TEST_KEY, enable_encryption=True)
    cp = await checkpoint(manager, "secret", snapshot={"state": {"k": "v"}})
    await manager.put_writes(cp.id, "t", [(0, "c", b"bytes")])
    result = await manager.copy_session("s-1", "s-2")
    copy = await manager.get_checkpoint(result.ids[cp.id])
    assert copy is not None
    assert copy.encrypted
    assert copy.snapshot == {"state": {"k": "v"}}
    assert (await manager.get_writes(copy.id))[0].value == b"bytes"
    assert (await manager.validate_checkpoint(copy.id)).is_valid


async def test_copy_session_with_an_idempotency_key_copies_once(store: Store) -> None:
    """A keyed copy retried returns the first ids and copies nothing more."""
    await checkpoint(store, "a")
    first = await store.copy_session("s-1", "s-2", idempotency_key="copy-1")
    again = await store.copy_session("s-1", "s-2", idempotency_key="copy-1")
    assert again == first
    assert (await store.get_checkpoints_by_session("s-2")).total == 1


async def test_prune_and_delete_by_metadata_with_an_idempotency_key_delete_once(
    store: Store,
) -> None:
    """A keyed prune or delete by metadata retried deletes nothing more."""
    await checkpoint(store, "old", timestamp=T0, metadata={"run_id": "r"})
    await checkpoint(store, "new", timestamp=T0 + timedelta(hours=1))
    assert await store.prune_session("s-1", keep=1, idempotency_key="prune-1") == 1
    later = await checkpoint(store, "later", timestamp=T0 + timedelta(hours=2))
    assert await store.prune_session("s-1", keep=1, idempotency_key="prune-1") == 1
    assert (await store.get_checkpoints_by_session("s-1")).total == 2  # the retry did nothing
    tagged = await checkpoint(store, "tagged", metadata={"run_id": "r"})
    assert await store.delete_by_metadata("run_id", ["r"], idempotency_key="dbm-1") == 1
    again = await checkpoint(store, "tagged again", metadata={"run_id": "r"})
    assert await store.delete_by_metadata("run_id", ["r"], idempotency_key="dbm-1") == 1
    assert await store.get_checkpoint(tagged.id) is None
    assert await store.get_checkpoint(again.id) is not None
    assert await store.get_checkpoint(later.id) is not None


# -- prune_session -----------------------------------------------------------------------------


async def test_prune_session_keeps_the_newest_by_timestamp(store: Store) -> None:
    """Prune keeps the newest by timestamp (ties: the later created) and touches no other
    session."""
    # Created out of timestamp order; "tie-2" and "tie-1" share the newest timestamp.
    late = await checkpoint(store, "late", timestamp=T0 + timedelta(hours=1))
    early = await checkpoint(store, "early", timestamp=T0)
    tie1 = await checkpoint(store, "tie-1", timestamp=T0 + timedelta(hours=2))
    tie2 = await checkpoint(store, "tie-2", timestamp=T0 + timedelta(hours=2))
    await store.put_writes(early.id, "t", [(0, "c", 1)])
    other = await checkpoint(store, "other", session_id="s-other")

    assert await store.prune_session("s-1", keep=2) == 2
    left = {cp.id for cp in await store.get_checkpoints_by_session("s-1")}
    assert left == {tie1.id, tie2.id}
    assert await store.prune_session("s-1") == 1  # keep=1: the later-created of the tie
    assert [cp.id for cp in await store.get_checkpoints_by_session("s-1")] == [tie2.id]
    for removed in (late, early, tie1):
        assert await store.get_checkpoint(removed.id) is None
    assert await store.prune_session("s-1", keep=0) == 1
    assert (await store.get_checkpoints_by_session("s-1")).total == 0
    assert await store.prune_session("s-1", keep=0) == 0
    assert await store.get_checkpoint(other.id) is not None
    with pytest.raises(InvalidRequestError):
        await store.prune_session("s-other", keep=-1)


# -- delete_by_metadata ----------------------------------------------------------------------


async def test_delete_by_metadata_scoped_and_unscoped(store: Store) -> None:
    """Deletes the live checkpoints whose metadata value matches, in one session or all, by JSON
    scalar equality."""
    r1 = await checkpoint(store, "r1", metadata={"run_id": "run-1"})
    r1_other = await checkpoint(store, "r1 other", "s-2", metadata={"run_id": "run-1"})
    r2 = await checkpoint(store, "r2", metadata={"run_id": "run-2"})
    r3 = await checkpoint(store, "r3", "s-2", metadata={"run_id": "run-3"})
    flag = await checkpoint(store, "flag", metadata={"step": 1, "done": True})
    await store.put_writes(r1.id, "t", [(0, "c", 1)])

    assert await store.delete_by_metadata("run_id", ["run-1"], session_id="s-2") == 1
    assert await store.get_checkpoint(r1_other.id) is None
    assert await store.get_checkpoint(r1.id) is not None

    assert await store.delete_by_metadata("run_id", ["run-1", "run-2", "run-9"]) == 2
    assert await store.get_checkpoint(r1.id) is None
    assert await store.get_checkpoint(r2.id) is None
    with pytest.raises(NotFoundError):
        await store.get_writes(r1.id)
    assert await store.get_checkpoint(r3.id) is not None

    # Scalar equality: a number by value, a boolean only equals a boolean.
    assert await store.delete_by_metadata("done", [1]) == 0
    assert await store.delete_by_metadata("step", [True, "1"]) == 0
    assert await store.delete_by_metadata("step", [1.0]) == 1
    assert await store.get_checkpoint(flag.id) is None
    assert await store.delete_by_metadata("run_id", ["run-1"]) == 0


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("", ["x"]),
        ("k", []),
        ("k", "x"),
        ("k", [{"a": 1}]),
        ("k", [None]),
        ("k", [[1]]),
        ("k", [2**64]),
        ("k", ["x"] * 1001),
    ],
)
async def test_delete_by_metadata_refuses_bad_requests(store: Store, key: str, values: Any) -> None:
    """A bad key or values list is a 400 and deletes nothing."""
    cp = await checkpoint(store, "kept", metadata={"k": "x"})
    with pytest.raises(InvalidRequestError):
        await store.delete_by_metadata(key, values)
    assert await store.get_checkpoint(cp.id) is not None


# -- the log and the views ---------------------------------------------------------------------


async def test_history_verify_and_rebuild_after_the_new_events(
    manager: CheckpointManager, db_path: Path
) -> None:
    """History shows the writes events, the log verifies, and rebuilt views equal the live ones."""
    a = await checkpoint(manager, "a", metadata={"run_id": "r"})
    b = await checkpoint(manager, "b", metadata={"parentCheckpoint": a.id})
    await manager.put_writes(b.id, "t", [(0, "c", b"x"), (-1, "__error__", "e")])
    await manager.put_writes(b.id, "t", [(-1, "__error__", "e2")])
    copied = await manager.copy_session("s-1", "s-2")
    await manager.put_writes(copied.ids[a.id], "u", [(0, "c", "y")])
    await manager.prune_session("s-2", keep=1)
    await manager.delete_by_metadata("run_id", ["r"], session_id="s-1")

    history = await manager.history(checkpoint_id=b.id)
    assert [e.type for e in history.events] == [
        "checkpoint.created",
        "checkpoint.writes",
        "checkpoint.writes",
    ]
    assert history.events[1].data["writes"] == [
        {"channel": "c", "index": 0},
        {"channel": "__error__", "index": -1},
    ]
    assert (await manager.verify_log()).ok
    live = dump_projections(db_path)
    assert live["writes"]
    events = len(event_seqs(db_path))
    assert await manager.rebuild() == events
    assert dump_projections(db_path) == live


async def test_an_older_views_file_is_rebuilt_with_the_writes(
    open_manager: OpenManager, db_path: Path
) -> None:
    """A views file of the previous layout (no writes view) is rebuilt from the log on open."""
    manager = await open_manager()
    cp = await checkpoint(manager, "cp")
    await manager.put_writes(cp.id, "t", [(0, "c", "v")])
    await manager.close()
    with closing(sqlite3.connect(views_file(db_path))) as conn, conn:
        conn.execute("DROP TABLE writes")
        conn.execute("UPDATE views_meta SET value = 1 WHERE key = 'version'")
    manager = await open_manager()
    assert await manager.get_writes(cp.id) == [PendingWrite("t", "", 0, "c", "v")]


async def test_bytes_cannot_travel_in_json(
    manager: CheckpointManager, served: str, nats_server: Any
) -> None:
    """Bytes values need msgpack: asked in JSON they are a 400, not a 500; JSON values are fine."""
    cp = await checkpoint(manager, "cp")
    await manager.put_writes(cp.id, "t", [(0, "c", b"\x00")])
    async with CheckpointClient(nats_server.url, prefix=served, encoding="json") as client:
        with pytest.raises(InvalidRequestError, match="msgpack"):
            await client.get_writes(cp.id)
        with pytest.raises(InvalidRequestError):
            await client.put_writes(cp.id, "t", [(1, "c", b"\x01")])
        await client.put_writes(cp.id, "t", [(1, "c", {"json": ["fine"]})])
    assert [w.value for w in await manager.get_writes(cp.id)] == [b"\x00", {"json": ["fine"]}]
