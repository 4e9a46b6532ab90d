"""The projector's wake-ups: no commit waits for the projector's idle poll to be seen.

The owner wakes the projector after commits (and at once for a waiting read) and sends no
other wake-up until the projector reports a position. A projector that took a wake-up for
events its step under way had already applied, then slept without reporting, left every later
commit, and every read waiting for one, to its idle poll: half a second, made a minute here so
that such a stall fails the test instead of passing for slowness.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from checkpointd import CheckpointManager, consistency
from checkpointd.views import tail

ROUNDS = 20
CALLERS = 64


async def _creates(store: CheckpointManager, names: Iterator[str]) -> int:
    """Create a checkpoint per name; the log position of the last one."""
    last = 0
    for name in names:
        await store.create(name=name, session_id="load", snapshot={"n": name}, branches=["m"])
        last = max(last, consistency.answered_at.get())
    return last


async def _read_after_create(store: CheckpointManager, names: Iterator[str]) -> int:
    """Create, then read it at once: a read waiting for the views wakes the projector."""
    last = 0
    for name in names:
        created = await store.create(name=name, session_id="reader", snapshot={}, branches=["m"])
        last = consistency.answered_at.get()
        assert await store.get_checkpoint(created.id) is not None
    return last


async def _follow(store: CheckpointManager) -> None:
    """Wait for the position after the views' current one, again and again (as a subscriber
    following the views does): each wake-up reaches the projector right after its report,
    while it may be finishing a step that already holds every committed event."""
    while True:
        await store.wait_for_views(store.views_position + 1)


@pytest.mark.parametrize("round_size", [CALLERS, 4 * CALLERS])
async def test_every_commit_reaches_the_views_without_the_idle_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, round_size: int
) -> None:
    monkeypatch.setattr(tail, "POLL", 60.0)
    path = str(tmp_path / "w.db")
    async with CheckpointManager(database_path=path, projector="thread", read_timeout=10) as store:
        for round_ in range(ROUNDS):
            names = (f"r{round_}-{i}" for i in range(round_size))
            reads = (f"read{round_}-{i}" for i in range(round_size // 4))
            writers = asyncio.gather(
                _read_after_create(store, reads),
                *(_creates(store, names) for _ in range(CALLERS)),
            )
            following = asyncio.create_task(_follow(store))
            heads = await writers
            # Within read_timeout (10 s), not the patched poll (60 s): a lost wake-up fails here.
            assert await store.wait_for_views(max(heads)) >= max(heads)
            assert not following.done()  # it still waits: none of its waits timed out
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        page = await store.get_checkpoints_by_session("load", page_size=1)
        assert page.total == ROUNDS * round_size
        assert not list(itertools.islice(names, 1))
