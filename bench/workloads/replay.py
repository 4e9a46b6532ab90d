"""Replay: events per second from the log into the projections.

checkpointd: ``rebuild()`` builds the views (checkpoints view, FTS, stats, sessions, lineage) in
a fresh views file from the log's event 0, while reads keep being served from the old one, then
swaps the files; it returns the events it replayed. The issue's target is at 1M events
(``--scale full`` replays its 1M database).
eventsourcing: the idiomatic pull of a downstream projection — ``NotificationLogReader`` over the
application's notification log, 1,000 notifications per section, each mapped to its domain event
(``app.mapper.to_domain_event``) and applied to an in-memory projection (the latest checkpoint
and the count per session). Lighter work than checkpointd's (no SQL writes), so the ratio
flatters eventsourcing. LangGraph keeps no event log: no equivalent. Bare SQLite: checkpointd's
events table read in order, not decoded — the floor for reading the log.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from uuid import UUID

from eventsourcing.application import LocalNotificationLog
from eventsourcing.system import NotificationLogReader

from bench.datasets import Datasets
from bench.report import Table
from bench.stores import bare_sqlite, eventsourcing_sqlite, langgraph_sqlite, ours
from bench.timing import Figure

SECTION = 1000


def whole(ops: int, seconds: float) -> Figure:
    return Figure(ops=ops, seconds=seconds, p50_ms=None, p99_ms=None)


def project(store: eventsourcing_sqlite.EventSourcing) -> int:
    app = store.app
    log = LocalNotificationLog(app.recorder, section_size=SECTION)
    latest: dict[UUID, Any] = {}
    counts: Counter[UUID] = Counter()
    n = 0
    for section in NotificationLogReader(log, section_size=SECTION).select(start=1):
        for notification in section:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, eventsourcing_sqlite.Session.Checkpointed):  # type: ignore[attr-defined]
                latest[event.originator_id] = event
                counts[event.originator_id] += 1
            n += 1
    return n


async def run(datasets: Datasets) -> list[Table]:
    size = datasets.scale.replay_at
    table = Table(
        f"replay: events/s from the log into the projections, {size:,} stored", key="replay"
    )
    table.unit = "events/s"

    cpd = await datasets.get(ours.NAME, size)
    async with ours.open_store(cpd.path) as store:
        # Two passes: the first also reads the file into the page cache (after the other
        # workloads it may not be there); the second is the replay work alone.
        passes = ("first pass (log maybe not cached)", "second pass (log cached)")
        for number, note in enumerate(passes, 1):
            start = time.perf_counter()
            events = await store.manager.rebuild()
            table.add(
                store.name,
                whole(events, time.perf_counter() - start),
                f"rebuild() into a fresh views file, 5 projections; {note}",
                rebuild_pass=number,
            )

    table.add(langgraph_sqlite.NAME, None, "no event log")

    es = await datasets.get(eventsourcing_sqlite.NAME, size)
    async with eventsourcing_sqlite.open_store(es.path) as store:
        start = time.perf_counter()
        events = project(store)
        table.add(
            store.name,
            whole(events, time.perf_counter() - start),
            f"notification log, sections of {SECTION}, in-memory projection",
        )

    with bare_sqlite.open_reads(cpd.path) as bare:
        start = time.perf_counter()
        events = bare.replay()
        table.add(bare.name, whole(events, time.perf_counter() - start), "checkpointd's log read")
    table.notes.append("ratio: checkpointd's first pass events/s / the row's events/s")
    print(table.render(), flush=True)
    return [table]
