"""Tampering by someone who can write the database file, and what ``verify`` and ``validate`` see.

The attacker here drops the append-only triggers and edits the file with sqlite3 directly: they
rewrite an event and recompute every hash after it with the chain's own algorithm, cut the tail
off the log, forge a signed head, or rewrite a checkpoint's view row along with its snapshot.
Without a key the hash chain cannot tell a careful rewrite from the real log (the first test
states that limit); with an encryption key configured, the signed chain heads can.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import TEST_KEY, FakeClock, OpenManager, caught_up, views_file

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.events import store
from checkpointd.events.signing import SIGN_INTERVAL
from checkpointd.events.types import GENESIS_HASH
from checkpointd.snapshots import canonical_encode

OTHER_KEY = "ffeeddccbbaa99887766554433221100" * 2


# -- the attacker's tools ------------------------------------------------------------------------


def writable(conn: sqlite3.Connection) -> None:
    """Drop every append-only trigger, as anyone holding the file can."""
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {name}")


def rewrite_event(db_path: Path, seq: int, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit event ``seq``'s data, then recompute its hash and every later one: the chain holds."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        writable(conn)
        records = list(store.scan(conn))
        prev_hash = GENESIS_HASH if seq == 1 else records[seq - 2].hash
        for record in records[seq - 1 :]:
            data = record.data
            if record.seq == seq:
                payload = record.payload()
                edit(payload)
                data = canonical_encode(payload)
            forged = replace(record, data=data, prev_hash=prev_hash)
            forged = replace(forged, hash=forged.expected_hash())
            conn.execute(
                "UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (forged.data, forged.prev_hash, forged.hash, forged.seq),
            )
            prev_hash = forged.hash


def drop_events_after(db_path: Path, seq: int, *, whole: bool = False) -> None:
    """Cut the log's tail after ``seq``; ``whole``: also the signed heads that covered it and
    the blobs of the events cut, and the views file goes (the store's files as they were at
    ``seq``, near enough: views as they were then are what a rebuild from that log gives)."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        writable(conn)
        tables = ("events", "chain_heads", "blobs") if whole else ("events",)
        for table in tables:
            conn.execute(f"DELETE FROM {table} WHERE seq > ?", (seq,))
    if whole:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{views_file(db_path)}{suffix}").unlink(missing_ok=True)


def signed_seqs(db_path: Path) -> list[int]:
    with closing(sqlite3.connect(db_path)) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM chain_heads ORDER BY seq")]


def rename(payload: dict[str, Any]) -> None:
    payload["name"] = "forged"


async def log_of_four(manager: CheckpointManager) -> list[Checkpoint]:
    """Four creates, then close: the clock stands still, so heads are signed at 1 and at 4."""
    made = [
        await manager.create(name=f"cp-{n}", session_id="s-1", snapshot={"n": n}, branches=[])
        for n in range(4)
    ]
    await manager.close()
    return made


# -- the hash chain alone ------------------------------------------------------------------------


async def test_without_a_key_a_rewritten_log_passes(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Unkeyed, an event edited with every later hash recomputed passes verify: the chain
    proves only accidental damage and edits made without re-hashing (the documented limit)."""
    await log_of_four(await open_manager())
    assert signed_seqs(db_path) == []
    rewrite_event(db_path, 2, rename)

    result = await (await open_manager()).verify_log()
    assert (result.ok, result.events, result.signed_seq, result.unsigned_tail) == (
        True,
        4,
        None,
        None,
    )


# -- signed chain heads --------------------------------------------------------------------------


async def test_a_keyed_store_signs_the_first_group_each_interval_and_on_close(
    open_manager: OpenManager, db_path: Path, clock: FakeClock
) -> None:
    """The first group after opening is signed, then at most one per SIGN_INTERVAL, and the
    head once more on close; verify reports the newest signed head and the events after it."""
    manager = await open_manager(encryption_key=TEST_KEY)
    for n in range(3):
        await manager.create(name=f"cp-{n}", session_id="s-1", snapshot={}, branches=[])
    assert (await manager.verify_log()).signed_seq == 1
    assert (await manager.verify_log()).unsigned_tail == 2

    clock.advance(SIGN_INTERVAL)
    await manager.create(name="later", session_id="s-1", snapshot={}, branches=[])
    verified = await manager.verify_log()
    assert (verified.ok, verified.signed_seq, verified.unsigned_tail) == (True, 4, 0)

    await manager.create(name="last", session_id="s-1", snapshot={}, branches=[])
    await manager.close()
    assert signed_seqs(db_path) == [1, 4, 5]
    verified = await (await open_manager(encryption_key=TEST_KEY)).verify_log()
    assert (verified.ok, verified.events, verified.signed_seq, verified.unsigned_tail) == (
        True,
        5,
        5,
        0,
    )


async def test_with_a_key_a_rewritten_and_rehashed_log_is_caught(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Keyed, the same rewrite fails verify: the head signed at seq 4 no longer matches, and
    everything after the last head that held (seq 1) is reported unproven."""
    await log_of_four(await open_manager(encryption_key=TEST_KEY))
    assert signed_seqs(db_path) == [1, 4]
    rewrite_event(db_path, 2, rename)

    result = await (await open_manager(encryption_key=TEST_KEY)).verify_log()
    assert (result.ok, result.first_bad_seq, result.events, result.signed_seq) == (
        False,
        2,
        1,
        1,
    )
    assert result.problem == "event 4 is not the one signed: the log after seq 1 was rewritten"


async def test_with_a_key_a_dropped_tail_is_caught(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Keyed, cutting events 3 and 4 off fails verify at seq 3: seq 4 was signed."""
    await log_of_four(await open_manager(encryption_key=TEST_KEY))
    drop_events_after(db_path, 2)

    result = await (await open_manager(encryption_key=TEST_KEY)).verify_log()
    assert (result.ok, result.first_bad_seq, result.events) == (False, 3, 2)
    assert result.problem == "seq 4 was signed but the log ends at seq 2: events were removed"


async def test_writing_on_after_tampering_does_not_hide_it(
    open_manager: OpenManager, db_path: Path
) -> None:
    """A rewrite made while the store was stopped stays caught after the store signs new heads
    over it: every signed head is checked, not only the newest."""
    await log_of_four(await open_manager(encryption_key=TEST_KEY))
    rewrite_event(db_path, 3, rename)
    later = await open_manager(encryption_key=TEST_KEY)
    await later.create(name="after", session_id="s-1", snapshot={}, branches=[])
    await later.close()
    assert signed_seqs(db_path) == [1, 4, 5]

    result = await (await open_manager(encryption_key=TEST_KEY)).verify_log()
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert result.problem is not None
    assert "event 4 is not the one signed" in result.problem


async def test_a_forged_signed_head_is_caught(open_manager: OpenManager, db_path: Path) -> None:
    """A signed head whose MAC does not hold (here: its time was changed) fails verify."""
    await log_of_four(await open_manager(encryption_key=TEST_KEY))
    with closing(sqlite3.connect(db_path)) as conn, conn:
        writable(conn)
        conn.execute("UPDATE chain_heads SET at = '2020-01-01T00:00:00Z' WHERE seq = 4")

    result = await (await open_manager(encryption_key=TEST_KEY)).verify_log()
    assert (result.ok, result.first_bad_seq, result.signed_seq) == (False, 4, 1)
    assert result.problem == "the signed head of seq 4 is forged or edited"


async def test_heads_signed_before_a_key_rotation_are_still_checked(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Heads signed with a key now in encryption_old_keys are checked with it; without that
    key they prove nothing, and verify says so with a smaller signed_seq."""
    await log_of_four(await open_manager(encryption_key=TEST_KEY))
    rotated = await open_manager(encryption_key=OTHER_KEY, encryption_old_keys=[TEST_KEY])
    await rotated.create(name="after", session_id="s-1", snapshot={}, branches=[])
    await rotated.close()
    rewrite_event(db_path, 2, rename)

    both = await open_manager(encryption_key=OTHER_KEY, encryption_old_keys=[TEST_KEY])
    result = await both.verify_log()
    await both.close()
    assert (result.ok, result.first_bad_seq, result.signed_seq) == (False, 2, 1)
    newest_only = await (await open_manager(encryption_key=OTHER_KEY)).verify_log()
    assert (newest_only.ok, newest_only.first_bad_seq, newest_only.signed_seq) == (False, 1, None)


async def test_a_file_rolled_back_whole_passes(open_manager: OpenManager, db_path: Path) -> None:
    """Cutting the tail together with the signed heads that covered it passes verify: only a
    signed head kept outside the file (the one logged on close) reveals such a rollback."""
    await log_of_four(await open_manager(encryption_key=TEST_KEY))
    drop_events_after(db_path, 2, whole=True)

    result = await (await open_manager(encryption_key=TEST_KEY)).verify_log()
    assert (result.ok, result.events, result.signed_seq, result.unsigned_tail) == (True, 2, 1, 1)


# -- a view row rewritten with its snapshot ------------------------------------------------------


def swap_in(db_path: Path, victim: Checkpoint, source: Checkpoint) -> None:
    """Give ``victim`` the snapshot of ``source``: its blob (in the log), and its view row's
    checksum and sizes (in the views file, once the views have reached the log)."""
    created = "(SELECT seq FROM events WHERE stream = ? AND version = 1)"
    with closing(sqlite3.connect(db_path)) as conn, conn:
        (blob,) = conn.execute(
            f"SELECT data FROM blobs WHERE seq = {created}", (source.id,)
        ).fetchone()
        conn.execute(f"UPDATE blobs SET data = ? WHERE seq = {created}", (blob, victim.id))
    caught_up(db_path)
    with closing(sqlite3.connect(views_file(db_path))) as conn, conn:
        conn.execute(
            "UPDATE checkpoints SET checksum = ?, size = ?, stored_size = ? WHERE id = ?",
            (source.checksum, source.size, source.stored_size, victim.id),
        )


async def test_a_view_row_edited_with_its_snapshot_is_caught(
    open_manager: OpenManager, db_path: Path
) -> None:
    """A checkpoint's blob replaced and its row's checksum and size edited to match: validate
    reports it against the create event, and verify fails at that checkpoint's seq."""
    manager = await open_manager()
    victim = await manager.create(
        name="victim", session_id="s-1", snapshot={"state": {"v": 1}}, branches=[]
    )
    source = await manager.create(
        name="source", session_id="s-1", snapshot={"state": {"evil": "x" * 40}}, branches=[]
    )
    await manager.close()
    swap_in(db_path, victim, source)

    reopened = await open_manager()
    report = await reopened.validate_checkpoint(victim.id)
    assert (report.is_valid, report.checksum_valid, report.size_matches) == (False, False, False)
    assert report.errors[0].startswith(
        f"checkpoint {victim.id}: its view row records checksum {source.checksum}"
    )
    assert victim.checksum in report.errors[0]
    assert (await reopened.validate_checkpoint(source.id)).is_valid

    verified = await reopened.verify_log()
    assert (verified.ok, verified.first_bad_seq, verified.events) == (False, 1, 0)
    assert verified.problem is not None
    assert verified.problem.startswith(f"checkpoint {victim.id!r}: its view row records")

    # The hint works: a rebuild restores the row from the log, and the snapshot is then damaged.
    await reopened.rebuild()
    assert (await reopened.verify_log()).ok
    rebuilt = await reopened.validate_checkpoint(victim.id)
    assert (rebuilt.is_valid, rebuilt.checksum_valid) == (False, False)


async def test_a_create_event_and_view_row_agree_on_an_intact_store(
    manager: CheckpointManager,
) -> None:
    """Compressed, encrypted and plain checkpoints all validate against their create events."""
    made = [
        await manager.create(
            name=f"cp-{n}", session_id="s-1", snapshot=snapshot, branches=[], **options
        )
        for n, (snapshot, options) in enumerate(
            [
                ({"state": {"a": "y" * 500}}, {"compressed": True}),
                ({"state": {"b": 1}}, {"encrypted": True}),
                ({"state": {}}, {}),
            ]
        )
    ]
    for cp in made:
        assert (await manager.validate_checkpoint(cp.id)).is_valid
