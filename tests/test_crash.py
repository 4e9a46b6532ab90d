"""SIGKILL in the middle of concurrent writes loses no acknowledged write and breaks nothing.

A child process writes as fast as it can (64 concurrent creates, and now and then a delete) and
prints each write after it returned. The parent kills it with SIGKILL once it has seen enough
acknowledgements, then reopens the database and checks it, three rounds on the same file.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import dump_projections, event_seqs
from faults.oracle import views_as_left

from checkpointd import CheckpointManager

WORKERS = 64
ACKS_PER_ROUND = 300
ROUND_DEADLINE = 20.0

# Each worker creates checkpoints in a loop and deletes every third one it made. A line is
# printed only after the call returned: "C <id> <checksum> <round> <worker> <n>" for a create,
# "P <id>" before a delete is sent (it may or may not commit before the kill), "D <id>" after.
CHILD = """
import asyncio, sys
from checkpointd import CheckpointManager

DB, ROUND, WORKERS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def say(line):
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()

async def worker(manager, w):
    n = 0
    while True:
        cp = await manager.create(
            name=f"r{ROUND}-w{w}-{n}", session_id=f"crash-{w % 4}",
            snapshot={"round": ROUND, "worker": w, "n": n, "pad": "x" * (n % 200)},
            branches=["main"], metadata={"feature": f"f{w % 3}", "priority": "high"},
        )
        say(f"C {cp.id} {cp.checksum} {ROUND} {w} {n}")
        if n % 3 == 2:
            say(f"P {cp.id}")
            if await manager.delete_checkpoint(cp.id):
                say(f"D {cp.id}")
        n += 1

async def main():
    manager = CheckpointManager(database_path=DB)
    await manager.open()
    await asyncio.gather(*(worker(manager, w) for w in range(WORKERS)))

asyncio.run(main())
"""


@dataclass
class Acks:
    """What the children acknowledged, over all rounds."""

    created: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)
    maybe_deleted: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def read(self, line: str) -> None:
        kind, checkpoint_id, *rest = line.split()
        if kind == "C":
            checksum, round_, worker, n = rest
            keys = {"round": int(round_), "worker": int(worker), "n": int(n)}
            self.created[checkpoint_id] = (checksum, keys)
        elif kind == "P":
            self.maybe_deleted.add(checkpoint_id)
        elif kind == "D":
            self.deleted.add(checkpoint_id)

    @property
    def creates(self) -> int:
        return len(self.created)


def run_and_kill(db_path: Path, round_: int, acks: Acks, log: Path) -> None:
    """Start a writer child, read its acknowledgements until enough arrived, SIGKILL it."""
    wanted = acks.creates + ACKS_PER_ROUND
    args = [sys.executable, "-c", CHILD, str(db_path), str(round_), str(WORKERS)]
    with log.open("wb") as stderr:
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr)
    assert child.stdout is not None
    buffer = b""
    deadline = time.monotonic() + ROUND_DEADLINE
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while acks.creates < wanted:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"round {round_}: only {acks.creates} acks in time"
            if not selector.select(timeout=remaining):
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                child.kill()
                child.wait()
                raise AssertionError(f"child exited early:\n{log.read_text()}")
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                acks.read(line.decode())
    child.kill()
    child.wait()
    # Lines written before the kill are acknowledgements too: a complete line was printed
    # only after its call returned.
    *lines, _partial = (buffer + child.stdout.read()).split(b"\n")
    child.stdout.close()
    for line in lines:
        acks.read(line.decode())
    assert child.returncode == -9


async def check(db_path: Path, acks: Acks) -> None:
    """Every acknowledged write is there, the log verifies, and the views equal a rebuild: as
    the kill left them (behind the log by whole batches), and caught up once reopened."""
    views_as_left(db_path, len(event_seqs(db_path)))
    async with CheckpointManager(database_path=str(db_path)) as manager:
        await manager.wait_for_views(manager.log_head)
        on_disk = dump_projections(db_path)
        for checkpoint_id, (checksum, keys) in acks.created.items():
            got = await manager.get_checkpoint(checkpoint_id)
            if checkpoint_id in acks.maybe_deleted and got is None:
                continue
            assert got is not None, f"acknowledged checkpoint {checkpoint_id} is lost"
            assert got.checksum == checksum
            assert {k: got.snapshot[k] for k in keys} == keys
        for checkpoint_id in acks.deleted:
            assert await manager.get_checkpoint(checkpoint_id) is None
        seqs = event_seqs(db_path)
        assert seqs == list(range(1, len(seqs) + 1))
        verified = await manager.verify_log()
        assert (verified.ok, verified.events) == (True, len(seqs))
        live = dump_projections(db_path)
        assert live == on_disk
        assert await manager.rebuild() == len(seqs)
        assert dump_projections(db_path) == live


@pytest.mark.parametrize("rounds", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, rounds: int) -> None:
    """Killing the writer process mid-flight keeps every acknowledged write and a valid log."""
    db_path = tmp_path / "cp.db"
    acks = Acks()
    for round_ in range(1, rounds + 1):
        run_and_kill(db_path, round_, acks, tmp_path / f"child-{round_}.log")
        asyncio.run(check(db_path, acks))
    assert acks.creates >= rounds * ACKS_PER_ROUND
    assert acks.deleted
