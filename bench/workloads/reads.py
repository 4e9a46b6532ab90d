"""Reads over N stored checkpoints: by id, the latest of a session, the newest 10 of a session.

Each query is timed ``scale.reads`` times at 1 caller, on inputs sampled (the same seed for
every store) from what was stored: sessions of 100 checkpoints, ids picked at random. Bare
SQLite fetches the same rows from checkpointd's files (its views, with its log attached for the
blobs) with a plain ``sqlite3`` query and decodes nothing, so the ratio to it is checkpointd's
whole read path over the query alone; bare aiosqlite runs the same queries through ``aiosqlite``
(the thread hop an asyncio store pays).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from bench import data
from bench.datasets import Datasets
from bench.population import Populated
from bench.report import Table
from bench.stores import bare_sqlite, eventsourcing_sqlite, langgraph_sqlite, ours
from bench.timing import Op, drive

WARMUP = 20


def by_index(op: Callable[[Any], Any], inputs: list[Any]) -> Op:
    """``op`` applied to the i-th input, keeping ``op``'s kind (async or not) for the driver."""
    if inspect.iscoroutinefunction(op):

        async def call_async(i: int) -> Any:
            return await op(inputs[i % len(inputs)])

        return call_async

    def call(i: int) -> Any:
        return op(inputs[i % len(inputs)])

    return call


def describe(loaded: Populated) -> str:
    note = f"{loaded.stored:,} stored"
    if not loaded.reached_target:
        note += f" (load deadline: target {loaded.target:,} not reached)"
    return note


async def run(datasets: Datasets) -> list[Table]:
    scale = datasets.scale
    tables = []
    for size in scale.stored:
        loads = {name: await datasets.get(name, size) for name in datasets.stores()}
        tables += await measure(size, loads, scale.reads)
    return tables


async def measure(size: int, loads: dict[str, Populated], n: int) -> list[Table]:
    get = Table(f"get by id, {size:,} stored", key=f"get-{size}")
    latest = Table(
        f"latest checkpoint of a session (with its snapshot), {size:,} stored",
        key=f"latest-{size}",
    )
    list10 = Table(f"newest 10 of a session, {size:,} stored", key=f"list10-{size}")
    seed = size

    def sessions(loaded: Populated) -> list[str]:
        count = loaded.stored // data.SESSION_SIZE
        return [f"s-{s}" for s in data.sample(n, count, seed)]

    cpd = loads[ours.NAME]
    async with ours.open_store(cpd.path) as store:
        ids = await store.refs(n, seed, cpd.stored)
        note = describe(cpd)
        get.add(store.name, await drive(by_index(store.get, ids), n, warmup=WARMUP), note)
        names = sessions(cpd)
        latest.add(store.name, await drive(by_index(store.latest, names), n, warmup=WARMUP), note)
        list10.add(
            store.name,
            await drive(by_index(store.list10, names), n, warmup=WARMUP),
            note + "; rows without snapshots (the API's default)",
        )
        list10.add(
            f"{store.name} +snapshots",
            await drive(by_index(store.list10_snapshots, names), n, warmup=WARMUP),
            note + "; include_snapshot=True",
        )
    with bare_sqlite.open_reads(cpd.path) as bare:
        note = "same rows from checkpointd's files, not decoded"
        get.add(bare.name, await drive(by_index(bare.get, ids), n, warmup=WARMUP), note)
        latest.add(bare.name, await drive(by_index(bare.latest, names), n, warmup=WARMUP), note)
        list10.add(bare.name, await drive(by_index(bare.list10, names), n, warmup=WARMUP), note)
        list10.add(
            f"{bare.name} +snapshots",
            await drive(by_index(bare.list10_snapshots, names), n, warmup=WARMUP),
            note + ", with blobs",
        )
    async with bare_sqlite.open_async_reads(cpd.path) as bare_async:
        note = "same queries through aiosqlite, not decoded"
        for table, op, inputs in (
            (get, bare_async.get, ids),
            (latest, bare_async.latest, names),
            (list10, bare_async.list10, names),
        ):
            table.add(bare_async.name, await drive(by_index(op, inputs), n, warmup=WARMUP), note)

    lg = loads[langgraph_sqlite.NAME]
    async with langgraph_sqlite.open_store(lg.path) as lg_store:
        refs = await lg_store.refs(n, seed, lg.stored)
        note = describe(lg)
        names = sessions(lg)
        get.add(lg_store.name, await drive(by_index(lg_store.get, refs), n, warmup=WARMUP), note)
        latest.add(
            lg_store.name, await drive(by_index(lg_store.latest, names), n, warmup=WARMUP), note
        )
        list10.add(
            lg_store.name,
            await drive(by_index(lg_store.list10, names), n, warmup=WARMUP),
            note + "; alist(limit=10), full checkpoints",
        )

    es = loads[eventsourcing_sqlite.NAME]
    async with eventsourcing_sqlite.open_store(es.path) as es_store:
        es_refs = await es_store.refs(n, seed, es.stored)
        note = describe(es)
        names = sessions(es)
        get.add(es_store.name, await drive(by_index(es_store.get, es_refs), n, warmup=WARMUP), note)
        latest.add(
            es_store.name,
            await drive(by_index(es_store.latest, names), n, warmup=WARMUP),
            note + "; repository.get (replays the stream)",
        )
        latest.add(
            f"{es_store.name} last event",
            await drive(by_index(es_store.latest_event, names), n, warmup=WARMUP),
            note + "; events.get(desc, limit=1)",
        )
        list10.add(
            es_store.name,
            await drive(by_index(es_store.list10, names), n, warmup=WARMUP),
            note + "; events.get(desc, limit=10)",
        )
    tables = [get, latest, list10]
    for table in tables:
        table.notes.append("1 caller; ratio: checkpointd ops/s / the row's ops/s")
        print(table.render(), flush=True)
    return tables
