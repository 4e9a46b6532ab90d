"""Creates: 1 KB JSON-like state, durable, at 1 and 64 concurrent callers, on a fresh file each.

checkpointd runs twice, once per ``Config.projector`` ("thread", the embedded default, and
"process"): a create is acknowledged once its event is committed to the log, and the projector
builds the views from the log behind it, so the setting can change what a create costs.
checkpointd and LangGraph are driven by coroutines on one event loop; eventsourcing and bare
SQLite by threads (a ``ThreadPoolExecutor`` of 64 at 64). Each store gets 64 untimed creates
first. Bare SQLite is the floor: one commit per insert at 1 caller; at 64, a single caller
committing every 64 inserts (the group commit the stores could do, without any store around it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.datasets import Datasets
from bench.report import Table
from bench.stores import bare_sqlite, eventsourcing_sqlite, langgraph_sqlite, ours
from bench.timing import drive

WARMUP = 64
PEERS = (langgraph_sqlite, eventsourcing_sqlite)


async def run(datasets: Datasets) -> list[Table]:
    scale = datasets.scale
    tables = []
    for concurrency, n in ((1, scale.creates_1), (64, scale.creates_64)):
        table = Table(
            f"create, 1 KB snapshot, durable, {concurrency} concurrent caller(s)",
            key=f"create-{concurrency}",
        )
        for projector in ours.PROJECTORS:
            with tempfile.TemporaryDirectory(prefix="bench-create-") as tmp:
                async with ours.open_store(Path(tmp) / "store.db", projector=projector) as store:
                    figure = await drive(store.create, n, concurrency, WARMUP)
            default = " (the embedded default)" if projector == ours.PROJECTORS[0] else ""
            table.add(ours.label(projector), figure, f"projector={projector}{default}")
        for module in PEERS:
            with tempfile.TemporaryDirectory(prefix="bench-create-") as tmp:
                async with module.open_store(Path(tmp) / "store.db") as peer:
                    table.add(peer.name, await drive(peer.create, n, concurrency, WARMUP))
        with tempfile.TemporaryDirectory(prefix="bench-create-") as tmp:
            group = 1 if concurrency == 1 else 64
            with bare_sqlite.open_writes(Path(tmp) / "bare.db", group) as bare:
                figure = await drive(bare.create, n, 1, WARMUP)
            note = "1 commit per insert" if group == 1 else "1 caller, 1 commit per 64 inserts"
            table.add(bare_sqlite.NAME, figure, note)
        table.notes.append("ratio: checkpointd (projector=thread) creates/s / the row's creates/s")
        tables.append(table)
        print(table.render(), flush=True)
    return tables
