"""Where snapshot values may be on disk: only in blob rows, and never once delete removed them.

Every check reads the raw bytes of the files (the database, its ``-wal`` and ``-shm``) for a
distinctive plaintext marker placed in a snapshot, a session's state or a restore's conflicts.
Compression is off wherever a marker must be visible while it is legitimately stored, so that
its absence later means it is gone, not merely compressed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import (
    TEST_KEY,
    FakeClock,
    OpenManager,
    dump_projections,
    serving,
    session_state,
    views_file,
)
from natsserver import NatsServer

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.errors import InvalidRequestError, NotFoundError
from checkpointd.storage.schema import MIGRATIONS
from checkpointd.storage.writer import WAL_TRUNCATE_DELAY

from .oracle import check_store

Store = Any  # CheckpointManager or CheckpointClient (the ``store`` fixture)

# Markers: one per place a value can come from. Plain ASCII, so a plaintext copy is findable.
IN_CHECKPOINT = b"marker-checkpoint-7f3a"
IN_CURRENT = b"marker-current-51c9"
IN_WARNING = b"marker-warning-2e8d"

RESTORED = {"sessions": ["s-1"], "state": {"note": IN_CHECKPOINT.decode(), "step": 2}}
CURRENT = {"sessions": ["s-1"], "state": {"note": IN_CURRENT.decode(), "kept": True}}
TRUNCATE_DEADLINE = 20 * WAL_TRUNCATE_DELAY + 10  # seconds; generous on a shared machine


def on_disk(directory: Path) -> bytes:
    """The raw bytes of every file in the store's directory (database, WAL, shared memory)."""
    return b"".join(path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file())


def wal_size(db_path: Path) -> int:
    wal = Path(f"{db_path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def wal_truncated(db_path: Path) -> None:
    """Wait, with a deadline, until the WAL has been truncated (or is gone)."""
    deadline = time.monotonic() + TRUNCATE_DEADLINE
    while wal_size(db_path) > 0:
        assert time.monotonic() < deadline, f"WAL still {wal_size(db_path)} bytes"
        await asyncio.sleep(0.05)


async def plain_store(open_manager: OpenManager, **settings: Any) -> CheckpointManager:
    """A store with a key but neither compression nor default encryption: values stay visible."""
    return await open_manager(encryption_key=TEST_KEY, enable_compression=False, **settings)


async def create(store: Store, name: str, snapshot: dict[str, Any], **fields: Any) -> Any:
    fields.setdefault("session_id", "s-1")
    return await store.create(name=name, snapshot=snapshot, branches=["main"], **fields)


async def restore_with_conflicts(manager: CheckpointManager, **options: Any) -> Any:
    """RESTORED restored by merge into s-1, which is at CURRENT: ``/state/note`` conflicts."""
    source = await create(manager, "restored", RESTORED, session_id="elsewhere")
    current = await create(manager, "current", CURRENT)
    result = await manager.restore_checkpoint(
        source.id, target_session_id="s-1", merge_strategy="merge", **options
    )
    assert [c["path"] for c in result.conflicts] == ["/state/note"]
    return source, current, result


# -- 6b: the store's own actor -----------------------------------------------------------------


@pytest.mark.parametrize("claimed", ["checkpointd", "Checkpointd", " checkpointd "])
async def test_a_create_claiming_to_be_the_store_is_refused(store: Store, claimed: str) -> None:
    """createdBy "checkpointd", in any case or spacing, is an InvalidRequestError; nothing is
    written."""
    with pytest.raises(InvalidRequestError, match=r"createdBy: 'checkpointd' is reserved"):
        await create(store, "forged", {"state": {}}, created_by=claimed)
    assert len((await store.history(limit=10)).events) == 0


async def test_a_restore_backup_is_created_by_the_store(store: Store) -> None:
    """The backup a restore makes says createdBy "checkpointd", which no client can claim."""
    source = await create(store, "source", {"state": {"v": 1}})
    await create(store, "current", {"state": {"v": 2}})
    result = await store.restore_checkpoint(source.id, preserve_current_state=True)
    backup = await store.get_checkpoint(result.backup_checkpoint_id, include_snapshot=False)
    assert backup.created_by == "checkpointd"


# -- 7: with encryption on, everything is encrypted --------------------------------------------


async def test_encrypted_false_is_refused_when_encryption_is_on(
    open_manager: OpenManager, db_path: Path
) -> None:
    """With enable_encryption, a create or batch asking encrypted=False is an InvalidRequestError
    naming the field, and nothing is written."""
    manager = await open_manager(enable_encryption=True, encryption_key=TEST_KEY)
    with pytest.raises(InvalidRequestError, match=r"encrypted: this store encrypts every"):
        await create(manager, "plain", {"state": {}}, encrypted=False)
    batch = [{"name": "a", "sessionId": "s-1", "snapshot": {}, "branches": [], "encrypted": False}]
    with pytest.raises(InvalidRequestError, match=r"encrypted: this store encrypts every"):
        await manager.create_batch(batch)
    assert len((await manager.history(limit=10)).events) == 0
    assert (await create(manager, "sealed", {"state": {}}, encrypted=True)).encrypted


async def test_encrypted_false_is_a_400_over_nats(
    open_manager: OpenManager, nats_server: NatsServer
) -> None:
    """Over NATS the refusal is a 400 "invalid" that names the field (the client raises it)."""
    manager = await open_manager(enable_encryption=True, encryption_key=TEST_KEY)
    async with (
        serving(manager, nats_server.url) as prefix,
        CheckpointClient(nats_server.url, prefix=prefix, request_timeout=10) as client,
    ):
        with pytest.raises(InvalidRequestError, match=r"encrypted: this store encrypts every"):
            await create(client, "plain", {"state": {}}, encrypted=False)


async def test_with_encryption_on_no_value_reaches_any_file_in_plaintext(
    open_manager: OpenManager, db_path: Path
) -> None:
    """With enable_encryption (compression off), snapshots, restored states, backups, conflicts,
    warnings and idempotent replies never put a value in any file in plaintext."""
    manager = await open_manager(
        enable_encryption=True, encryption_key=TEST_KEY, enable_compression=False
    )
    batch = [{"name": "b", "sessionId": "b", "snapshot": RESTORED, "branches": []}]
    await manager.create_batch(batch)
    warned = {"state": {"completed": IN_WARNING.decode(), "note": IN_CHECKPOINT.decode()}}
    source = await create(manager, "warned", warned, session_id="elsewhere")
    await create(manager, "current", CURRENT)
    result = await manager.restore_checkpoint(
        source.id,
        target_session_id="s-1",
        merge_strategy="keep-original",
        preserve_current_state=True,
        validation={"validate_schema": True},
        rollback_on_error=False,
        idempotency_key="k-1",
    )
    assert {c["path"] for c in result.conflicts} == {"/state/note"}
    assert any(IN_WARNING.decode() in warning for warning in result.warnings)
    await manager.close()
    disk = on_disk(db_path.parent)
    for marker in (IN_CHECKPOINT, IN_CURRENT, IN_WARNING):
        assert marker not in disk, marker
    await check_store(db_path, encryption_key=TEST_KEY)


# -- 8: values live in blob rows only, and delete removes them ---------------------------------


async def test_the_log_and_the_stored_reply_keep_conflict_paths_not_values(
    open_manager: OpenManager, db_path: Path
) -> None:
    """A restore's event holds its conflicts' paths and resolutions only, and its keyed reply
    neither values nor warnings; the reply and a retry of it still carry them in full."""
    manager = await plain_store(open_manager)
    source, _, first = await restore_with_conflicts(manager, idempotency_key="k-1")
    (event,) = [
        e for e in (await manager.history(limit=100)).events if e.type == "checkpoint.restored"
    ]
    assert event.data["conflicts"] == [
        {"path": c["path"], "resolution": c["resolution"]} for c in first.conflicts
    ]
    with closing(sqlite3.connect(db_path)) as conn:
        (reply,) = conn.execute("SELECT reply FROM idempotency WHERE key = 'k-1'").fetchone()
    stored = msgpack.unpackb(reply, raw=False)
    assert "warnings" not in stored
    assert all(set(c) == {"path", "resolution"} for c in stored["conflicts"])
    again = await manager.restore_checkpoint(
        source.id, target_session_id="s-1", merge_strategy="merge", idempotency_key="k-1"
    )
    assert again == first
    assert {"current": IN_CURRENT.decode(), "checkpoint": IN_CHECKPOINT.decode()}.items() <= (
        first.conflicts[0].items()
    )


async def test_a_replayed_restore_gets_its_warnings_back(store: Store) -> None:
    """A keyed restore whose schema warnings quote the snapshot replays them exactly."""
    warned = {"state": {"completed": IN_WARNING.decode()}}
    source = await create(store, "warned", warned)
    options: dict[str, Any] = {"validation": {"validate_schema": True}, "rollback_on_error": False}
    first = await store.restore_checkpoint(source.id, idempotency_key="k-w", **options)
    again = await store.restore_checkpoint(source.id, idempotency_key="k-w", **options)
    assert any(IN_WARNING.decode() in warning for warning in first.warnings)
    assert again == first


async def test_a_replayed_restore_whose_state_was_deleted_is_not_found(store: Store) -> None:
    """Once the checkpoint a keyed restore came from is deleted, a retry is NotFoundError, not
    the deleted values."""
    source = await create(store, "source", RESTORED)
    first = await store.restore_checkpoint(source.id, idempotency_key="k-d")
    assert await store.delete_checkpoint(source.id)
    with pytest.raises(NotFoundError, match=f"restored state of event '{first.event_seq}'"):
        await store.restore_checkpoint(source.id, idempotency_key="k-d")


async def test_a_deleted_checkpoints_state_does_not_come_back_in_a_dry_run(store: Store) -> None:
    """A session left at a state restored from a checkpoint falls back to its newest remaining
    checkpoint when that checkpoint is deleted: a keep-original dry run no longer shows it."""
    await create(store, "older", {"state": {"mine": 1}})
    source = await create(store, "source", RESTORED, session_id="elsewhere")
    await store.restore_checkpoint(source.id, target_session_id="s-1", merge_strategy="merge")
    assert (await session_state(store, "s-1"))["state"]["note"] == IN_CHECKPOINT.decode()
    assert await store.delete_checkpoint(source.id)
    assert await session_state(store, "s-1") == {"state": {"mine": 1}}


async def test_deleting_the_checkpoint_a_state_was_merged_with_drops_that_state(
    store: Store,
) -> None:
    """A merged state holds the session's earlier checkpoint's values too: deleting that one
    drops the state, and the session falls back (here to no state)."""
    current = await create(store, "current", CURRENT)
    source = await create(store, "source", RESTORED, session_id="elsewhere")
    merged = await store.restore_checkpoint(
        source.id, target_session_id="s-1", merge_strategy="keep-original"
    )
    assert merged.state["state"]["kept"] is True
    assert await store.delete_checkpoint(current.id)
    assert await session_state(store, "s-1") == {}
    # The checkpoint it was restored from is untouched.
    assert (await store.get_checkpoint(source.id)).snapshot == RESTORED


async def test_a_state_given_by_the_caller_depends_only_on_the_checkpoint(store: Store) -> None:
    """With current_state given, deleting the session's own checkpoint keeps the restored state
    (none of that checkpoint's values are in it)."""
    mine = await create(store, "mine", {"state": {"mine": 1}})
    source = await create(store, "source", {"state": {"v": 1}}, session_id="elsewhere")
    await store.restore_checkpoint(
        source.id, target_session_id="s-1", current_state={"state": {"given": 1}}
    )
    assert await store.delete_checkpoint(mine.id)
    assert await session_state(store, "s-1") == {"state": {"v": 1}}


async def test_a_delete_removes_every_value_from_the_files(
    open_manager: OpenManager, db_path: Path
) -> None:
    """After deletes, and the WAL truncate that follows them within a bounded delay, no value of
    the deleted checkpoints (snapshot, restored state, conflicts, keyed reply) is left in the
    database file or its WAL, while the survivors' values still are; the oracle passes."""
    manager = await plain_store(open_manager)
    source, current, _ = await restore_with_conflicts(manager, idempotency_key="k-1")
    assert IN_CHECKPOINT in on_disk(db_path.parent)
    assert await manager.delete_checkpoint(source.id)
    await wal_truncated(db_path)
    disk = on_disk(db_path.parent)
    assert IN_CHECKPOINT not in disk
    assert IN_CURRENT in disk  # the current checkpoint lives on
    assert await manager.delete_checkpoint(current.id)
    await wal_truncated(db_path)
    assert IN_CURRENT not in on_disk(db_path.parent)
    events = [e.type for e in (await manager.history(limit=100)).events]
    assert events.count("checkpoint.deleted") == 2  # the audit trail stays
    await manager.close()
    await check_store(db_path, deleted=[source.id, current.id], encryption_key=TEST_KEY)


async def test_expiry_removes_restored_states_and_truncates_the_wal(
    open_manager: OpenManager, db_path: Path, clock: FakeClock
) -> None:
    """Expiring the checkpoint a state was restored from removes the state's values from the
    files too, after the same bounded WAL truncate."""
    manager = await plain_store(open_manager, default_retention_days=1)
    await restore_with_conflicts(manager)
    clock.advance(timedelta(days=2))
    assert await manager.delete_expired_checkpoints() == 2
    await wal_truncated(db_path)
    disk = on_disk(db_path.parent)
    assert IN_CHECKPOINT not in disk
    assert IN_CURRENT not in disk
    await manager.close()
    await check_store(db_path, encryption_key=TEST_KEY)


async def test_a_store_from_before_restore_sources_is_reprojected_on_open(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Opening a store whose schema lacks the restore details and sources adds them and replays
    the log into every view, which then equals what the live store had; the log's own index of
    the restored states' sources equals the live store's too, so deleting the restored
    checkpoint then removes the state restored from it before the upgrade."""
    manager = await plain_store(open_manager)
    source, _, _ = await restore_with_conflicts(manager)
    await manager.close()
    live = dump_projections(db_path)
    live_sources = log_restore_sources(db_path)
    assert live_sources  # the restore's sources are indexed: the comparison below means something
    write_as_before_restore_sources(db_path)
    reopened = await plain_store(open_manager)
    await reopened.close()
    assert dump_projections(db_path) == live
    assert log_restore_sources(db_path) == live_sources
    assert restored_states(db_path)
    again = await plain_store(open_manager)
    await again.delete_checkpoint(source.id)
    await again.close()
    assert restored_states(db_path) == []


def restored_states(db_path: Path) -> list[int]:
    """The seqs of the restored states whose blob rows the log still holds."""
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT b.seq FROM blobs AS b JOIN events AS e ON e.seq = b.seq"
            " WHERE e.type = 'checkpoint.restored' ORDER BY b.seq"
        )
        return [seq for (seq,) in rows]


def log_restore_sources(db_path: Path) -> list[tuple[Any, ...]]:
    """The log file's index of the checkpoints each restored state holds values of."""
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT * FROM restore_sources ORDER BY 1, 2").fetchall()


def write_as_before_restore_sources(db_path: Path) -> None:
    """Replace the (closed) store at ``db_path`` by the file a version from before restore
    details and sources would have written for the same log: the first two migrations only
    (the views in the log file, emptied as the next migration empties them; no details column,
    no restore_sources, no signed chain heads), the same events, blobs, keys and meta, and no
    views file."""
    old = db_path.with_name(db_path.name + ".old")
    with closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        for version, description, sql in MIGRATIONS[:2]:
            conn.executescript(sql)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, '2024-01-01T00:00:00Z')",
                (version, description),
            )
        conn.execute("ATTACH DATABASE ? AS live", (str(db_path),))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO events SELECT * FROM live.events")
        conn.execute("INSERT INTO blobs (seq, data) SELECT seq, data FROM live.blobs")
        conn.execute("INSERT INTO idempotency SELECT * FROM live.idempotency")
        conn.execute("INSERT INTO meta SELECT * FROM live.meta")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE live")
    for path in (db_path, Path(views_file(db_path))):
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    old.rename(db_path)
