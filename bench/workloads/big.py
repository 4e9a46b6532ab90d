"""checkpointd alone: 1 MB snapshots (MB/s) and the peak memory of one big create.

Each measurement runs in its own child process (``bench.bigsnap``) on a fresh file. Peak
memory is measured two ways: growth of peak RSS over the RSS with the input already built, and
the ``tracemalloc`` peak of Python allocations during the create. The issue's target: under 4x
the snapshot's size for a 100 MB snapshot (``--scale full``; ``small`` measures 10 MB).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from typing import Any

from bench.datasets import Datasets
from bench.report import Listing

MB = 1024 * 1024


async def child(mode: str, size_mb: int, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bigsnap",
            mode,
            str(size_mb),
            str(count),
            tmp,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.bigsnap {mode} exited with {process.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


async def run(datasets: Datasets) -> list[Listing]:
    scale = datasets.scale
    speed = await child("throughput", 1, scale.snapshots_1mb)
    rate = Listing(
        f"checkpointd alone: 1 MB snapshots, {scale.snapshots_1mb} created then read by id",
        ["operation", "snapshot bytes", "MB/s", "p50 ms", "p99 ms"],
    )
    for op in ("create", "get"):
        f = speed[op]
        rate.rows.append(
            {
                "operation": op,
                "snapshot bytes": speed["snapshot_bytes"],
                "MB/s": f["mb_per_s"],
                "p50 ms": f["p50_ms"],
                "p99 ms": f["p99_ms"],
            }
        )
    rate.notes.append("durable, gzip (the defaults); MB = 2^20 bytes of canonical snapshot")
    print(rate.render(), flush=True)

    rss = await child("rss", scale.peak_mb, 1)
    traced = await child("tracemalloc", scale.peak_mb, 1)
    size = rss["snapshot_bytes"]
    memory = Listing(
        f"checkpointd alone: peak memory of one {scale.peak_mb} MB snapshot create",
        ["measure", "snapshot bytes", "peak bytes", "x snapshot", "create s"],
    )
    memory.rows.append(
        {
            "measure": "peak RSS growth",
            "snapshot bytes": size,
            "peak bytes": rss["peak_rss_growth_bytes"],
            "x snapshot": rss["peak_rss_growth_bytes"] / size,
            "create s": rss["create_seconds"],
        }
    )
    memory.rows.append(
        {
            "measure": "tracemalloc peak",
            "snapshot bytes": traced["snapshot_bytes"],
            "peak bytes": traced["tracemalloc_peak_bytes"],
            "x snapshot": traced["tracemalloc_peak_bytes"] / traced["snapshot_bytes"],
            "create s": traced["create_seconds"],
        }
    )
    memory.notes.append("each in its own child process; RSS growth is over the built input")
    print(memory.render(), flush=True)
    return [rate, memory]
