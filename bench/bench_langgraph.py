"""One LangGraph graph on LangGraph's ``AsyncSqliteSaver`` and on ``CheckpointdSaver``.

The graph has three nodes in a row (draft, edit, review), each rewriting ~1 KB of state (a text
and a revision counter), so a run is five checkpoints (LangGraph's input and start ones, one
per node) and a task's writes per node. Runs use ``durability="sync"``: a step ends once its
checkpoint is stored, so the step's time includes the saver's. A *step* is one node: its time
runs from the previous step's end (or the run's start, for the first node, which also covers
the first checkpoints) to the update ``astream`` yields for it.

Savers, each on a fresh database in a temporary directory, all durable (``synchronous=FULL``):
``AsyncSqliteSaver`` (langgraph-checkpoint-sqlite), ``CheckpointdSaver.from_path`` (in-process
``CheckpointManager``; its projector a thread, the default, then a process) and
``CheckpointdSaver.from_nats`` against a ``checkpointd serve`` this script starts (embedded
nats-server on a free loopback port). Each at 1 LangGraph thread and at
64 threads running at once (asyncio tasks on one loop), each thread running the graph again and
again for ``--seconds``. Ratio: steps per second over ``AsyncSqliteSaver``'s at the same
number of threads. ``InMemorySaver`` (nothing stored) comes first: what LangGraph itself costs
a step on this machine, the floor under every saver's figure.

Usage:
    python -m bench.bench_langgraph [--seconds 4] [--json bench/langgraph.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import string
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from bench.bench_ts import serving
from bench.timing import quantile
from checkpointd.langgraph import CheckpointdSaver

THREADS = (1, 64)
STATE_BYTES = 1000


class Document(TypedDict):
    text: str
    revision: int


def _text(seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + " ", k=STATE_BYTES))


def _node(name: str) -> Callable[[Document], dict[str, Any]]:
    def step(state: Document) -> dict[str, Any]:
        revision = state["revision"] + 1
        return {
            "text": f"{name}:{revision}:" + _text(revision)[len(name) + 8 :],
            "revision": revision,
        }

    return step


def build(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Document)
    for name in ("draft", "edit", "review"):
        builder.add_node(name, _node(name))
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "edit")
    builder.add_edge("edit", "review")
    builder.add_edge("review", END)
    return builder.compile(checkpointer=saver)


async def run_thread(graph: Any, thread_id: str, until: float, samples: list[int]) -> None:
    """Run the graph on one thread until ``until``; every step's time (ns) into ``samples``."""
    config = {"configurable": {"thread_id": thread_id}}
    revision = 0
    while time.monotonic() < until:
        start = time.perf_counter_ns()
        async for _ in graph.astream(
            {"text": _text(revision), "revision": revision},
            config,
            stream_mode="updates",
            durability="sync",
        ):
            end = time.perf_counter_ns()
            samples.append(end - start)
            start = end
        revision += 3


async def measure(graph: Any, threads: int, seconds: float, tag: str) -> dict[str, Any]:
    await asyncio.gather(  # warm up: caches, the first thread rows, the connection
        *(run_thread(graph, f"{tag}-warm-{n}", time.monotonic() + 0.3, []) for n in range(threads))
    )
    samples: list[int] = []
    started = time.perf_counter()
    until = time.monotonic() + seconds
    await asyncio.gather(*(run_thread(graph, f"{tag}-{n}", until, samples) for n in range(threads)))
    elapsed = time.perf_counter() - started
    ordered = sorted(samples)
    return {
        "threads": threads,
        "steps": len(samples),
        "seconds": elapsed,
        "steps_per_second": len(samples) / elapsed,
        "p50_ms": quantile(ordered, 0.50) / 1e6,
        "p99_ms": quantile(ordered, 0.99) / 1e6,
    }


Opener = Callable[[], AbstractAsyncContextManager[BaseCheckpointSaver[Any]]]


async def rows_for(name: str, open_saver: Opener, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for threads in THREADS:
        async with open_saver() as saver:
            row = await measure(build(saver), threads, seconds, f"{name}-{threads}")
        rows.append({"saver": name, **row})
        print(f"  {name} at {threads} thread(s): {row['steps_per_second']:.0f} steps/s", flush=True)
    return rows


def _sqlite(path: Path) -> Opener:
    def open_() -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]:
        return AsyncSqliteSaver.from_conn_string(str(path))

    return open_


def _in_process(path: Path, **settings: Any) -> Opener:
    return lambda: CheckpointdSaver.from_path(str(path), **settings)


def _over_nats(url: str) -> Opener:
    return lambda: CheckpointdSaver.from_nats(url)


@asynccontextmanager
async def _in_memory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
    yield InMemorySaver()


async def run(directory: Path, url: str, seconds: float) -> list[dict[str, Any]]:
    rows = await rows_for("InMemorySaver (floor)", _in_memory, seconds)
    rows += await rows_for("AsyncSqliteSaver", _sqlite(directory / "sqlite.db"), seconds)
    rows += await rows_for("checkpointd in-process", _in_process(directory / "cp.db"), seconds)
    projector = _in_process(directory / "cp-process.db", projector="process")
    rows += await rows_for("  projector=process", projector, seconds)
    rows += await rows_for("checkpointd over NATS", _over_nats(url), seconds)
    base = {
        row["threads"]: row["steps_per_second"]
        for row in rows
        if row["saver"] == "AsyncSqliteSaver"
    }
    for row in rows:
        row["ratio"] = row["steps_per_second"] / base[row["threads"]]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("LangGraph steps (3 nodes, ~1 KB state, durability=sync, synchronous=FULL)")
    print(
        f"{'saver':<23} {'threads':>7} {'steps':>7} {'steps/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['saver']:<23} {r['threads']:>7} {r['steps']:>7} {r['steps_per_second']:>8.0f}"
            f" {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['ratio']:>6.2f}"
        )
    print("ratio: steps per second over AsyncSqliteSaver's at the same number of threads")
    print("load average at the end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time per row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-langgraph-") as name:
        directory = Path(name)
        with serving(directory) as url:
            rows = asyncio.run(run(directory, url, args.seconds))
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
