"""In-process creates: 1 KB JSON-like snapshot, durable (synchronous=FULL), every projection.

Prints throughput and p50/p99 latency at 1 and 64 concurrent callers and writes JSON.
Usage: python -m bench.bench_create [--n 20000] [--json bench/create.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import snapshot
from checkpointd import CheckpointManager


async def run(manager: CheckpointManager, n: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    counter = iter(range(n))
    # Payloads are made before timing: the figures are the store's, not the payload generator's.
    snapshots = [snapshot(i) for i in range(n)]

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await manager.create(
                name=f"cp-{i}",
                session_id=f"s-{i % 100}",
                snapshot=snapshots[i],
                branches=["main"],
                metadata={"feature": f"f{i % 10}", "author": "bench", "tags": ["bench"]},
            )
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {
        "concurrency": concurrency,
        "creates": n,
        "per_second": n / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


async def main() -> tuple[str, dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--json", default="bench/create.json")
    parser.add_argument("--durability", default="full")
    args = parser.parse_args()
    results = []
    for concurrency in (1, 64):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            db = str(Path(tmp) / "bench.db")
            async with CheckpointManager(database_path=db, durability=args.durability) as m:
                n = args.n if concurrency > 1 else max(args.n // 10, 1000)
                results.append(await run(m, n, concurrency))
    print(f"checkpointd in-process creates, 1 KB snapshot, durability={args.durability}")
    print(f"{'callers':>8} {'creates':>8} {'per s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(
            f"{r['concurrency']:>8} {r['creates']:>8} {r['per_second']:>10.0f}"
            f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
        )
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    return args.json, {"meta": meta, "results": results}


if __name__ == "__main__":
    out, report = asyncio.run(main())
    Path(out).write_text(json.dumps(report, indent=2))
