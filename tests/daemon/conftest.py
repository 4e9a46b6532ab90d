"""Fixtures for the daemon's tests: ``checkpointd serve`` run as systemd would run it.

``daemons`` starts daemons (see ``serving.Daemons``) against the session's nats-server unless a
test asks for the embedded one; each gets a subject prefix of its own, so tests sharing the
server stay apart. Every test runs in its own working directory with no ``CHECKPOINTD_*``
variable from the shell, so the CLI run in-process sees only what the test sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from natsserver import NatsServer

from .serving import INHERITED, Daemons, daemons_under


@pytest.fixture(autouse=True)
def clean_process_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CHECKPOINTD_") or name in INHERITED:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def structlog_as_it_was() -> Iterator[None]:
    """The CLI, run in-process, points structlog at the (captured) stderr of the moment; later
    tests must not log into a capture that is gone."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def daemons(tmp_path: Path, nats_server: NatsServer) -> Iterator[Daemons]:
    """Start ``checkpointd serve`` processes; stopped and checked at teardown."""
    with daemons_under(tmp_path, nats_server.url) as factory:
        yield factory
