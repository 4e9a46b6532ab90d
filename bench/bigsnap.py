"""Big snapshots in a child process: ``python -m bench.bigsnap MODE SIZE_MB COUNT DIR``.

``throughput``: COUNT distinct snapshots of SIZE_MB created, then each read back by id; MB/s of
canonical snapshot bytes. ``rss``: one create of SIZE_MB; the process's peak RSS (``ru_maxrss``)
over its RSS once the snapshot was built (the caller must hold the input anyway).
``tracemalloc``: the same create under ``tracemalloc``; the peak of Python allocations during it
(every thread, the writer's included). Prints one JSON object. A child per measurement keeps
peaks apart and the parent's memory out of them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench import data
from bench.timing import figure
from checkpointd import CheckpointManager

MB = 1024 * 1024


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def throughput(size_mb: int, count: int, path: Path) -> dict[str, Any]:
    snapshots = [data.big_snapshot(size_mb * MB) for _ in range(count)]
    async with CheckpointManager(database_path=str(path)) as m:
        created, ids, total = [], [], 0
        start = time.perf_counter()
        for j, snapshot in enumerate(snapshots):
            begin = time.perf_counter_ns()
            cp = await m.create(
                name=f"big-{j}", session_id="big", snapshot=snapshot, branches=["main"]
            )
            created.append(time.perf_counter_ns() - begin)
            ids.append(cp.id)
            total += cp.size
        create_s = time.perf_counter() - start
        read = []
        start = time.perf_counter()
        for checkpoint_id in ids:
            begin = time.perf_counter_ns()
            assert await m.get_checkpoint(checkpoint_id) is not None
            read.append(time.perf_counter_ns() - begin)
        read_s = time.perf_counter() - start
    return {
        "snapshot_bytes": total // count,
        "create": figure(created, create_s).to_json() | {"mb_per_s": total / MB / create_s},
        "get": figure(read, read_s).to_json() | {"mb_per_s": total / MB / read_s},
    }


async def peak(size_mb: int, path: Path, traced: bool) -> dict[str, Any]:
    snapshot = data.big_snapshot(size_mb * MB)
    async with CheckpointManager(database_path=str(path)) as m:
        await m.create(name="warm", session_id="big", snapshot={"state": {}}, branches=["main"])
        gc.collect()
        before = rss_bytes()
        if traced:
            tracemalloc.start()
        start = time.perf_counter()
        cp = await m.create(name="big", session_id="big", snapshot=snapshot, branches=["main"])
        seconds = time.perf_counter() - start
        traced_peak = tracemalloc.get_traced_memory()[1] if traced else None
        tracemalloc.stop()
    result: dict[str, Any] = {"snapshot_bytes": cp.size, "create_seconds": seconds}
    if traced:
        result["tracemalloc_peak_bytes"] = traced_peak
    else:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result |= {"rss_before_bytes": before, "peak_rss_growth_bytes": peak_rss - before}
    return result


def main() -> None:
    mode, size_mb, count, directory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    path = Path(directory) / f"big-{mode}.db"
    if mode == "throughput":
        result = asyncio.run(throughput(size_mb, count, path))
    else:
        result = asyncio.run(peak(size_mb, path, traced=mode == "tracemalloc"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
