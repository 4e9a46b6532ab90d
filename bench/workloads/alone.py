"""checkpointd alone, where the peers have nothing equivalent: search, stats, restore.

Search and stats run on the largest populated checkpointd database; restore (a 64 KB
checkpoint, merged into the session's current state) on a fresh file, since it writes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.datasets import Datasets
from bench.report import Table
from bench.stores import ours
from bench.timing import drive
from checkpointd import CheckpointManager

WARMUP = 5
Query = Callable[[], Awaitable[Any]]


def queries(m: CheckpointManager, stored: int) -> dict[str, Query]:
    unique = f"run{stored // 2 + 1} "  # trailing space: no prefix match, exactly one checkpoint
    filtered = {"query": "alpha", "filters": {"priority": ["high"], "tags": ["t3"]}}
    return {
        f"search selective ({unique.strip()!r}, 1 match)": lambda: m.search_checkpoints(unique, 10),
        "search rare ('milestone', 1 in 10,000)": lambda: m.search_checkpoints("milestone", 10),
        "search common ('checkpoint', every row)": lambda: m.search_checkpoints("checkpoint", 10),
        "search + filters ('alpha', high, tag t3)": lambda: m.search_checkpoints(filtered),
        "stats": m.get_checkpoint_stats,
    }


def timed(query: Query) -> Callable[[int], Awaitable[Any]]:
    """The driver tells async ops by ``async def``; a lambda returning a coroutine is not one."""

    async def call(_: int) -> Any:
        return await query()

    return call


async def run(datasets: Datasets) -> list[Table]:
    scale = datasets.scale
    loaded = await datasets.get(ours.NAME, max(scale.stored))
    table = Table(
        f"checkpointd alone: search, stats, restore; {loaded.stored:,} stored", key="alone"
    )
    table.label = "operation"
    async with ours.open_store(loaded.path) as store:
        for label, query in queries(store.manager, loaded.stored).items():
            table.add(label, await drive(timed(query), scale.queries, warmup=WARMUP))

    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        async with ours.open_store(Path(tmp) / "restore.db") as store:
            m = store.manager
            cp = await m.create(
                name="restore-64k",
                session_id="restore-bench",
                snapshot={"state": {"blob": "x" * 64 * 1024, "config": {"v": 1}}},
                branches=["main"],
            )

            async def restore() -> Any:
                return await m.restore_checkpoint(cp.id, merge_strategy="merge")

            figure = await drive(timed(restore), scale.queries, warmup=WARMUP)
            table.add("restore 64 KB checkpoint (merge)", figure, "fresh file; a durable write")
    table.notes.append("1 caller; no peer has these, so no ratio")
    print(table.render(), flush=True)
    return [table]
