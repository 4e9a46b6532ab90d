"""Fixtures for the fault scenarios: daemons as real processes, the oracle at the end.

``daemons`` starts ``checkpointd serve`` processes (``daemon.serving.Daemons``) against the
session's nats-server unless a test asks for another; each gets a subject prefix of its own.
Every test runs in its own working directory with no ``CHECKPOINTD_*`` variable from the shell.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon.serving import INHERITED, Daemons, daemons_under
from natsserver import NatsServer


@pytest.fixture(autouse=True)
def clean_process_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CHECKPOINTD_") or name in INHERITED:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def daemons(tmp_path: Path, nats_server: NatsServer) -> Iterator[Daemons]:
    """Start ``checkpointd serve`` processes; stopped and checked at teardown."""
    with daemons_under(tmp_path, nats_server.url) as factory:
        yield factory
