"""Fixtures for the fault scenarios: daemons as real processes, the oracle at the end.

``daemons`` starts ``checkpointd serve`` processes (``daemon.serving.Daemons``) against the
session's nats-server unless a test asks for another; each gets a subject prefix of its own.
Every test runs in its own working directory with no ``CHECKPOINTD_*`` variable from the shell.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


FIGURES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A scenario's figures for RELIABILITY.md: fill in ``rounds``, ``operations``,
    ``acknowledged`` and ``losses`` (and anything else worth reporting).

    They are printed at the end of the run and, with ``--faults-report PATH``, written there.
    """
    found: dict[str, Any] = {}
    yield found
    if found:
        request.config.stash.setdefault(FIGURES, []).append({"test": request.node.nodeid, **found})


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rows = config.stash.get(FIGURES, [])
    if not rows:
        return
    terminalreporter.section("fault scenarios: figures")
    for row in rows:
        rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "test")
        terminalreporter.write_line(f"{row['test']}: {rest}")
    path = config.getoption("--faults-report")
    if path:
        Path(path).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
