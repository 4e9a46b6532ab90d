"""Simulated power loss: the database file and a torn WAL, taken mid-load, open as a prefix.

What a power cut leaves is what the kernel had written at that instant, minus whatever of it
never reached the platter. We model it in two steps:

1. **The instant.** A child process writes through ``CheckpointManager`` (durability FULL, the
   default; 16 concurrent writers, creates of 1-128 KB snapshots, some deletes). At random
   acknowledgement counts the test stops it with SIGSTOP and waits (``waitpid(WUNTRACED)``,
   an event) until every thread of it is stopped: no ``write()`` is half done, no checkpoint
   advances. The database file and its ``-wal`` are copied then, so together they are one
   instant's file state, the one a power cut at that instant would find in the page cache.
   (Copying while the writer runs would not be: a checkpoint between the two copies, or the
   WAL restarting, pairs a database file with a WAL from another moment, a state no power
   loss produces. A read transaction held from outside does not prevent that either: the
   checkpointer still copies frames up to the reader's mark into the database file.) The
   ``-shm`` is not copied: shared memory does not survive a power loss. It is only read, for
   the WAL-index header and checkpoint info described below. Then SIGCONT, and the load goes on.

2. **The torn tail.** Writes the disk never got: the WAL copy is cut at a random byte. Not any
   byte: SQLite fsyncs the WAL before it copies ("backfills") frames into the database file, so
   a frame whose content may already be in the database file was durable first. The shm's
   ``nBackfillAttempted`` says how far a checkpoint of this WAL generation got; cuts fall at or
   after the end of that frame (and the WAL header, if any frame was backfilled). Each
   instant is cut several times:

   - at random bytes anywhere past that mark: more than a power loss under FULL can lose (it
     would lose commits FULL had fsynced; it models a disk that acknowledged a flush it had not
     done, or ``durability = "normal"``). The store must still open, pass the oracle, and hold
     a prefix of the real log;
   - at a random byte past the last commit frame (the header's ``mxFrame``): all that FULL can
     lose, since every commit was fsynced before it was acknowledged. Here, in addition, every
     create and delete acknowledged before the SIGSTOP must be there (resp. gone).

Every cut copy gets a fresh ``CheckpointManager`` (inside ``check_store``): it opens, recovers
the WAL as SQLite does, passes the oracle, and its ``(seq, hash)`` list is a prefix of the real
log once the load has finished. Cut points are seeded (``FAULTS_SEED``, printed, in figures).
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon.serving import DEADLINE

from checkpointd import CheckpointManager

from .oracle import check_store, event_hashes

KEY = "fedcba9876543210" * 4  # 64 hex digits: a raw AES-256 key
WAL_HEADER = 32
FRAME_HEADER = 24

# Each writer creates, and deletes every fourth checkpoint it made. A line is printed only
# after the call returned: "C <id> <checksum>" (created), "P <id>" (a delete is about to be
# sent), "D <id>" (deleted), and "DONE" once the manager has closed.
CHILD = """
import asyncio, base64, random, sys
from checkpointd import CheckpointManager

DB, KEY, SEED, WORKERS, PER_WORKER = sys.argv[1:6]

def say(line):
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()

async def worker(manager, w):
    rng = random.Random(f"{SEED}-{w}")
    for n in range(int(PER_WORKER)):
        size = rng.randint(1024, 128 * 1024)
        if rng.random() < 0.5:
            text = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
        else:
            text = (f"worker {w} step {n}; " * (size // 16 + 1))[:size]
        cp = await manager.create(
            name=f"w{w}-{n}", session_id=f"power-{w % 4}",
            snapshot={"sessions": [f"power-{w % 4}"], "state": {"w": w, "n": n, "text": text}},
            branches=["main"], metadata={"feature": f"f{w % 3}", "tags": ["power"]},
            encrypted=rng.random() < 0.5,
        )
        say(f"C {cp.id} {cp.checksum}")
        if n % 4 == 3:
            say(f"P {cp.id}")
            if await manager.delete_checkpoint(cp.id):
                say(f"D {cp.id}")

async def main():
    # A key without enable_encryption: each create chooses (enable_encryption refuses plaintext).
    async with CheckpointManager(database_path=DB, encryption_key=KEY) as manager:
        await asyncio.gather(*(worker(manager, w) for w in range(int(WORKERS))))
    say("DONE")

asyncio.run(main())
"""


@dataclass
class Acks:
    """What the child acknowledged so far."""

    created: dict[str, str] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)  # a delete sent, not (yet) acknowledged
    deleted: set[str] = field(default_factory=set)
    done: bool = False
    buffer: bytes = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        for line in lines:
            kind, *rest = line.decode().split()
            if kind == "C":
                self.created[rest[0]] = rest[1]
            elif kind == "P":
                self.deleting.add(rest[0])
            elif kind == "D":
                self.deleting.discard(rest[0])
                self.deleted.add(rest[0])
            elif kind == "DONE":
                self.done = True

    def snapshot(self) -> tuple[dict[str, str], set[str]]:
        """The creates that must be there (a delete in flight may or may not have committed)
        and the deletes that must have happened."""
        unsure = self.deleting | self.deleted
        live = {i: c for i, c in self.created.items() if i not in unsure}
        return live, set(self.deleted)


@dataclass(frozen=True)
class Instant:
    """The files as one SIGSTOP found them, and what had been acknowledged by then."""

    number: int
    db: bytes
    wal: bytes
    shm: bytes
    live: dict[str, str]
    deleted: set[str]


@dataclass(frozen=True)
class Marks:
    """Where a cut may fall in an instant's WAL: past ``durable``; past ``committed`` loses
    nothing acknowledged."""

    durable: int
    committed: int
    frames: int


def marks(instant: Instant) -> Marks:
    """From the WAL header (page size) and the shm: the WAL-index header (``mxFrame``, the
    last commit frame; its salt, which must be this WAL's) and ``nBackfillAttempted``.

    The index header is kept twice; SQLite writes the second copy first, so a process stopped
    between the two has the newer one there: that is the one read.
    """
    wal, shm = instant.wal, instant.shm
    if len(wal) < WAL_HEADER:
        return Marks(0, 0, 0)
    page_size = struct.unpack(">I", wal[8:12])[0]
    frame = FRAME_HEADER + page_size
    frames = (len(wal) - WAL_HEADER) // frame
    # WalIndexHdr copy 2 at 48 (native byte order): mxFrame at +16, aSalt (the WAL header's
    # bytes 16-24) at +32. WalCkptInfo after both copies: nBackfill at 96, nBackfillAttempted
    # at 128.
    header = shm[48:96]
    (mx_frame,) = struct.unpack("=I", header[16:20])
    (backfilled,) = struct.unpack("=I", shm[96:100])
    (attempted,) = struct.unpack("=I", shm[128:132])
    if header[32:40] != wal[16:24]:
        # Stopped as the WAL restarts: the index is reset, this WAL's header not yet rewritten.
        # Every frame in the file was backfilled before the restart: any cut will do.
        assert mx_frame == attempted == 0, (mx_frame, attempted)
        return Marks(0, 0, frames)
    assert backfilled <= attempted <= mx_frame <= frames, (backfilled, attempted, mx_frame)
    durable = WAL_HEADER + attempted * frame if attempted else 0
    return Marks(durable, WAL_HEADER + mx_frame * frame, frames)


def stop_and_copy(
    child: subprocess.Popen[bytes], db_path: Path, number: int, acks: Acks
) -> Instant:
    """SIGSTOP the child; once all of it is stopped, read the files; SIGCONT."""
    child.send_signal(signal.SIGSTOP)
    try:
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the child ended instead of stopping: {status}"
        # What it printed before it stopped is acknowledged before this instant.
        assert child.stdout is not None
        acks.feed(_available(child.stdout.fileno()))
        live, deleted = acks.snapshot()
        # The WAL first, then the database file: no order matters while nothing runs.
        wal = Path(f"{db_path}-wal").read_bytes()
        db = db_path.read_bytes()
        shm = Path(f"{db_path}-shm").read_bytes()
    finally:
        child.send_signal(signal.SIGCONT)
    return Instant(number, db, wal, shm, live, deleted)


def _available(fd: int) -> bytes:
    """Whatever is in the pipe now, without waiting."""
    chunks = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while selector.select(timeout=0):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def run_load(
    db_path: Path, *, run_seed: int, workers: int, per_worker: int, stops: list[int], log: Path
) -> tuple[list[Instant], Acks]:
    """Run the child to its end, stopping it for a copy at each acknowledgement count."""
    args = [sys.executable, "-c", CHILD, str(db_path), KEY, str(run_seed)]
    args += [str(workers), str(per_worker)]
    with log.open("wb") as stderr:
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr)
    assert child.stdout is not None
    acks = Acks()
    instants: list[Instant] = []
    pending = sorted(stops)
    deadline = time.monotonic() + DEADLINE
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            while not acks.done:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the load did not finish in time: {len(acks.created)}"
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(child.stdout.fileno(), 65536)
                assert chunk, f"the child exited early:\n{log.read_text()}"
                acks.feed(chunk)
                if pending and len(acks.created) >= pending[0] and not acks.done:
                    while pending and len(acks.created) >= pending[0]:
                        pending.pop(0)
                    instants.append(stop_and_copy(child, db_path, len(instants) + 1, acks))
        assert child.wait(DEADLINE) == 0, log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return instants, acks


def has_schema(db_path: Path) -> bool:
    with closing(sqlite3.connect(db_path)) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchall()
    return bool(found)


@dataclass
class Tally:
    empty: int = 0
    cuts: int = 0
    full_cuts: int = 0
    losses: int = 0
    recovered: list[int] = field(default_factory=list)
    torn_bytes: list[int] = field(default_factory=list)


def write_copy(instant: Instant, cut: int, where: Path) -> Path:
    """The instant's database file and its WAL cut at ``cut``, with no shm, under ``where``."""
    where.mkdir()
    db_path = where / "checkpointd.db"
    db_path.write_bytes(instant.db)
    Path(f"{db_path}-wal").write_bytes(instant.wal[:cut])
    assert not Path(f"{db_path}-shm").exists()
    return db_path


async def open_cut(
    instant: Instant,
    cut: int,
    *,
    full: bool,
    real: list[tuple[int, bytes]],
    where: Path,
    tally: Tally,
) -> None:
    """The copy cut at ``cut`` opens, passes the oracle, and holds a prefix of ``real``;
    ``full`` (cut past the last commit): with everything acknowledged before the instant."""
    db_path = write_copy(instant, cut, where)
    what = f"instant {instant.number}, WAL cut at {cut} of {len(instant.wal)}"
    if not has_schema(db_path):
        # The cut took the WAL frames that created the schema (the database file had not been
        # checkpointed yet): an empty store, which the manager opens by creating the schema.
        assert not full, f"{what}: committed schema lost"
        async with CheckpointManager(database_path=str(db_path), encryption_key=KEY):
            pass
        tally.empty += 1
    if full:
        verdict = await check_store(
            db_path, acked=instant.live, deleted=instant.deleted, encryption_key=KEY
        )
        tally.full_cuts += 1
    else:
        verdict = await check_store(db_path, encryption_key=KEY)
    log = event_hashes(db_path)
    assert log == real[: len(log)], f"{what}: the log is not a prefix of the real one"
    tally.cuts += 1
    tally.recovered.append(len(log))
    tally.torn_bytes.append(len(instant.wal) - cut)
    assert verdict.events == len(log), what
    await asyncio.to_thread(shutil.rmtree, where)


async def power_loss(
    tmp_path: Path, figures: dict[str, Any], instants_wanted: int, random_cuts: int
) -> None:
    given = os.environ.get("FAULTS_SEED")
    run_seed = int(given) if given else random.SystemRandom().randrange(2**32)
    print(f"FAULTS_SEED={run_seed}")
    rng = random.Random(run_seed)
    workers, per_worker = 16, 20
    total = workers * per_worker
    # One copy in each of equal spans of the load (its first and last eighth left out).
    span = (total * 3 // 4) // instants_wanted
    stops = [
        rng.randrange(total // 8 + i * span, total // 8 + (i + 1) * span)
        for i in range(instants_wanted)
    ]
    print(f"copies at acknowledgements {stops}")

    db_path = tmp_path / "live" / "checkpointd.db"
    db_path.parent.mkdir()
    instants, acks = run_load(
        db_path,
        run_seed=run_seed,
        workers=workers,
        per_worker=per_worker,
        stops=stops,
        log=tmp_path / "child.log",
    )
    assert instants, "the load ended before the first copy"
    real = event_hashes(db_path)
    live, deleted = acks.snapshot()
    assert not acks.deleting
    await check_store(db_path, acked=live, deleted=deleted, encryption_key=KEY)

    tally = Tally()
    for instant in instants:
        m = marks(instant)
        cuts = [(rng.randint(m.durable, len(instant.wal)), False) for _ in range(random_cuts)]
        cuts.append((rng.randint(m.committed, len(instant.wal)), True))
        print(f"instant {instant.number}: {m}, WAL {len(instant.wal)} bytes, cuts {cuts}")
        for n, (cut, full) in enumerate(cuts):
            where = tmp_path / f"copy-{instant.number}-{n}"
            await open_cut(instant, cut, full=full, real=real, where=where, tally=tally)

    figures.update(
        seed=run_seed,
        rounds=len(instants),
        operations=len(acks.created) + len(acks.deleted),
        acknowledged=len(acks.created) + len(acks.deleted),
        losses=tally.losses,
        cuts=tally.cuts,
        cuts_past_last_commit=tally.full_cuts,
        cuts_to_an_empty_store=tally.empty,
        events_real=len(real),
        events_recovered=f"{min(tally.recovered)}..{max(tally.recovered)}",
        torn_bytes=f"{min(tally.torn_bytes)}..{max(tally.torn_bytes)}",
    )


@pytest.mark.parametrize(
    ("instants", "random_cuts"), [(3, 2), pytest.param(12, 4, marks=pytest.mark.slow)]
)
async def test_a_torn_wal_opens_passes_the_oracle_and_holds_a_prefix_of_the_log(
    tmp_path: Path, figures: dict[str, Any], instants: int, random_cuts: int
) -> None:
    """Copies taken mid-load, their WAL cut at random bytes: each opens, passes the oracle,
    and its log is a prefix of the real one; cut past the last commit, it lost nothing that
    was acknowledged."""
    await power_loss(tmp_path, figures, instants, random_cuts)
