"""What the CLI tests share: where the verbs go (a database file or a daemon), seeded
checkpoints, and ``cli(*argv)``, the command run in-process with its exit code and output."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from natsserver import NatsServer

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.cli import main
from checkpointd.models import Checkpoint

from .serving import DEADLINE, Daemon, daemons_under

Store = CheckpointManager | CheckpointClient


@dataclass(frozen=True)
class Target:
    """Where the verbs go: ``args`` select it on the command line, ``store`` opens it in the API."""

    name: str
    args: tuple[str, ...]
    store: Callable[[], AbstractAsyncContextManager[Store]]

    def api(self, call: Callable[[Store], Awaitable[Any]]) -> Any:
        """``call(store)`` through the Python API, from a test that has no event loop."""

        async def run() -> Any:
            async with self.store() as store:
                return await call(store)

        return asyncio.run(run())


@dataclass(frozen=True)
class Seeded:
    """Three checkpoints: ``first`` and ``second`` in ``session`` (feature ``feature``), ``other``
    in a session of its own."""

    session: str
    feature: str
    first: Checkpoint
    second: Checkpoint
    other: Checkpoint


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer) -> Iterator[Daemon]:
    """One daemon for the module's tests (they keep apart by session); stopped at the end."""
    with daemons_under(tmp_path_factory.mktemp("served"), nats_server.url) as daemons:
        yield daemons.start()


def manager_on(path: Path) -> Callable[[], AbstractAsyncContextManager[Store]]:
    @asynccontextmanager
    async def store() -> AsyncIterator[Store]:
        async with CheckpointManager(database_path=str(path)) as manager:
            yield manager

    return store


def client_of(daemon: Daemon) -> Callable[[], AbstractAsyncContextManager[Store]]:
    @asynccontextmanager
    async def store() -> AsyncIterator[Store]:
        async with CheckpointClient(
            daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE
        ) as client:
            yield client

    return store


@pytest.fixture
def db(tmp_path: Path) -> Target:
    """A new, empty database file (the verbs other than create open only existing ones)."""
    path = tmp_path / "cli.db"
    target = Target("db", ("--db", str(path)), manager_on(path))
    target.api(lambda store: store.health())
    return target


@pytest.fixture(params=["db", "daemon"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """A database file opened directly, or the module's daemon reached through its config."""
    if request.param == "db":
        return request.getfixturevalue("db")
    daemon: Daemon = request.getfixturevalue("served")
    assert daemon.config is not None
    return Target("daemon", ("--config", str(daemon.config)), client_of(daemon))


@pytest.fixture
def seeded(target: Target) -> Seeded:
    tag = uuid.uuid4().hex[:8]
    session, feature = f"s-{tag}", f"f-{tag}"

    async def seed(store: Store) -> list[Checkpoint]:
        made = []
        for name, where in ((f"alpha {tag}", session), (f"beta {tag}", session)):
            made.append(
                await store.create(
                    name=name,
                    session_id=where,
                    snapshot={"state": {"name": name}, "sessions": [where]},
                    branches=["main"],
                    metadata={"feature": feature},
                )
            )
        made.append(
            await store.create(
                name=f"gamma {tag}", session_id=f"o-{tag}", snapshot={"state": {}}, branches=["x"]
            )
        )
        return made

    first, second, other = target.api(seed)
    return Seeded(session, feature, first, second, other)


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``cli(*argv)``: ``checkpointd`` in-process; its exit code, stdout and stderr."""

    def run(*argv: str) -> Ran:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def as_json(value: Any) -> Any:
    """What ``--json`` prints for an API result: its wire form through JSON."""
    return json.loads(json.dumps(value.to_wire(), default=str))
