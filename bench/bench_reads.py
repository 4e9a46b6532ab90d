"""Read side at scale: search (selective, common, prefix), stats, and restore of a 64 KB checkpoint.

Loads N checkpoints (create_batch, durability=normal to load quickly), then times each query
many times and prints p50/p99. Usage:
    python bench/bench_reads.py --n 100000 [--n 1000000] [--json bench/reads.json]
A database is kept per size under BENCH_DIR (default /tmp) so later runs skip the load.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from checkpointd import CheckpointManager

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
BATCH = 1000


def item(i: int) -> dict[str, Any]:
    """A checkpoint whose name holds a unique word, a rare word, and a word shared by all."""
    return {
        "name": f"checkpoint run{i} {WORDS[i % len(WORDS)]}",
        "sessionId": f"s-{i % 1000}",
        "snapshot": {"state": {"progress": i % 101, "step": i}},
        "branches": ["main"],
        "metadata": {
            "feature": f"feature-{i % 50}",
            "priority": ["low", "normal", "high", "critical"][i % 4],
            "author": f"dev-{i % 20}",
            "description": "milestone" if i % 10_000 == 0 else "routine",
            "tags": ["bench", f"t{i % 7}"],
        },
    }


async def load(path: Path, n: int) -> None:
    async with CheckpointManager(database_path=str(path), durability="normal") as m:
        have = (await m.get_checkpoint_stats()).total_checkpoints
        for start in range(have, n, BATCH):
            await m.create_batch([item(i) for i in range(start, min(start + BATCH, n))])


async def timed(fn: Callable[[], Awaitable[Any]], runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "runs": runs}


async def measure(path: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"checkpoints": n}
    async with CheckpointManager(database_path=str(path)) as m:
        queries = {
            "search selective (run12345)": lambda: m.search_checkpoints("run12345", 10),
            "search rare (milestone)": lambda: m.search_checkpoints("milestone", 10),
            "search common (checkpoint)": lambda: m.search_checkpoints("checkpoint", 10),
            "search prefix (char*)": lambda: m.search_checkpoints("char", 10),
            "search + filters": lambda: m.search_checkpoints(
                {"query": "alpha", "filters": {"priority": ["high"], "tags": ["t3"]}}
            ),
            "stats": m.get_checkpoint_stats,
        }
        for label, fn in queries.items():
            out[label] = await timed(fn, 50)
        cp = await m.create(
            name="restore-64k",
            session_id="restore-bench",
            snapshot={"state": {"blob": "x" * 64 * 1024, "config": {"v": 1}}},
            branches=["main"],
        )
        out["restore 64 KB (merge)"] = await timed(
            lambda: m.restore_checkpoint(cp.id, merge_strategy="merge"), 30
        )
    return out


async def main(sizes: list[int]) -> list[dict[str, Any]]:
    base = Path(os.environ.get("BENCH_DIR", tempfile.gettempdir()))
    results = []
    for n in sizes:
        path = base / f"checkpointd-bench-{n}.db"
        start = time.perf_counter()
        await load(path, n)
        print(f"\n{n:,} checkpoints (loaded in {time.perf_counter() - start:.0f} s)")
        result = await measure(path, n)
        for label, figures in result.items():
            if isinstance(figures, dict):
                p50, p99 = figures["p50_ms"], figures["p99_ms"]
                print(f"  {label:<32} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms")
        results.append(result)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, action="append", default=None)
    parser.add_argument("--json", default="bench/reads.json")
    args = parser.parse_args()
    report = asyncio.run(main(args.n or [100_000]))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
    }
    Path(args.json).write_text(json.dumps({"meta": meta, "results": report}, indent=2))
