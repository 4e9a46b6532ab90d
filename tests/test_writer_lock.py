"""One writer per database file: a second manager (here or in another process) is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checkpointd import CheckpointManager
from checkpointd.errors import DatabaseInUseError

SNAPSHOT = {"state": {"progress": 1}}


async def test_a_second_manager_on_the_same_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "one.db")
    async with CheckpointManager(database_path=path) as first:
        await first.create(name="a", session_id="s", snapshot=SNAPSHOT, branches=["m"])
        second = CheckpointManager(database_path=path)
        with pytest.raises(DatabaseInUseError, match=r"in use by another writer \(pid \d+\)"):
            await second.open()
        # The refused manager left nothing behind: the first one still writes.
        await first.create(name="b", session_id="s", snapshot=SNAPSHOT, branches=["m"])
    async with CheckpointManager(database_path=path) as again:
        assert (await again.get_checkpoint_stats()).total_checkpoints == 2
        assert (await again.verify_log()).ok


async def test_another_process_holding_the_file_is_named_by_pid(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    holder = textwrap.dedent(
        f"""
        import asyncio, sys
        from checkpointd import CheckpointManager
        async def main():
            async with CheckpointManager(database_path={path!r}):
                print("open", flush=True)
                sys.stdin.readline()
        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        holder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"open\n"
        with pytest.raises(DatabaseInUseError, match=rf"pid {process.pid}\b"):
            await CheckpointManager(database_path=path).open()
    finally:
        process.stdin.close()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    async with CheckpointManager(database_path=path) as manager:  # released with the process
        assert await manager.health() == 0
