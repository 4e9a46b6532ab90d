"""Scenario 11, the soak: a daemon under a steady mixed load stays flat and loses nothing.

32 clients, each with its own NATS connection, run a mixed workload against one ``checkpointd
serve``: creates of 1-64 KB snapshots, gets (checked against what was acknowledged), updates
with expected versions (some on purpose against another client's checkpoint, so conflicts
happen), lists of a client's own sessions (their totals must equal what that client knows it
has), searches, deletes, restores and history pages. One more client is the long reader: it
pages through the whole log from seq 0, checking it is gapless, then lists every checkpoint,
again and again. The daemon also runs its cleanup (forgetting idempotency keys) under the load.

Every few seconds a sampler records the daemon's RSS, its open file descriptors, the size of the
database and of its WAL, and the operation counts. At the end: memory, descriptors and the WAL
stay flat (the first quarter after warm-up against the last quarter), the p99 of creates stays
within its bound, no error but the expected conflicts, and after a clean stop the oracle finds
every acknowledged create that was not deleted, with its checksum.

The default run is short (``SHORT_SECONDS``) so the code cannot rot; the long run is marked
``slow`` (``--run-slow``) and lasts ``SOAK_SECONDS`` from the environment (default 600 s).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import random
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import caught_up, views_file
from daemon.serving import DEADLINE, Daemon, Daemons

from checkpointd import CheckpointClient
from checkpointd.config import Config
from checkpointd.errors import ConflictError, NotFoundError
from checkpointd.storage.sqlite import READER_PRAGMAS, writer_pragmas

from .oracle import check_store

# Not a CHECKPOINTD_* variable: the suite clears those, and the daemon would take it for config.
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SHORT_SECONDS = 20.0
CLIENTS = 32
OWN_TARGET = 24
"""Checkpoints a client keeps alive: above it, it deletes as often as it creates."""
WORDS = ("amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor")
"""Search terms; none is a prefix of another, so a hit for one always names it."""
MB = 1 << 20

# The flatness bounds (see the module docstring): quarter maxima compared after warm-up.
RSS_GROWTH = 1.20
RSS_SLACK = 30 * MB
FD_SLACK = 8
WAL_BOUND = 64 * MB
"""SQLite checkpoints the WAL at 1000 pages (4 MB) and then starts it over from the beginning,
once no reader still uses its frames; with no ``journal_size_limit`` the file keeps its
high-water mark. So it should level off near 4 MB plus the largest group commit. If readers in
short transactions starved the restart, it would grow with every write instead."""
WAL_SLACK = 16 * MB


def cache_kib(pragmas: tuple[str, ...] | list[str]) -> int:
    """The page cache one connection may fill, from its ``PRAGMA cache_size = -KiB``."""
    (kib,) = [p.rsplit("-", 1)[1] for p in pragmas if p.startswith("PRAGMA cache_size = -")]
    return int(kib)


SQLITE_CACHES = 1024 * (
    cache_kib(writer_pragmas("full")) + Config().reader_connections * cache_kib(READER_PRAGMAS)
)
"""What the daemon's SQLite connections may legitimately fill (the writer's and each reader's
page cache): RSS rises towards this while the database grows, then stops. A short run ends
before the caches are full, so growth up to them, from the RSS before the load, is allowed."""
CREATE_P99_BOUND = 1.0
CREATE_P99_RATIO = 3.0
CREATE_P99_FLOOR = 0.05
"""Seconds below which a p99 is noise: the ratio is taken against at least this much."""


@dataclass
class Entry:
    """A live checkpoint as the clients know it."""

    owner: int
    session: str
    checksum: str
    marker: str
    version: int = 1


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    rss: int
    fds: int
    wal: int
    db: int
    operations: int


@dataclass
class Soak:
    """What the clients share: the live checkpoints, what was deleted, and what happened."""

    started: float
    deadline: float
    live: dict[str, Entry] = field(default_factory=dict)
    acked: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    operations: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[tuple[float, str, float]] = field(default_factory=list)
    reader_passes: int = 0
    samples: list[Sample] = field(default_factory=list)

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def record(self, kind: str, began: float) -> None:
        """One operation of ``kind`` that began at ``began`` (monotonic) is over."""
        self.operations[kind] += 1
        self.latencies.append((began - self.started, kind, time.monotonic() - began))

    def unexpected(self, kind: str, problem: str) -> None:
        if len(self.errors) < 200:
            self.errors.append(f"{kind}: {problem}")


def fillers(rng: random.Random) -> list[str]:
    """Text to pad snapshots with: random, so gzip shrinks it only as far as base64 allows."""
    return [base64.b64encode(rng.randbytes(48 * 1024 + 3)).decode("ascii") for _ in range(8)]


def snapshot(rng: random.Random, pool: list[str], marker: str, client: int) -> dict[str, Any]:
    """A snapshot of 1-64 KB in the original API's shape, told
    apart from every other by ``marker``."""
    size = rng.randint(1024, 64 * 1024)
    text = rng.choice(pool)
    start = rng.randrange(len(text) - size + 1)
    pad = text[start : start + size]
    return {
        "sessions": [f"c{client}"],
        "state": {
            "progress": rng.randint(0, 100),
            "completed": [marker],
            "config": {"client": client},
        },
        "marker": marker,
        "pad": pad,
    }


class Worker:
    """One client's loop: a weighted random choice of operations until the deadline."""

    def __init__(self, soak: Soak, client: CheckpointClient, number: int, seed: int) -> None:
        self.soak = soak
        self.client = client
        self.number = number
        self.rng = random.Random(seed)
        self.pool = fillers(self.rng)
        self.sessions = (f"soak-{number}-a", f"soak-{number}-b")
        self.own: list[str] = []
        self.created = 0
        self.operations: dict[str, Callable[[], Any]] = {
            "create": self.create,
            "get": self.get,
            "update": self.update,
            "list": self.list,
            "search": self.search,
            "delete": self.delete,
            "restore": self.restore,
            "history": self.history,
        }

    async def run(self, limit: int) -> None:
        for _ in range(limit):
            if self.soak.over():
                return
            kind = self.choose()
            began = time.monotonic()
            try:
                await self.operations[kind]()
            except ConflictError:
                if kind not in {"update", "restore"}:
                    self.soak.unexpected(kind, "conflict")
                self.soak.expected[f"{kind}_conflict"] += 1
            except NotFoundError as exc:
                self.soak.unexpected(kind, repr(exc))
            except Exception as exc:  # any other failure, even a timeout, is a finding
                self.soak.unexpected(kind, repr(exc))
            self.soak.record(kind, began)

    def choose(self) -> str:
        if not self.own:
            return "create"
        weights = {
            "create": 25,
            "get": 20,
            "update": 12,
            "list": 8,
            "search": 8,
            "delete": 25 if len(self.own) >= OWN_TARGET else 5,
            "restore": 1,  # a restore logs its conflicts, both sides: 64 KB pads grow the log fast
            "history": 8,
        }
        return self.rng.choices(list(weights), list(weights.values()))[0]

    def any_live(self) -> tuple[str, Entry] | None:
        """A live checkpoint of any client (half the time one of this client's own)."""
        if self.own and self.rng.random() < 0.5:
            checkpoint_id = self.rng.choice(self.own)
            return checkpoint_id, self.soak.live[checkpoint_id]
        if not self.soak.live:
            return None
        checkpoint_id = self.rng.choice(list(self.soak.live))
        return checkpoint_id, self.soak.live[checkpoint_id]

    async def create(self) -> None:
        self.created += 1
        marker = f"c{self.number}-n{self.created}"
        word = self.rng.choice(WORDS)
        session = self.rng.choice(self.sessions)
        cp = await self.client.create(
            name=f"soak {word} {marker}",
            session_id=session,
            snapshot=snapshot(self.rng, self.pool, marker, self.number),
            branches=["main"],
            metadata={"feature": "soak", "tags": [word], "client": self.number},
        )
        self.soak.acked[cp.id] = cp.checksum
        self.soak.live[cp.id] = Entry(self.number, session, cp.checksum, marker)
        self.own.append(cp.id)

    async def get(self) -> None:
        chosen = self.any_live()
        if chosen is None:
            return
        checkpoint_id, entry = chosen
        cp = await self.client.get_checkpoint(checkpoint_id)
        if cp is None:
            if checkpoint_id in self.soak.live:
                self.soak.unexpected("get", f"{checkpoint_id} is live but not found")
            else:
                self.soak.expected["get_deleted_meanwhile"] += 1
            return
        assert cp.snapshot is not None
        if (cp.checksum, cp.snapshot.get("marker")) != (entry.checksum, entry.marker):
            self.soak.unexpected("get", f"{checkpoint_id}: {cp.checksum} is not {entry.checksum}")

    async def update(self) -> None:
        chosen = self.any_live()
        if chosen is None:
            return
        checkpoint_id, entry = chosen
        expected = entry.version
        word = self.rng.choice(WORDS)
        try:
            cp = await self.client.update_checkpoint(
                checkpoint_id,
                {
                    "name": f"soak {word} {entry.marker} v{expected + 1}",
                    "metadata": {"feature": "soak", "tags": [word], "client": entry.owner},
                },
                expected_version=expected,
            )
        except NotFoundError:
            if checkpoint_id in self.soak.live:
                raise
            self.soak.expected["update_deleted_meanwhile"] += 1
            return
        if cp.version != expected + 1:
            self.soak.unexpected("update", f"{checkpoint_id}: v{cp.version} after v{expected}")
        entry.version = max(entry.version, cp.version)

    async def list(self) -> None:
        session = self.rng.choice(self.sessions)
        page = await self.client.get_checkpoints_by_session(session, page_size=100)
        # Only this client writes its sessions' checkpoints, and it waits for each reply.
        mine = sum(1 for i in self.own if self.soak.live[i].session == session)
        if page.total != mine or any(cp.session_id != session for cp in page):
            self.soak.unexpected("list", f"{session}: {page.total} listed, {mine} live")

    async def search(self) -> None:
        word = self.rng.choice(WORDS)
        page = await self.client.search_checkpoints(word, 20)
        for cp in page:
            if word not in cp.name.split() and word not in cp.metadata.get("tags", ()):
                self.soak.unexpected("search", f"{word!r} found {cp.name!r}")

    async def delete(self) -> None:
        checkpoint_id = self.own.pop(self.rng.randrange(len(self.own)))
        del self.soak.live[checkpoint_id]
        if await self.client.delete_checkpoint(checkpoint_id):
            self.soak.deleted.add(checkpoint_id)
        else:
            self.soak.unexpected("delete", f"{checkpoint_id} was not there to delete")

    async def restore(self) -> None:
        checkpoint_id = self.rng.choice(self.own)
        strategy = self.rng.choice(("overwrite", "merge", "keep-original"))
        result = await self.client.restore_checkpoint(
            checkpoint_id, target_session_id=self.rng.choice(self.sessions), merge_strategy=strategy
        )
        if not result.success or result.restored_from != checkpoint_id:
            self.soak.unexpected("restore", f"{checkpoint_id}: {result.success}")

    async def history(self) -> None:
        if self.rng.random() < 0.5:
            checkpoint_id = self.rng.choice(self.own)
            page = await self.client.history(checkpoint_id=checkpoint_id, limit=50)
            if not page.events or page.events[0].type != "checkpoint.created":
                self.soak.unexpected("history", f"{checkpoint_id}: {page.events[:1]}")
        else:
            page = await self.client.history(session_id=self.rng.choice(self.sessions), limit=100)
        seqs = [event.seq for event in page.events]
        if seqs != sorted(set(seqs)):
            self.soak.unexpected("history", f"seqs out of order: {seqs[:10]}")


async def long_reader(soak: Soak, client: CheckpointClient, limit: int) -> None:
    """Page through the whole log from seq 0 (it must be gapless), then list everything; repeat."""
    for _ in range(limit):
        after: int | None = 0
        expected_seq = 1
        for _page in range(limit):
            if after is None or soak.over():
                break
            began = time.monotonic()
            page = await client.history(after_seq=after, limit=1000)
            soak.record("reader_history", began)
            seqs = [event.seq for event in page.events]
            if seqs != list(range(expected_seq, expected_seq + len(seqs))):
                soak.unexpected("reader_history", f"after {after}: {seqs[:3]}...{seqs[-3:]}")
            expected_seq += len(seqs)
            after = page.next
        for number in range(1, limit):
            if soak.over():
                return
            began = time.monotonic()
            listed = await client.get_checkpoints_by_feature("soak", page=number, page_size=1000)
            soak.record("reader_list", began)
            if len(listed) < 1000:
                break
        soak.reader_passes += 1


def sample(soak: Soak, daemon: Daemon) -> Sample:
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    (rss_kb,) = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    wal = Path(f"{daemon.db_path}-wal")
    return Sample(
        at=time.monotonic() - soak.started,
        rss=int(rss_kb) * 1024,
        fds=len(os.listdir(f"/proc/{daemon.pid}/fd")),
        wal=wal.stat().st_size if wal.exists() else 0,
        db=daemon.db_path.stat().st_size,
        operations=sum(soak.operations.values()),
    )


async def sampler(soak: Soak, daemon: Daemon, every: float, stop: asyncio.Event) -> None:
    """A sample every ``every`` seconds (a rate, not a wait for an event) until ``stop``."""
    for _ in range(1_000_000):
        soak.samples.append(sample(soak, daemon))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        if stop.is_set():
            break
    soak.samples.append(sample(soak, daemon))


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def soak_run(daemon: Daemon, seconds: float, seed: int) -> Soak:
    """Run the workload for ``seconds``: 32 workers and the long reader, sampled throughout."""
    started = time.monotonic()
    soak = Soak(started=started, deadline=started + seconds)
    limit = int(seconds * 1000)  # far more operations than a client can do in the time
    stop = asyncio.Event()
    clients = [
        CheckpointClient(daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE, name=f"c{n}")
        for n in range(CLIENTS + 1)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        workers = [Worker(soak, clients[n], n, seed * 1000 + n) for n in range(CLIENTS)]
        every = max(1.0, seconds / 120)
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(sampler(soak, daemon, every, stop))
            reader = group.create_task(long_reader(soak, clients[CLIENTS], limit))
            await asyncio.gather(*(worker.run(limit) for worker in workers))
            await reader
            stop.set()
            await watcher
    return soak


@dataclass(frozen=True)
class Quarters:
    """The samples and create latencies of the first quarter after warm-up and of the last."""

    first: list[Sample]
    last: list[Sample]
    create_p99_first: float
    create_p99_last: float

    @classmethod
    def of(cls, soak: Soak, seconds: float) -> Quarters:
        warm, early, late = seconds * 0.1, seconds * 0.25, seconds * 0.75
        first = [s for s in soak.samples if warm <= s.at <= early]
        last = [s for s in soak.samples if s.at >= late]
        return cls(
            first or soak.samples[:2],
            last or soak.samples[-2:],
            create_p99(soak, warm, early),
            create_p99(soak, late, seconds),
        )

    def rss(self) -> tuple[int, int]:
        return max(s.rss for s in self.first), max(s.rss for s in self.last)

    def fds(self) -> tuple[int, int]:
        return max(s.fds for s in self.first), max(s.fds for s in self.last)

    def wal(self) -> tuple[int, int]:
        return max(s.wal for s in self.first), max(s.wal for s in self.last)

    def db(self) -> tuple[int, int]:
        return max(s.db for s in self.first), max(s.db for s in self.last)


def create_p99(soak: Soak, start: float, end: float) -> float:
    return percentile(
        [d for at, kind, d in soak.latencies if kind == "create" and start <= at <= end], 0.99
    )


def by_kind(soak: Soak) -> dict[str, list[float]]:
    """Every operation's latency, by kind."""
    found: dict[str, list[float]] = defaultdict(list)
    for _at, kind, duration in soak.latencies:
        found[kind].append(duration)
    return dict(sorted(found.items()))


def stored(db_path: Path) -> dict[str, str]:
    """Every checkpoint in the stopped daemon's store: id to checksum, from its views once they
    have reached the end of its log."""
    caught_up(db_path)
    with contextlib.closing(sqlite3.connect(views_file(db_path))) as conn:
        return dict(conn.execute("SELECT id, checksum FROM checkpoints").fetchall())


def megabytes(pair: tuple[int, int]) -> tuple[float, float]:
    return round(pair[0] / MB, 1), round(pair[1] / MB, 1)


def milliseconds(values: list[float], fraction: float) -> float:
    return round(percentile(values, fraction) * 1000, 1)


def print_timeline(soak: Soak) -> None:
    """One line per sample (shown with ``-s``): how the daemon looked as the run went on."""
    for before, s in itertools.pairwise(soak.samples):
        print(
            f"soak t={s.at:6.1f}s rss={s.rss / MB:6.1f}MB fds={s.fds:3d}"
            f" wal={s.wal / MB:6.1f}MB db={s.db / MB:7.1f}MB ops={s.operations}"
            f" create p99={create_p99(soak, before.at, s.at) * 1000:6.1f}ms"
        )


async def soak(daemons: Daemons, figures: dict[str, Any], seconds: float) -> None:
    """Soak a daemon for ``seconds``, report the figures, check it stayed flat, run the oracle."""
    seed = random.randrange(1 << 30)
    window = max(15.0, seconds / 10)
    daemon = daemons.start(
        {
            # Forget idempotency keys under the load too, so their table stops growing.
            "idempotency_window": window,
            "cleanup_interval": window / 3,
            "log_level": "warning",
        }
    )
    clients_cpu = time.process_time()
    outcome = await soak_run(daemon, seconds, seed)
    clients_cpu = time.process_time() - clients_cpu
    daemon_cpu = cpu_seconds(daemon.pid)
    assert daemon.stop(signal.SIGTERM) == 0, daemon.stderr()[-4000:]

    acked = {i: outcome.acked[i] for i in outcome.live}
    found = stored(daemon.db_path)
    losses = sum(1 for i, checksum in acked.items() if found.get(i) != checksum)
    losses += sum(1 for i in outcome.deleted if i in found)
    quarter = Quarters.of(outcome, seconds)
    latencies = by_kind(outcome)
    figures.update(
        rounds=outcome.reader_passes,
        operations=sum(outcome.operations.values()),
        acknowledged=len(outcome.acked),
        losses=losses,
        seconds=round(seconds),
        seed=seed,
        by_kind=dict(sorted(outcome.operations.items())),
        expected=dict(sorted(outcome.expected.items())),
        errors=len(outcome.errors),
        live_at_end=len(acked),
        deleted=len(outcome.deleted),
        rss_mb_start=round(outcome.samples[0].rss / MB, 1),
        rss_mb_first_last=megabytes(quarter.rss()),
        fds_first_last=quarter.fds(),
        wal_mb_first_last=megabytes(quarter.wal()),
        wal_mb_max=round(max(s.wal for s in outcome.samples) / MB, 1),
        db_mb_first_last=megabytes(quarter.db()),
        p50_ms={kind: milliseconds(values, 0.5) for kind, values in latencies.items()},
        p99_ms={kind: milliseconds(values, 0.99) for kind, values in latencies.items()},
        create_p99_ms_first_last=(
            round(quarter.create_p99_first * 1000, 1),
            round(quarter.create_p99_last * 1000, 1),
        ),
        cpu_s_daemon_clients=(round(daemon_cpu, 1), round(clients_cpu, 1)),
        samples=len(outcome.samples),
    )
    print_timeline(outcome)

    assert outcome.errors == [], outcome.errors[:20]
    assert outcome.operations["create"] > 0
    assert outcome.reader_passes >= 1
    rss_first, rss_last = quarter.rss()
    caches_filled = outcome.samples[0].rss + SQLITE_CACHES + RSS_SLACK
    rss_bound = max(rss_first * RSS_GROWTH + RSS_SLACK, caches_filled)
    assert rss_last <= rss_bound, (rss_first, rss_last, rss_bound)
    fds_first, fds_last = quarter.fds()
    assert fds_last <= fds_first + FD_SLACK
    wal_first, wal_last = quarter.wal()
    assert max(s.wal for s in outcome.samples) <= WAL_BOUND
    assert wal_last <= wal_first + WAL_SLACK
    assert percentile(latencies["create"], 0.99) <= CREATE_P99_BOUND
    assert quarter.create_p99_last <= CREATE_P99_RATIO * max(
        quarter.create_p99_first, CREATE_P99_FLOOR
    )
    assert losses == 0
    verdict = await check_store(daemon.db_path, acked=acked, deleted=outcome.deleted)
    assert verdict.acknowledged == len(acked)


async def test_soak_short(daemons: Daemons, figures: dict[str, Any]) -> None:
    """A short soak (the long one's code): memory, fds and WAL stay flat, nothing is lost."""
    await soak(daemons, figures, SHORT_SECONDS)


@pytest.mark.slow
async def test_soak(daemons: Daemons, figures: dict[str, Any]) -> None:
    """32 clients and a long reader for SOAK_SECONDS (10 min): flat, within p99, nothing lost."""
    await soak(daemons, figures, SOAK_SECONDS)
