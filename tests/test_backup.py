"""Online backup of the log while writers write, and restoring a backup in its place."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from conftest import TEST_KEY, OpenManager

from checkpointd import CheckpointManager
from checkpointd.config import Config
from checkpointd.errors import ConfigError, DatabaseInUseError, IntegrityError, InvalidRequestError
from checkpointd.ops.backup import backup, restore_backup

WRITERS = 64


def created(path: Path | str) -> dict[str, int]:
    """Checkpoint id to the seq of its create event, read from the log file."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT stream, seq FROM events WHERE type = 'checkpoint.created'")
        return dict(rows.fetchall())


def hashes(path: Path | str) -> dict[int, bytes]:
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT seq, hash FROM events").fetchall())


def leftovers(directory: Path) -> list[str]:
    """Files a restore left beside the log: a replaced log, a half-made copy."""
    return [name for name in os.listdir(directory) if ".replaced-" in name or ".restoring" in name]


async def make(manager: CheckpointManager, session: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        cp = await manager.create(
            name=f"{session}-{i}", session_id=session, snapshot={"i": i}, branches=[]
        )
        ids.append(cp.id)
    return ids


async def test_a_backup_under_64_writers_holds_exactly_the_writes_up_to_its_seq(
    open_manager: OpenManager, db_path: Path, tmp_path: Path
) -> None:
    """A backup taken while 64 writers write holds every write acknowledged before it began and
    exactly the writes up to the seq it reports, verifies, and a store opened on it serves them."""
    manager = await open_manager(encryption_key=TEST_KEY)
    acknowledged: set[str] = set()
    backing_up = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not backing_up.is_set() or i < 20:
            cp = await manager.create(
                name=f"w{n}-{i}", session_id=f"s{n}", snapshot={"i": i}, branches=[]
            )
            acknowledged.add(cp.id)
            if len(acknowledged) >= 300:  # some writes acknowledged, many more in flight
                enough.set()
            i += 1

    enough = asyncio.Event()
    writers = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
    reached = asyncio.ensure_future(enough.wait())
    done, _ = await asyncio.wait(
        [reached, *writers], timeout=60, return_when=asyncio.FIRST_COMPLETED
    )
    assert reached in done, [w.exception() for w in writers if w.done()] or "no progress in 60 s"
    before = set(acknowledged)
    backing_up.set()
    made = await asyncio.to_thread(backup, manager.config, str(tmp_path / "backup.db"))
    await asyncio.gather(*writers)

    live, copied = created(db_path), created(made.path)
    assert made.verified.ok
    assert before <= set(copied)
    assert set(copied) == {cid for cid, seq in live.items() if seq <= made.seq}
    assert any(seq > made.seq for seq in live.values()), "writes went on after the backup"
    live_hashes = hashes(db_path)
    assert hashes(made.path) == {seq: h for seq, h in live_hashes.items() if seq <= made.seq}

    restored = Config(database_path=str(tmp_path / "restored.db"), encryption_key=TEST_KEY)
    assert restore_backup(restored, made.path).seq == made.seq
    async with CheckpointManager(restored) as store:
        for checkpoint_id in copied:
            got = await store.get_checkpoint(checkpoint_id)
            assert got is not None
            assert got.snapshot is not None
        assert (await store.get_checkpoint_stats()).total_checkpoints == len(copied)
        assert (await store.verify_log()).ok


async def test_a_store_on_a_restored_older_backup_answers_from_the_backup_alone(
    open_manager: OpenManager, db_path: Path, tmp_path: Path
) -> None:
    """After restoring a backup over a log that went on, the store answers from the backup (no
    view of the newer log survives), its next write follows the backup's seq, and the replaced
    log is kept."""
    manager = await open_manager()
    kept = await make(manager, "s", 3)
    made = backup(manager.config, str(tmp_path))
    later = await make(manager, "s", 2)
    await manager.close()

    restored = restore_backup(manager.config, made.path)

    assert restored.replaced is not None
    assert set(created(restored.replaced)) == set(kept + later)
    async with CheckpointManager(database_path=str(db_path)) as store:
        assert (await store.get_checkpoint_stats()).total_checkpoints == 3
        assert await store.get_checkpoint(later[0]) is None
        assert await store.get_checkpoint(kept[0]) is not None
        page = await store.get_checkpoints_by_session("s")
        assert {cp.id for cp in page.items} == set(kept)
        again = await store.create(name="after", session_id="s", snapshot={}, branches=[])
        assert created(db_path)[again.id] == made.seq + 1


async def test_restore_is_refused_while_a_writer_holds_the_log(
    open_manager: OpenManager, db_path: Path, tmp_path: Path
) -> None:
    """Restoring under a running writer fails and changes nothing."""
    manager = await open_manager()
    await make(manager, "s", 2)
    made = backup(manager.config, str(tmp_path / "b.db"))
    await make(manager, "s", 1)

    with pytest.raises(DatabaseInUseError, match="in use"):
        restore_backup(manager.config, made.path)
    assert len(created(db_path)) == 3
    assert leftovers(tmp_path) == []


async def test_a_damaged_backup_is_not_restored(
    open_manager: OpenManager, db_path: Path, tmp_path: Path
) -> None:
    """A backup whose event was edited fails its check; the log stays as it was."""
    manager = await open_manager()
    ids = await make(manager, "s", 3)
    made = backup(manager.config, str(tmp_path / "b.db"))
    await manager.close()
    with closing(sqlite3.connect(made.path)) as conn, conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET session_id = 'forged' WHERE seq = 2")

    with pytest.raises(IntegrityError, match="seq 2"):
        restore_backup(manager.config, made.path)
    assert set(created(db_path)) == set(ids)
    assert leftovers(tmp_path) == []


async def test_a_backup_into_a_directory_gets_a_file_of_its_own(
    open_manager: OpenManager, tmp_path: Path
) -> None:
    """Two backups into one directory are two files, each a whole log file (no -wal)."""
    manager = await open_manager()
    await make(manager, "s", 1)
    target = tmp_path / "backups"
    target.mkdir()
    first = backup(manager.config, str(target))
    await make(manager, "s", 1)
    second = backup(manager.config, str(target))

    assert first.path != second.path
    assert (first.seq, second.seq) == (1, 2)
    assert sorted(os.listdir(target)) == sorted([Path(first.path).name, Path(second.path).name])
    assert oct(os.stat(first.path).st_mode & 0o777) == "0o600"


def test_backup_refuses_what_is_not_a_log(tmp_path: Path) -> None:
    """A missing file and an SQLite file without the event log are named, not copied."""
    missing = Config(database_path=str(tmp_path / "none.db"))
    with pytest.raises(ConfigError, match="no such file"):
        backup(missing, str(tmp_path / "b.db"))
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(InvalidRequestError, match="not a checkpointd database"):
        backup(Config(database_path=str(other)), str(tmp_path / "b.db"))
    assert not (tmp_path / "b.db").exists()
