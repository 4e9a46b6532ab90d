"""The views under faults: the projector killed, the views file lost or damaged, far behind,
rebuilt while serving, and a read asking for a position the log has not reached.

A write is acknowledged once its events are in the log; the views follow, built by the
projector (under ``checkpointd serve`` a process of its own). Whatever happens to the projector
or to the views file, the promise is the same: a read answers from views that have reached every
write acknowledged before it began, or it answers ``unavailable``; never a stale answer, and
nothing acknowledged is lost. Every scenario ends with the oracle (``check_store``: the views
equal a rebuild from the log, every acknowledged create is there, ``verify`` is ok) on the files
of a daemon that stopped cleanly.

Writers and readers run concurrently in this process. A reader notes what was acknowledged
before it sends its read (one session's checkpoints, the newest ones, the count, the log head)
and checks the answer holds all of it (``Load.read``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import views_file
from contract import CONTENT_TYPE, ERROR_CODE, JSON, MIN_SEQ
from daemon.serving import DEADLINE, Daemon, Daemons, children_of, wait_gone

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.errors import UnavailableError
from checkpointd.faults import ENV
from checkpointd.reads.search import CANDIDATES
from checkpointd.snapshots.canonical import canonical_encode, checksum
from checkpointd.views.tail import BULK_FROM

from .oracle import check_store

SESSIONS = 8
SETTINGS: dict[str, Any] = {"auto_cleanup": False}
UNUSABLE = "views file unusable; building it again"
RESTARTED = "the projector stopped; restarting it"

Store = CheckpointManager | CheckpointClient


def body(name: str, session: str, words: str = "") -> dict[str, Any]:
    snapshot = {"sessions": [session], "state": {"name": name, "notes": f"{name} {words} " * 8}}
    return {
        "name": name,
        "sessionId": session,
        "snapshot": snapshot,
        "branches": ["main"],
        "metadata": {"feature": f"f-{session}", "tags": ["views", words or "plain"]},
    }


@dataclass
class Load:
    """Writers and readers on one store; what was acknowledged, in order, per session."""

    acked: dict[str, str] = field(default_factory=dict)  # id -> checksum of what was sent
    order: list[str] = field(default_factory=list)
    by_session: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    reads: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # readers and writers stop
    stop_writes: asyncio.Event = field(default_factory=asyncio.Event)  # writers stop
    _marks: dict[int, asyncio.Event] = field(default_factory=dict)

    def ack(self, checkpoint_id: str, session: str, sent: str) -> None:
        self.acked[checkpoint_id] = sent
        self.order.append(checkpoint_id)
        self.by_session[session].append(checkpoint_id)
        for count, event in self._marks.items():
            if len(self.order) >= count:
                event.set()

    async def acknowledged(self, count: int) -> None:
        """Return once ``count`` creates are acknowledged (within ``DEADLINE``)."""
        event = self._marks.setdefault(count, asyncio.Event())
        if len(self.order) >= count:
            event.set()
        async with asyncio.timeout(DEADLINE):
            await event.wait()

    async def write(self, store: Store, worker: int, count: int, *, tolerate: bool = False) -> None:
        """``count`` creates (fewer once told to stop); ``tolerate``: a refusal ends the writer
        quietly (the daemon is being killed), otherwise it is a failure."""
        session = f"s{worker % SESSIONS}"
        for n in range(count):
            if self.stop.is_set() or self.stop_writes.is_set():
                return
            request = body(f"w{worker}-{n}", session, words=f"topic{n % 5}")
            try:
                created = await store.create(request)
            except UnavailableError as exc:
                if not tolerate:
                    self.failures.append(f"create w{worker}-{n}: {exc}")
                return
            sent = checksum(canonical_encode(request["snapshot"]))
            if created.checksum != sent:
                self.failures.append(f"create w{worker}-{n}: checksum {created.checksum}")
            self.ack(created.id, session, sent)

    async def read(self, store: Store, rng: random.Random) -> None:
        """One read of four kinds, each checked against what was acknowledged before it (the
        last, ``health``, reads the log alone: it does not wait for the views)."""
        kind = rng.choice(("session", "newest", "stats", "health"))
        if kind == "session":
            session = f"s{rng.randrange(SESSIONS)}"
            expected = set(self.by_session[session])
            page = await store.get_checkpoints_by_session(session, page_size=1000)
            missing = expected - {c.id for c in page}
        elif kind == "newest":
            expected = set(self.order[-4:])
            found = [await store.get_checkpoint(i, include_snapshot=False) for i in expected]
            missing = expected - {c.id for c in found if c is not None}
        elif kind == "health":
            before = len(self.order)  # each create is one event
            head = await store.health()
            missing = {f"{before - head} events"} if head < before else set()
        else:
            before = len(self.acked)
            stats = await store.get_checkpoint_stats()
            missing = (
                {f"{before - stats.total_checkpoints} checkpoints"}
                if (stats.total_checkpoints < before)
                else set()
            )
        self.reads += 1
        if missing:
            self.failures.append(f"stale {kind} read: missing {sorted(missing)[:5]}")

    async def reader(self, store: Store, seed: str) -> None:
        """Reads until ``stop``; a refused read is a failure."""
        rng = random.Random(seed)
        while not self.stop.is_set():
            try:
                await self.read(store, rng)
            except UnavailableError as exc:
                self.failures.append(f"read refused: {exc}")
                return

    async def all_present(self, store: Store) -> None:
        """Every acknowledged create, read back with the checksum that was sent."""
        for checkpoint_id, sent in self.acked.items():
            found = await store.get_checkpoint(checkpoint_id, include_snapshot=False)
            assert found is not None, f"acknowledged {checkpoint_id} is not served"
            assert found.checksum == sent, checkpoint_id


@asynccontextmanager
async def client_of(daemon: Daemon, retries: int = 2) -> AsyncIterator[CheckpointClient]:
    async with CheckpointClient(
        daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE, retries=retries
    ) as client:
        yield client


def projectors(daemon: Daemon) -> list[int]:
    """The daemon's projector processes (its children started by multiprocessing's spawn)."""
    found = []
    for pid in children_of(daemon.pid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"multiprocessing" in command and b"resource_tracker" not in command:
                found.append(pid)
    return found


def events_logged(daemon: Daemon, event: str) -> int:
    return sum(1 for record in daemon.logs() if record.get("event") == event)


async def stopped(daemon: Daemon) -> None:
    """SIGTERM; the daemon exits 0 (its projector's last batch commits or rolls back)."""
    assert await asyncio.to_thread(daemon.stop) == 0, daemon.diagnostics()


def restart(daemons: Daemons, daemon: Daemon, **settings: Any) -> Daemon:
    """A daemon on ``daemon``'s state directory, without crash points, once it is READY."""
    return daemons.start({**SETTINGS, **settings, "state_directory": str(daemon.state)})


# -- 1. the projector killed mid-batch ------------------------------------------------------


@pytest.mark.parametrize("creates", [40, pytest.param(300, marks=pytest.mark.slow)])
async def test_a_projector_killed_mid_batch_is_restarted_and_no_read_is_stale(
    daemons: Daemons, figures: dict[str, Any], creates: int
) -> None:
    """The projector process dies of SIGKILL inside a batch, every third batch of each of its
    lives, under 16 writers and 8 readers: the daemon keeps acknowledging writes, restarts
    its projector each time, and no read is refused or misses an acknowledged write."""
    daemon = daemons.start(SETTINGS, env={ENV: "projector-mid-batch@3"})
    load = Load()
    async with client_of(daemon) as writing, client_of(daemon) as reading:
        readers = [asyncio.create_task(load.reader(reading, f"r{n}")) for n in range(8)]
        await asyncio.gather(*(load.write(writing, w, creates) for w in range(16)))
        load.stop.set()
        await asyncio.gather(*readers)
        assert not load.failures, load.failures[:10]
        await load.all_present(reading)
    deaths = events_logged(daemon, RESTARTED)
    assert deaths >= 1, daemon.diagnostics()
    assert daemon.process.poll() is None  # only the projector died
    await stopped(daemon)
    verdict = await check_store(daemon.db_path, acked=load.acked)
    figures.update(
        rounds=1,
        operations=len(load.acked) + load.reads,
        acknowledged=len(load.acked),
        losses=0,
        projector_deaths=deaths,
        reads=load.reads,
        events=verdict.events,
    )


# -- 2. the daemon, or the daemon and its projector, killed under load ------------------------


async def kill_under_load(daemon: Daemon, load: Load, kill: Callable[[], None] | None) -> None:
    """16 writers until the daemon dies: by its crash point (``kill`` None) or by ``kill``,
    called once 100 creates are acknowledged."""
    async with client_of(daemon, retries=0) as client:
        writers = [
            asyncio.create_task(load.write(client, w, 500, tolerate=True)) for w in range(16)
        ]
        if kill is not None:
            await load.acknowledged(100)
            kill()
        code = await asyncio.to_thread(daemon.wait)
        assert code == -signal.SIGKILL, daemon.diagnostics()
        load.stop.set()
        for task in writers:  # unanswered: unacknowledged
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
    assert not load.failures, load.failures[:10]


@pytest.mark.parametrize("how", ["after-append-before-commit", "daemon-and-projector"])
async def test_a_daemon_killed_under_load_restarts_with_every_acknowledged_write(
    daemons: Daemons, figures: dict[str, Any], how: str
) -> None:
    """SIGKILL of the daemon inside a group commit, or of the daemon and its projector at
    once: the daemon started again on the same files catches its views up before READY and
    serves every acknowledged create."""
    if how == "after-append-before-commit":
        daemon = daemons.start(SETTINGS, env={ENV: "after-append-before-commit@60"})
        kill = None
    else:
        daemon = daemons.start(SETTINGS)

        def kill() -> None:
            pids = [daemon.pid, *projectors(daemon)]
            assert len(pids) == 2, pids
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

    orphans = projectors(daemon)
    load = Load()
    await kill_under_load(daemon, load, kill)
    for pid in orphans:  # a projector whose owner died stops at its pipe's end
        assert wait_gone(pid), f"projector {pid} outlived its daemon"
    assert load.acked, "nothing was acknowledged before the kill"

    again = restart(daemons, daemon)
    async with client_of(again) as client:
        await load.all_present(client)
        stats = await client.get_checkpoint_stats()
        assert stats.total_checkpoints >= len(load.acked)
    await stopped(again)
    verdict = await check_store(again.db_path, acked=load.acked)
    figures.update(
        rounds=1,
        operations=len(load.order),
        acknowledged=len(load.acked),
        losses=0,
        events=verdict.events,
    )


# -- 3. the views file deleted or damaged while the daemon is stopped -------------------------


async def answers(client: CheckpointClient, load: Load) -> dict[str, Any]:
    """What a user sees: each session's list, each checkpoint, a search, the stats."""
    return {
        "lists": [
            list(await client.get_checkpoints_by_session(f"s{n}", page_size=1000))
            for n in range(SESSIONS)
        ],
        "gets": [await client.get_checkpoint(i) for i in load.order],
        "search": list(await client.search_checkpoints("topic3", 1000)),
        "stats": await client.get_checkpoint_stats(),
    }


def overwrite(path: str, offset: int, length: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(offset).randbytes(length))


def damage(path: str, how: str) -> None:
    """Delete the views file, or overwrite its header, or one page in its middle."""
    assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0
    if how == "deleted":
        os.remove(path)
    elif how == "header":
        overwrite(path, 0, 100)
    else:
        with closing(sqlite3.connect(path)) as conn:
            (size,) = conn.execute("PRAGMA page_size").fetchone()
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
        overwrite(path, (pages // 2) * size, size)


async def test_a_lost_or_damaged_views_file_is_rebuilt_with_the_same_answers(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """The views file deleted, then its header overwritten, then one page in its middle, each
    while the daemon is stopped: each next daemon builds the views again from the log and
    answers every list, get, search and stats exactly as the first one did."""
    daemon = daemons.start(SETTINGS)
    load = Load()
    async with client_of(daemon) as client:
        await asyncio.gather(*(load.write(client, w, 20) for w in range(8)))
        for checkpoint_id in load.order[::7]:
            assert await client.delete_checkpoint(checkpoint_id)
            del load.acked[checkpoint_id]
        load.order = [i for i in load.order if i in load.acked]
        before = await answers(client, load)
    compared = 0
    for how in ("deleted", "header", "middle-page"):
        await stopped(daemon)
        damage(views_file(daemon.db_path), how)
        daemon = restart(daemons, daemon)
        async with client_of(daemon) as client:
            after = await answers(client, load)
        for key in before:
            assert after[key] == before[key], f"{how}: {key} differs after the rebuild"
        compared += len(before["gets"]) + len(before["lists"]) + 2
        if how != "deleted":  # a deleted file is simply built afresh
            assert events_logged(daemon, UNUSABLE) == 1, daemon.diagnostics()
    await stopped(daemon)
    verdict = await check_store(daemon.db_path, acked=load.acked)
    figures.update(
        rounds=3,
        operations=len(load.order) + compared,
        acknowledged=len(load.acked),
        losses=0,
        answers_compared=compared,
        events=verdict.events,
    )


# -- 4. views far behind: ready only once they reach the head ---------------------------------


async def big_log(db_path: Path, events: int) -> None:
    """A log of ``events`` creates (500 a batch, durability "normal"), and no views file."""
    async with CheckpointManager(
        database_path=str(db_path), durability="normal", auto_cleanup=False
    ) as manager:
        for start in range(0, events, 500):
            numbers = range(start, min(start + 500, events))
            await manager.create_batch([body(f"b{n}", f"s{n % SESSIONS}", "bulk") for n in numbers])
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(views_file(db_path) + suffix)


STATUS = re.compile(r"^STATUS=building the views from the log: (\d+) of (\d+) events$")


# The oracle validates every checkpoint, which dominates the time: the default run tails the
# log batch by batch; the long variant is past BULK_FROM, so the views are built in one bulk pass.
@pytest.mark.parametrize("events", [8_000, pytest.param(5 * BULK_FROM, marks=pytest.mark.slow)])
async def test_a_daemon_far_behind_is_ready_only_once_its_views_reach_the_head(
    daemons: Daemons, figures: dict[str, Any], tmp_path: Path, events: int
) -> None:
    """A log of many events and no views file: the daemon reports its progress on STATUS=
    lines and says READY=1 only once the views reached the log head, so reads right after
    READY answer (with a short ``read_timeout``, a read still waiting would be refused)."""
    state = tmp_path / "far-behind"
    state.mkdir()
    await big_log(state / "checkpointd.db", events)
    daemon = daemons.start({**SETTINGS, "read_timeout": 0.5, "state_directory": str(state)})

    async with client_of(daemon, retries=0) as client:
        stats = await client.get_checkpoint_stats()
        newest = await client.get_checkpoint(f"{stats.newest_checkpoint.id}")
        page = await client.get_checkpoints_by_session("s3", page_size=10)
        found = await client.search_checkpoints("bulk", 5)
    assert stats.total_checkpoints == events
    assert newest is not None
    assert found.total == min(events, CANDIDATES)
    assert page.total == len(range(3, events, SESSIONS))

    before_ready = daemon.notify.seen[: daemon.notify.seen.index(daemon.ready)]
    found_lines = [STATUS.match(line) for d in before_ready for line in d.split("\n")]
    progress = [(int(m.group(1)), int(m.group(2))) for m in found_lines if m is not None]
    assert progress, daemon.notify.seen
    assert all(head == events for _, head in progress), progress
    done = [n for n, _ in progress]
    assert done == sorted(done), done
    assert done[-1] <= events, done
    await stopped(daemon)
    verdict = await check_store(daemon.db_path)
    figures.update(
        rounds=1,
        operations=events,
        acknowledged=events,
        losses=0,
        status_lines=len(progress),
        progress=done,
        events=verdict.events,
    )


# -- 5. rebuilt while serving ---------------------------------------------------------------


async def rebuild_under_load(
    writing: Store, reading: Store, rebuild: Callable[[], Any], workers: int
) -> tuple[Load, list[int], int]:
    """``workers`` writers and as many readers; two rebuilds while they all run, then a third
    once the writers have stopped (the fresh views are at the head when they are swapped in,
    so the readers do not wait for the projector after the swap); the events each rebuild
    replayed, the creates acknowledged while a rebuild ran."""
    load = Load()
    readers = [asyncio.create_task(load.reader(reading, f"r{n}")) for n in range(workers)]
    writers = [asyncio.create_task(load.write(writing, w, 10**6)) for w in range(workers)]
    replayed, during = [], 0
    for _ in range(2):
        await load.acknowledged(len(load.order) + 50)
        before = len(load.order)
        replayed.append(await rebuild())
        during += len(load.order) - before
    await load.acknowledged(len(load.order) + 50)
    load.stop_writes.set()
    await asyncio.gather(*writers)
    replayed.append(await rebuild())
    load.stop.set()
    await asyncio.gather(*readers)
    assert not load.failures, load.failures[:10]
    assert replayed[-1] == len(load.order), replayed
    return load, replayed, during


@pytest.mark.parametrize("workers", [16, pytest.param(64, marks=pytest.mark.slow)])
async def test_a_rebuild_in_process_under_load_fails_nothing_and_serves_nothing_stale(
    tmp_path: Path, figures: dict[str, Any], workers: int
) -> None:
    """``manager.rebuild()`` twice while writers and readers run, and once more under the
    readers alone: no write fails, no read fails or misses an acknowledged write, and
    afterwards the views equal a rebuild."""
    db_path = tmp_path / "cp.db"
    async with CheckpointManager(database_path=str(db_path), auto_cleanup=False) as manager:
        load, replayed, during = await rebuild_under_load(
            manager, manager, manager.rebuild, workers
        )
        await load.all_present(manager)
    verdict = await check_store(db_path, acked=load.acked)
    figures.update(
        rounds=3,
        operations=len(load.acked) + load.reads + 3,
        acknowledged=len(load.acked),
        losses=0,
        reads=load.reads,
        rebuilt_events=replayed,
        acknowledged_during_rebuilds=during,
        events=verdict.events,
    )


@pytest.mark.parametrize("workers", [16, pytest.param(64, marks=pytest.mark.slow)])
async def test_the_rebuild_verb_under_load_fails_nothing_and_serves_nothing_stale(
    daemons: Daemons, figures: dict[str, Any], workers: int
) -> None:
    """``checkpoint.rebuild`` on a daemon twice while writers and readers run over NATS, and
    once more under the readers alone: no write fails, no read fails or misses an acknowledged
    write; afterwards the views equal a rebuild."""
    daemon = daemons.start(SETTINGS)
    async with (
        client_of(daemon) as writing,
        client_of(daemon) as reading,
        client_of(daemon) as admin,
    ):
        load, replayed, during = await rebuild_under_load(writing, reading, admin.rebuild, workers)
        await load.all_present(reading)
    await stopped(daemon)
    verdict = await check_store(daemon.db_path, acked=load.acked)
    figures.update(
        rounds=3,
        operations=len(load.acked) + load.reads + 3,
        acknowledged=len(load.acked),
        losses=0,
        reads=load.reads,
        rebuilt_events=replayed,
        acknowledged_during_rebuilds=during,
        events=verdict.events,
    )


# -- 6. a floor beyond the head ---------------------------------------------------------------


async def test_a_read_asking_beyond_the_head_is_unavailable_and_the_daemon_serves_on(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """A read whose ``Checkpointd-Min-Seq`` is past the log head waits ``read_timeout`` and
    answers ``unavailable``; writes and reads sent meanwhile are answered, and so is
    everything after."""
    daemon = daemons.start({**SETTINGS, "read_timeout": 1.0})
    load = Load()
    nc = await nats.connect(daemon.url)
    try:
        async with client_of(daemon) as client:
            await load.write(client, 0, 5)
            head = client.last_seq
            beyond = nc.request(
                f"{daemon.prefix}.stats",
                b"{}",
                timeout=DEADLINE,
                headers={CONTENT_TYPE: JSON, MIN_SEQ: str(head + 1000)},
            )
            waiting = asyncio.ensure_future(beyond)
            await load.write(client, 1, 5)  # answered while the other read waits
            await load.read(client, random.Random(6))
            reply = await waiting
            assert (reply.headers or {}).get(ERROR_CODE) == "503", reply.data[:300]
            assert json.loads(reply.data)["error"]["code"] == "unavailable"
            await load.write(client, 2, 5)
            await load.all_present(client)
            assert not load.failures, load.failures
    finally:
        await nc.close()
    await stopped(daemon)
    verdict = await check_store(daemon.db_path, acked=load.acked)
    figures.update(
        rounds=1,
        operations=len(load.acked) + load.reads + 1,
        acknowledged=len(load.acked),
        losses=0,
        events=verdict.events,
    )
