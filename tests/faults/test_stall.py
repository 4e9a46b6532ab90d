"""Stalls: nothing a snapshot's size decides runs on the event loop or the writer thread.

A daemon has one event loop: health checks, the systemd watchdog and every other request wait
while it decodes or encodes a snapshot, so those run on worker threads, and a list page whose
snapshots would be too big to hold is refused before any of them is read.

What runs where is observed, not timed: a profile hook (``ThreadWatch``) records, per thread,
how many bytes each call of the snapshot codec and the wire codec handled while real requests
go through a real nats-server to the service in this process. Nothing is replaced.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import nats
import pytest
from conftest import OpenManager, damage_blob, serving
from contract import CONTENT_TYPE, ERROR_CODE, JSON
from nats.aio.client import Client
from natsserver import NatsServer, start_nats_server

from checkpointd import CheckpointManager, rows, wire
from checkpointd.daemon import service
from checkpointd.errors import IntegrityError, TooLargeError
from checkpointd.snapshots import blob, canonical

MB = 1024 * 1024
LOOP_LIMIT = 256 * 1024  # the most snapshot bytes one call may handle on the event loop
WRITER_LIMIT = 64 * 1024  # ... or on the writer thread (small snapshots are encoded there)
DEADLINE = 60.0
BIG = "x" * (900 * 1024)  # gzip makes about 1 KB of it: small as stored, big as decoded

Store = Any


def big_snapshot(tag: str) -> dict[str, Any]:
    return {"state": {"tag": tag, "log": BIG}}


@pytest.fixture
async def manager(open_manager: OpenManager) -> CheckpointManager:
    """A manager whose snapshots, and list pages of them, may reach 2 MB."""
    return await open_manager(max_checkpoint_size=2 * MB)


# -- a page too big to hold -----------------------------------------------------------------


async def test_a_page_over_the_limit_is_refused_before_any_snapshot_is_read(
    store: Store, manager: CheckpointManager, db_path: Path
) -> None:
    """A page whose snapshots total more than max_checkpoint_size is a TooLargeError telling
    the caller what to do, raised before any blob is read: damaged blobs go unnoticed."""
    created = [
        await store.create(
            name=f"cp-{n}", session_id="s", snapshot=big_snapshot(str(n)), branches=[]
        )
        for n in range(3)
    ]
    for checkpoint in created:
        damage_blob(db_path, checkpoint.id)
    with pytest.raises(TooLargeError, match=r"lower pageSize, or leave snapshots out"):
        await store.get_checkpoints_by_session("s", page_size=3, include_snapshot=True)
    # A page within the limit does read its blobs, and finds the damage.
    with pytest.raises(IntegrityError, match="compressed snapshot is corrupt"):
        await store.get_checkpoints_by_session("s", page_size=2, include_snapshot=True)
    listed = await store.get_checkpoints_by_session("s", page_size=3)
    assert [cp.size for cp in listed] == [created[0].size] * 3


async def test_a_page_of_one_is_never_refused(open_manager: OpenManager) -> None:
    """A page of one snapshot is served even when it alone is over a since lowered limit."""
    first = await open_manager(max_checkpoint_size=2 * MB)
    for n in range(2):
        await first.create(
            name=f"cp-{n}", session_id="s", snapshot=big_snapshot(str(n)), branches=[]
        )
    await first.close()
    lowered = await open_manager(max_checkpoint_size=512 * 1024)
    page = await lowered.get_checkpoints_by_session("s", page_size=1, include_snapshot=True)
    assert page.items[0].snapshot is not None
    assert page.items[0].snapshot["state"]["log"] == BIG
    with pytest.raises(TooLargeError, match="a page of 2 snapshots"):
        await lowered.get_checkpoints_by_session("s", page_size=2, include_snapshot=True)


# -- what runs on which thread --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    thread: str
    function: str
    size: int
    phase: str


Measure = tuple[str, Callable[[FrameType, Any], int]]


class ThreadWatch:
    """Records the codec calls of every thread: which thread, which function, how many bytes.

    ``sys.setprofile`` hooks this thread (the event loop's), ``threading.setprofile`` the
    threads started while it is installed (the writer, the readers, the worker threads), so
    the manager must be opened inside. Calls are recorded only inside ``phase(name)``.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._phase: str | None = None
        self._lock = threading.Lock()

        def returned(_: FrameType, value: Any) -> int:
            return len(value) if isinstance(value, bytes | str) else 0

        def argument(name: str) -> Callable[[FrameType, Any], int]:
            return lambda frame, _: len(frame.f_locals[name] or b"")

        measures: dict[Any, Measure] = {
            blob.SnapshotCodec.open: ("return", returned),  # the bytes a blob opened to
            blob.SnapshotCodec.encode_canonical: ("call", argument("canonical")),
            canonical.canonical_encode: ("return", returned),
            wire.decode: ("call", argument("body")),
            wire.encode: ("return", returned),
            service._json: ("return", returned),
            rows.checkpoint_from_row: ("call", lambda _frame, _value: 1),
        }
        pieces = getattr(wire, "encode_in_pieces", None)
        if pieces is not None:
            measures[pieces] = ("return", returned)
        self._measures = {fn.__code__: (fn.__qualname__, *m) for fn, m in measures.items()}

    def _hook(self, frame: FrameType, event: str, value: Any) -> None:
        phase = self._phase
        if phase is None:
            return
        found = self._measures.get(frame.f_code)
        if found is None or found[1] != event:
            return
        name, _, measure = found
        call = Call(threading.current_thread().name, name, measure(frame, value), phase)
        with self._lock:
            self.calls.append(call)

    def __enter__(self) -> ThreadWatch:
        threading.setprofile(self._hook)
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *_: object) -> None:
        self._phase = None
        sys.setprofile(None)
        threading.setprofile(None)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._phase = name
        try:
            yield
        finally:
            self._phase = None

    def on(self, thread: str, phase: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.thread == thread and (phase is None or c.phase == phase)]


@pytest.fixture(scope="module")
def roomy_nats() -> Iterator[NatsServer]:
    """A nats-server whose messages may reach 16 MB, so no reply needs a chunked download."""
    server = start_nats_server(max_payload=16 * MB)
    yield server
    server.stop()


@pytest.fixture
async def nc(roomy_nats: NatsServer) -> AsyncIterator[Client]:
    connection = await nats.connect(roomy_nats.url)
    yield connection
    await connection.close()


def create_body(name: str, snapshot: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "sessionId": "s", "snapshot": snapshot, "branches": [], **fields}


async def request(nc: Client, subject: str, body: dict[str, Any]) -> Any:
    """A JSON request; the reply's result (decoded on a worker thread: it may be big)."""
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=DEADLINE)
    headers = reply.headers or {}
    assert ERROR_CODE not in headers, reply.data[:300]
    assert headers.get(CONTENT_TYPE) == JSON
    return await asyncio.to_thread(json.loads, reply.data)


async def test_nothing_snapshot_sized_runs_on_the_event_loop_or_the_writer_thread(
    open_manager: OpenManager, roomy_nats: NatsServer, nc: Client
) -> None:
    """Serving big snapshots (a create of one nested three levels deep, get, list, diff), the
    event loop's thread handles no call of more than 256 KB and the writer encodes none."""
    nested = {"a": {"b": {"c": BIG * 2}}}
    with ThreadWatch() as watch:
        manager = await open_manager(max_checkpoint_size=64 * MB)
        async with serving(manager, roomy_nats.url) as prefix:
            with watch.phase("serving"):
                created = await request(nc, f"{prefix}.create", create_body("nested", nested))
                others = [
                    await request(
                        nc, f"{prefix}.create", create_body(f"b{n}", big_snapshot(str(n)))
                    )
                    for n in range(3)
                ]
                got = await request(nc, f"{prefix}.get", {"id": created["id"]})
                page = await request(
                    nc,
                    f"{prefix}.list",
                    {"sessionId": "s", "includeSnapshot": True, "pagination": {"pageSize": 4}},
                )
                changes = await request(
                    nc, f"{prefix}.diff", {"from": others[0]["id"], "to": created["id"]}
                )
    assert got["snapshot"] == nested
    assert len(page["items"]) == 4
    assert changes["changes"]
    # The watch saw the big calls (on some thread): it does observe them.
    assert max(c.size for c in watch.calls) >= len(BIG)
    assert [c for c in watch.on("MainThread") if c.size > LOOP_LIMIT] == []
    assert [c for c in watch.on("checkpointd-writer") if c.size > WRITER_LIMIT] == []


async def test_a_lineage_page_builds_no_more_checkpoints_on_the_loop_than_it_holds(
    manager: CheckpointManager, roomy_nats: NatsServer, nc: Client
) -> None:
    """Asked for 10 of a checkpoint's 2,000 children, the event loop's thread builds at most
    10 checkpoints, and the reply says where the next page starts."""
    root = await manager.create(create_body("root", {}))
    parent = {"parentCheckpoint": root.id}
    for start in (0, 1000):
        children = [create_body(f"c{start + n}", {}, metadata=parent) for n in range(1000)]
        await manager.create_batch(children)
    async with serving(manager, roomy_nats.url) as prefix:
        with ThreadWatch() as watch, watch.phase("lineage"):
            lineage = await request(nc, f"{prefix}.lineage", {"id": root.id, "limit": 10})
    assert [cp["name"] for cp in lineage["descendants"]] == [f"c{n}" for n in range(10)]
    assert (lineage["ancestors"], lineage["next"]) == ([], 10)
    built = [c for c in watch.on("MainThread") if c.function == "checkpoint_from_row"]
    assert len(built) <= 10


async def test_lists_over_the_limit_are_refused_at_once_while_health_answers(
    manager: CheckpointManager, db_path: Path, roomy_nats: NatsServer, nc: Client
) -> None:
    """35 concurrent lists of a page over the limit all get 413 without a blob being read
    (their blobs are damaged), and health requests sent among them are answered."""
    for n in range(4):
        checkpoint = await manager.create(
            name=f"cp-{n}", session_id="s", snapshot=big_snapshot(str(n)), branches=[]
        )
        damage_blob(db_path, checkpoint.id)
    last_seq = await manager.health()
    async with serving(manager, roomy_nats.url) as prefix:
        body = {"sessionId": "s", "includeSnapshot": True, "pagination": {"pageSize": 200}}
        heavy = [
            nc.request(f"{prefix}.list", json.dumps(body).encode(), timeout=DEADLINE)
            for _ in range(35)
        ]
        health = [nc.request(f"{prefix}.health", b"{}", timeout=DEADLINE) for _ in range(5)]
        replies = await asyncio.gather(*heavy, *health)
    refused = [(r.headers or {}).get(ERROR_CODE) for r in replies[:35]]
    assert refused == ["413"] * 35
    assert all(b"pageSize" in r.data for r in replies[:35])
    answered = [json.loads(r.data) for r in replies[35:]]
    assert [a["lastSeq"] for a in answered] == [last_seq] * 5
    assert all(0 <= a["viewsSeq"] <= last_seq for a in answered), answered
