"""Opening a store: unusual paths, missing directories, the modes of the files it creates."""

from __future__ import annotations

import asyncio
import gc
import os
import stat
import threading
import warnings
from pathlib import Path

import pytest

from checkpointd import CheckpointManager
from checkpointd.errors import ConfigError


async def test_a_path_with_uri_characters_works_end_to_end(tmp_path: Path) -> None:
    """A database path holding '?', '#', '%' and spaces is created, written and verified."""
    path = tmp_path / "odd dir #1" / "cp?x=1%20.db"
    path.parent.mkdir()
    async with CheckpointManager(database_path=str(path)) as manager:
        cp = await manager.create(name="a", session_id="s", snapshot={"x": 1}, branches=[])
        result = await manager.verify_log()
    assert (result.ok, result.events) == (True, 1)
    assert path.exists()
    async with CheckpointManager(database_path=str(path)) as manager:
        found = await manager.get_checkpoint(cp.id)
    assert found is not None
    assert found.snapshot == {"x": 1}


async def test_a_missing_directory_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    """Opening a database in a directory that does not exist says which setting is wrong."""
    path = tmp_path / "nowhere" / "cp.db"
    manager = CheckpointManager(database_path=str(path))
    with pytest.raises(ConfigError, match=r"database_path.*nowhere.*cannot open"):
        await manager.open()
    assert not path.parent.exists()


async def test_a_new_database_and_its_wal_and_shm_are_private_under_umask_022(
    tmp_path: Path,
) -> None:
    """Created under umask 022 (which leaves files 0644), the database, the views file (names
    and metadata are in it) and their -wal and -shm are 0600."""
    path = tmp_path / "cp.db"
    previous = os.umask(0o022)
    try:
        async with CheckpointManager(database_path=str(path)) as manager:
            await manager.create(name="a", session_id="s", snapshot={"x": 1}, branches=[])
            await manager.wait_for_views(manager.log_head)
            files = [
                Path(f"{base}{suffix}")
                for base in (path, f"{path}.views")
                for suffix in ("", "-wal", "-shm")
            ]
            modes = [stat.S_IMODE(file.stat().st_mode) for file in files]
    finally:
        os.umask(previous)
    assert modes == [0o600] * 6


async def test_an_unclosed_manager_warns_when_collected(tmp_path: Path) -> None:
    """Dropping an open manager without closing it warns (ResourceWarning naming the file)
    and its threads stop rather than linger."""
    before = set(threading.enumerate())
    manager = CheckpointManager(database_path=str(tmp_path / "cp.db"))
    await manager.open()
    started = set(threading.enumerate()) - before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del manager
        gc.collect()
        for thread in started:  # joined while the loop still runs, so their last callbacks land
            await asyncio.to_thread(thread.join, 5)
        # Its connections warn too once their threads let go of them (aiosqlite's readers, and
        # from Python 3.13 sqlite3's writer): expected here, not a leak.
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert any("unclosed CheckpointManager" in m and "cp.db" in m for m in messages)
    assert started
    assert not [t.name for t in started if t.is_alive()]
