"""Fixtures for the fault scenarios: daemons as real processes, the oracle at the end.

``daemons`` starts ``checkpointd serve`` processes (``daemon.serving.Daemons``) against the
session's nats-server unless a test asks for another; each gets a subject prefix of its own.
Every test runs in its own working directory with no ``CHECKPOINTD_*`` variable from the shell.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon.conftest import clean_process_environment, daemons

# The daemon tests' fixtures: ``daemons`` (a factory of ``checkpointd serve`` processes, checked
# at teardown) and, autouse, no CHECKPOINTD_* from the shell and a working directory per test.
__all__ = ["clean_process_environment", "daemons"]


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
