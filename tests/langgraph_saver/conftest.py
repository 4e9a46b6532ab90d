"""Fixtures for the LangGraph checkpointer: a saver in-process, or over NATS to a daemon.

``open_saver`` is a factory of ``CheckpointdSaver`` context managers, parametrised: on an
in-process ``CheckpointManager`` (a database file in ``tmp_path``), or on a ``CheckpointClient``
talking to a real ``checkpointd serve`` process (started once per test, on the session's
nats-server; those variants are marked ``system``). Every saver one test opens shares one
store, so what one saver wrote another reads, as two processes of an application would.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from daemon.conftest import daemons  # noqa: F401 - the fixture, for the NATS variants
from daemon.serving import Daemons

from checkpointd.langgraph import CheckpointdSaver

OpenSaver = Callable[[], AbstractAsyncContextManager[CheckpointdSaver]]


@pytest.fixture(params=["in_process", pytest.param("over_nats", marks=pytest.mark.system)])
def open_saver(request: pytest.FixtureRequest, tmp_path: Path) -> OpenSaver:
    """``async with open_saver() as saver:`` a saver on this test's store."""
    if request.param == "in_process":
        path = tmp_path / "cp.db"
        return lambda: CheckpointdSaver.from_path(str(path))
    factory: Daemons = request.getfixturevalue("daemons")
    daemon = factory.start()
    return lambda: CheckpointdSaver.from_nats(daemon.url, prefix=daemon.prefix)
