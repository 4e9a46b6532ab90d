"""checkpointd alone: creates over NATS at 1 and 64 in flight, beside in-process.

bench_nats.py's machinery: its own nats-server on a free loopback port, a fresh file and manager
per row, ``CheckpointService`` on its own connection, and the load from a separate process
(multiprocessing, spawn) through ``CheckpointClient`` (msgpack); 256 untimed creates, then
``scale.nats_seconds`` per row. The ratio here is in-process over NATS. Each pair runs once per
``Config.projector`` ("thread", the embedded manager's default; "process", what ``checkpointd
serve`` uses), the in-process row and the service's manager on the same setting.
"""

from __future__ import annotations

import uuid
from typing import Any

from bench.bench_nats import Load, Plan, in_process, nats_server, over_nats
from bench.datasets import Datasets
from bench.report import Table
from bench.stores import ours
from bench.timing import Figure

DURABILITY = "full"
IN_PROCESS = "checkpointd in-process"


def as_figure(result: dict[str, Any]) -> Figure:
    return Figure(
        ops=result["creates"],
        seconds=result["seconds"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        concurrency=result["concurrency"],
    )


async def run(datasets: Datasets) -> list[Table]:
    plan = Plan(datasets.scale.nats_seconds, None)
    tables = []
    async with nats_server() as server:
        for projector in ours.PROJECTORS:
            for concurrency in (1, 64):
                table = Table(
                    f"create over NATS, 1 KB snapshot, durable, {concurrency} in flight,"
                    f" projector={projector}",
                    key=f"nats-{concurrency}-{projector}",
                )
                local = await in_process(
                    concurrency, plan, DURABILITY, keyed=False, projector=projector
                )
                table.reference = IN_PROCESS
                table.add(IN_PROCESS, as_figure(local), "the manager in this process")
                prefix = f"b{uuid.uuid4().hex[:8]}.checkpoint"
                load = Load(server.url, prefix, "msgpack", concurrency, plan)
                remote = await over_nats(
                    server, load, DURABILITY, separate=True, projector=projector
                )
                cpu = {k: round(v, 1) for k, v in remote["cpu_us_per_create"].items()}
                table.add(
                    "checkpointd over NATS",
                    as_figure(remote),
                    "CheckpointClient in another process, msgpack",
                    cpu_us_per_create=cpu,
                )
                table.notes.append("ratio: in-process creates/s / creates/s over NATS")
                print(table.render(), flush=True)
                tables.append(table)
    return tables
