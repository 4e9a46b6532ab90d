"""Many callers at once: optimistic concurrency, group commit, atomic batches, cancellation."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FakeClock,
    OpenManager,
    blob_count,
    caught_up,
    dump_projections,
    event_seqs,
)

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.errors import ConflictError, IntegrityError, InvalidRequestError, NotFoundError

MISSING_ID = "01J00000000000000000000000"


def item(name: str, session_id: str = "batch", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sessionId": session_id,
        "snapshot": {"n": name},
        "branches": [],
        **fields,
    }


async def create(store: Any, name: str, session_id: str = "s-1") -> Checkpoint:
    checkpoint: Checkpoint = await store.create(item(name, session_id))
    return checkpoint


async def test_one_of_many_racing_updates_wins(store: Any) -> None:
    """Of 64 concurrent updates expecting version 1, one applies and 63 raise ConflictError."""
    cp = await create(store, "raced")
    results = await asyncio.gather(
        *(
            store.update_checkpoint(cp.id, {"name": f"winner-{n}"}, expected_version=1)
            for n in range(64)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Checkpoint)]
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    assert (len(winners), len(conflicts)) == (1, 63)
    stored = await store.get_checkpoint(cp.id, include_snapshot=False)
    assert stored is not None
    assert (stored.version, stored.name) == (2, winners[0].name)
    history = await store.history({"checkpointId": cp.id})
    assert [e.type for e in history.events] == ["checkpoint.created", "checkpoint.updated"]


async def test_one_of_many_racing_deletes_wins(store: Any) -> None:
    """Of 32 concurrent deletes of one checkpoint, exactly one returns True."""
    cp = await create(store, "doomed")
    results = await asyncio.gather(*(store.delete_checkpoint(cp.id) for _ in range(32)))
    assert sorted(results) == [False] * 31 + [True]
    history = await store.history({"checkpointId": cp.id})
    assert [e.type for e in history.events] == ["checkpoint.created", "checkpoint.deleted"]


async def test_concurrent_creates_are_durable(open_manager: OpenManager, db_path: Path) -> None:
    """500 concurrent creates all survive a close and reopen, with a gapless event sequence."""
    manager = await open_manager()
    created = await asyncio.gather(*(create(manager, f"cp-{n}", f"s-{n % 7}") for n in range(500)))
    assert len({cp.id for cp in created}) == 500
    await manager.close()

    reopened = await open_manager()
    for cp in created:
        stored = await reopened.get_checkpoint(cp.id)
        assert stored is not None
        assert (stored.name, stored.snapshot, stored.checksum) == (
            cp.name,
            cp.snapshot,
            cp.checksum,
        )
    assert event_seqs(db_path) == list(range(1, 501))
    assert (await reopened.verify_log()).ok


async def test_reads_during_writes_see_committed_checkpoints(store: Any) -> None:
    """A checkpoint is readable as soon as its create returns, while other writes go on."""

    async def create_then_read(n: int) -> bool:
        cp = await create(store, f"cp-{n}")
        got = await store.get_checkpoint(cp.id)
        return got is not None and got.snapshot == cp.snapshot

    assert all(await asyncio.gather(*(create_then_read(n) for n in range(100))))


async def test_batch_creates_all_in_order(store: Any) -> None:
    """A valid batch creates every checkpoint and returns them in the order given."""
    created = await store.create_batch([item(f"b-{n}") for n in range(10)])
    assert [cp.name for cp in created] == [f"b-{n}" for n in range(10)]
    page = await store.get_checkpoints_by_session("batch", page_size=100)
    assert sorted(cp.id for cp in page) == sorted(cp.id for cp in created)


BAD_FIFTH = [
    pytest.param(
        {"checksum": "sha256:" + "0" * 64}, IntegrityError, "does not match", id="wrong-checksum"
    ),
    pytest.param(
        {"metadata": {"parentCheckpoint": MISSING_ID}}, NotFoundError, MISSING_ID, id="no-parent"
    ),
    pytest.param({"size": 1}, IntegrityError, "size", id="wrong-size"),
]


@pytest.mark.parametrize(("bad", "error", "match"), BAD_FIFTH)
async def test_batch_is_all_or_nothing(
    manager: CheckpointManager,
    db_path: Path,
    bad: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    """A batch whose 5th item fails at write time stores none of it; concurrent creates commit."""
    batch = [item(f"b-{n}", **(bad if n == 4 else {})) for n in range(8)]
    outcomes = await asyncio.gather(
        manager.create_batch(batch),
        *(create(manager, f"other-{n}", "other") for n in range(20)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], error)
    assert re.search(match, str(outcomes[0]))
    assert all(isinstance(o, Checkpoint) for o in outcomes[1:])
    assert (await manager.get_checkpoints_by_session("batch")).total == 0
    assert (await manager.history({"sessionId": "batch"})).events == ()
    assert (await manager.get_checkpoints_by_session("other", page_size=100)).total == 20
    assert event_seqs(db_path) == list(range(1, 21))
    assert blob_count(db_path) == 20
    assert (await manager.verify_log()).ok


async def test_failed_batch_leaves_the_projection_position_at_the_log_head(
    manager: CheckpointManager, db_path: Path
) -> None:
    """After a rolled-back batch, the views' position is the last stored event, and the next
    write, which takes the sequence numbers the batch did not keep, is in the views."""
    # A position ahead of the log would make the projector skip the events that later take
    # those sequence numbers.
    await create(manager, "first")
    batch = [item(f"b-{n}", **({"size": 1} if n == 4 else {})) for n in range(8)]
    with pytest.raises(IntegrityError, match="size"):
        await manager.create_batch(batch)
    assert caught_up(db_path) == event_seqs(db_path)[-1] == 1
    after = await create(manager, "after")
    assert caught_up(db_path) == event_seqs(db_path)[-1] == 2
    assert (await manager.get_checkpoint(after.id, include_snapshot=False)) is not None


async def test_batch_invalid_before_write(store: Any) -> None:
    """A batch with a malformed item is rejected whole before anything is written."""
    batch = [item(f"b-{n}") for n in range(8)]
    del batch[4]["branches"]
    with pytest.raises(InvalidRequestError, match="branches"):
        await store.create_batch(batch)
    assert (await store.history()).events == ()


@pytest.mark.parametrize("items", [[], "not a list"])
async def test_batch_shape(store: Any, items: Any) -> None:
    """An empty batch or one that is not a list is an invalid request."""
    with pytest.raises(InvalidRequestError, match="checkpoints"):
        await store.create_batch(items)


class GatedClock(FakeClock):
    """A fake clock that, while its gate is shut, holds the writer thread at its next reading.

    The writer reads the clock inside a group's transaction, so a shut gate holds a group
    mid-commit with every later write queued behind it: the moment to cancel their callers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def shut(self) -> None:
        self._gate.clear()

    def open(self) -> None:
        self._gate.set()

    def now(self) -> datetime:
        if threading.current_thread().name == "checkpointd-writer" and not self._gate.is_set():
            self.holding.set()
            self._gate.wait(timeout=60)  # a hang guard: the test opens the gate
        return super().now()


async def test_cancelled_callers_leave_no_open_transaction(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Callers cancelled while their writes are queued or mid-commit leave the database
    unlocked, the log intact and no write half done."""
    clock = GatedClock()
    manager = await open_manager(clock=clock)
    clock.shut()
    callers = [asyncio.ensure_future(create(manager, f"cancelled-{n}")) for n in range(1000)]
    # Every caller has queued its write once the writer holds the first group (they all ran
    # before this coroutine resumes); then all of them are cancelled, and the writer goes on.
    assert await asyncio.to_thread(clock.holding.wait, 60)
    for caller in callers:
        caller.cancel()
    clock.open()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    after = await create(manager, "after")
    assert await manager.get_checkpoint(after.id) is not None
    # The writer is idle once the write queued last has returned: no transaction may be open.
    with closing(sqlite3.connect(db_path, timeout=0, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    seqs = event_seqs(db_path)
    assert seqs == list(range(1, len(seqs) + 1))
    # Every event that did commit is a whole create: its view row and its blob are there.
    page = await manager.get_checkpoints_by_session("s-1", page_size=1000)
    assert page.total == len(seqs) == blob_count(db_path)
    assert (await manager.verify_log()).ok


async def test_rebuild_while_writing(manager: CheckpointManager, db_path: Path) -> None:
    """A rebuild concurrent with creates leaves projections equal to a fresh rebuild."""
    results = await asyncio.gather(
        *(create(manager, f"cp-{n}", f"s-{n % 3}") for n in range(100)),
        manager.rebuild(),
        *(create(manager, f"cp-{n}", f"s-{n % 3}") for n in range(100, 200)),
    )
    assert 0 <= results[100] <= 200
    live = dump_projections(db_path)
    assert await manager.rebuild() == 200
    assert dump_projections(db_path) == live
    assert (await manager.get_checkpoints_by_session("s-0", page_size=1000)).total == 67


async def test_close_finishes_queued_writes(open_manager: OpenManager, db_path: Path) -> None:
    """Writes submitted before close() all commit before the store closes."""
    manager = await open_manager()
    # More writes than one group holds (max_group_size 512), so close() comes mid-stream.
    async with asyncio.timeout(10):
        *created, _ = await asyncio.gather(
            *(create(manager, f"cp-{n}") for n in range(1500)), manager.close()
        )
    assert event_seqs(db_path) == list(range(1, 1501))
    reopened = await open_manager()
    assert all([await reopened.get_checkpoint(cp.id) is not None for cp in created])


async def test_get_racing_a_delete_sees_before_or_after(manager: CheckpointManager) -> None:
    """A get concurrent with a delete returns the whole checkpoint or None, never an error."""
    created = await asyncio.gather(*(create(manager, f"cp-{n}") for n in range(300)))
    deleted = asyncio.Event()
    seen: list[Checkpoint | None] = []

    async def read(share: list[Checkpoint]) -> None:
        while not deleted.is_set():
            for cp in share:
                got = await manager.get_checkpoint(cp.id)
                assert got is None or got.snapshot == cp.snapshot
                seen.append(got)

    async def delete_all() -> None:
        try:
            for cp in created:
                assert await manager.delete_checkpoint(cp.id)
        finally:
            deleted.set()

    async with asyncio.TaskGroup() as readers_and_deleter:
        readers_and_deleter.create_task(delete_all())
        for k in range(8):
            readers_and_deleter.create_task(read(created[k::8]))
    # Both outcomes were observed, so the reads really did overlap the deletes.
    assert None in seen
    assert any(got is not None for got in seen)
