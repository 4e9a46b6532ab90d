"""Scenario 7: a notification subscriber too slow to keep up.

A raw nats-py subscription on ``<prefix>.events.>`` with a small pending limit
(``pending_msgs_limit``) whose handler is blocked (it waits on an event) while creates run: its
client drops what does not fit (slow consumer). The creates are not held up by it: they all
complete while it is blocked, with a median latency close to the one measured before it
subscribed, and a second, fast subscriber sees every ``seq`` published (the daemon dropped
nothing).

Unblocked, the subscriber does what docs/protocol.md tells a subscriber to do: the next notification
shows a jump in ``seq``, and it fetches the missing events from ``checkpoint.history``
(``after_seq`` paging with ``next``). It ends with every event exactly once, in order, each the
same event the log holds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import nats.errors
import pytest
from daemon.serving import DEADLINE, Daemon, Daemons
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from natsserver import subscribed

from checkpointd import CheckpointClient
from checkpointd.transport import barrier

from .oracle import check_store

PENDING = 16  # messages the slow subscription may hold before its client drops the rest
CONCURRENCY = 8
BASELINE = 100  # creates timed before the slow subscriber exists
HISTORY_PAGE = 50


class Witness:
    """A subscriber that keeps up: every ``seq`` it received, in order of arrival."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._arrived = asyncio.Event()

    async def run(self, sub: Subscription) -> None:
        async for msg in sub.messages:
            self.seqs.append(json.loads(msg.data)["seq"])
            self._arrived.set()

    async def reach(self, seq: int) -> None:
        """Return once a notification with ``seq`` (or later) has arrived."""
        async with asyncio.timeout(DEADLINE):
            while not self.seqs or max(self.seqs) < seq:
                self._arrived.clear()
                await self._arrived.wait()


class SlowSubscriber:
    """The subscriber under test: blocked until ``gate`` opens; then it rebuilds the event
    stream from what it received and, across a gap in ``seq``, from history."""

    def __init__(self, client: CheckpointClient, after: int) -> None:
        self.client = client
        self.gate = asyncio.Event()
        self.stream: list[tuple[int, str]] = []  # (seq, event id), as the subscriber sees it
        self.last = after  # the last seq it has
        self.received = 0
        self.recovered = 0
        self.gaps = 0
        self.dropped = 0  # messages its client threw away (slow consumer errors)
        self.sub: Subscription | None = None
        self.errors: list[Exception] = []
        self.idle = asyncio.Event()  # set when it has handled everything its client queued
        self._progress = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        """nats-py's error callback: slow consumer drops, and whatever ``handle`` raised."""
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.dropped += 1
        else:
            self.errors.append(exc)
            self._progress.set()
            self.idle.set()

    async def handle(self, msg: Msg) -> None:
        await self.gate.wait()
        body = json.loads(msg.data)
        seq = body["seq"]
        if seq <= self.last:  # already recovered from history
            return
        if seq > self.last + 1:
            self.gaps += 1
            await self.recover(up_to=seq - 1)
        assert seq == self.last + 1, (seq, self.last)
        self.stream.append((seq, body["id"]))
        self.received += 1
        self.last = seq
        self._progress.set()
        if self.sub is not None and self.sub.pending_msgs == 0:
            self.idle.set()

    async def recover(self, up_to: int) -> None:
        """The events after ``last`` up to ``up_to``, from history, page by page."""
        after: int | None = self.last
        for _ in range(up_to // HISTORY_PAGE + 2):
            if after is None or after >= up_to:
                break
            page = await self.client.history(after_seq=after, limit=HISTORY_PAGE)
            for event in page.events:
                if event.seq <= up_to:
                    assert event.seq == self.last + 1, (event.seq, self.last)
                    self.stream.append((event.seq, event.id))
                    self.recovered += 1
                    self.last = event.seq
            after = page.next
        assert self.last == up_to, (self.last, up_to)

    async def reach(self, seq: int) -> None:
        """Return once the subscriber's stream goes up to ``seq``."""
        async with asyncio.timeout(DEADLINE):
            while self.last < seq and not self.errors:
                self._progress.clear()
                await self._progress.wait()
        assert not self.errors, self.errors


@asynccontextmanager
async def slow_subscription(daemon: Daemon, subscriber: SlowSubscriber) -> AsyncIterator[Client]:
    """The subscriber's own connection, subscribed (the server has the interest)."""
    nc = await nats.connect(daemon.url, error_cb=subscriber.on_error)
    try:
        subscriber.sub = await nc.subscribe(
            f"{daemon.prefix}.events.>", cb=subscriber.handle, pending_msgs_limit=PENDING
        )
        await barrier(nc)
        yield nc
    finally:
        await nc.close()


async def timed_creates(
    client: CheckpointClient, first: int, count: int, acked: dict[str, str]
) -> list[float]:
    """``count`` creates, ``CONCURRENCY`` at a time; each one's latency in seconds."""
    latencies: list[float] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        cp = await client.create(
            name=f"cp {n}",
            session_id=f"s{n % 5}",
            snapshot={"sessions": ["s"], "state": {"n": n}},
            branches=["main"],
        )
        latencies.append(time.perf_counter() - started)
        acked[cp.id] = cp.checksum

    async def lane(lane_number: int) -> None:
        for n in range(first + lane_number, first + count, CONCURRENCY):
            await one(n)

    await asyncio.gather(*(lane(i) for i in range(CONCURRENCY)))
    return latencies


@pytest.mark.parametrize(
    ("rounds", "burst"),
    [
        pytest.param(1, 300, id="1x300"),
        pytest.param(5, 1000, id="5x1000", marks=pytest.mark.slow),
    ],
)
async def test_a_slow_subscriber_does_not_slow_commands_and_recovers_every_event(
    daemons: Daemons, figures: dict[str, Any], rounds: int, burst: int
) -> None:
    """Per round: a burst of creates while the subscriber is blocked (all complete, at about
    the latency measured without it), then it is unblocked and fills its gap from history."""
    daemon = daemons.start({})
    witness = Witness()
    acked: dict[str, str] = {}
    nc = await nats.connect(daemon.url)
    try:
        async with (
            CheckpointClient(daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE) as client,
            subscribed(nc, f"{daemon.prefix}.events.>") as witness_sub,
        ):
            watching = asyncio.create_task(witness.run(witness_sub))
            free = await timed_creates(client, 0, BASELINE, acked)
            total = BASELINE
            subscriber = SlowSubscriber(client, after=await client.health())
            blocked: list[float] = []
            async with slow_subscription(daemon, subscriber) as slow_nc:
                for _ in range(rounds):
                    subscriber.gate.clear()
                    subscriber.idle.clear()
                    blocked += await timed_creates(client, total, burst, acked)
                    total += burst
                    # The creates all returned while the subscriber was blocked.
                    assert not subscriber.gate.is_set()
                    assert subscriber.last < total
                    # Every notification reached the server, and through it the subscriber's
                    # client, which queued or dropped each before taking this barrier's message.
                    await witness.reach(total)
                    await barrier(slow_nc)
                    subscriber.gate.set()
                    async with asyncio.timeout(DEADLINE):
                        await subscriber.idle.wait()
                    # The next event shows the subscriber its gap.
                    await timed_creates(client, total, 1, acked)
                    total += 1
                    await subscriber.reach(total)
            watching.cancel()
            history = []
            after: int | None = BASELINE
            for _ in range(total // 1000 + 2):
                if after is None:
                    break
                page = await client.history(after_seq=after, limit=1000)
                history += [(e.seq, e.id) for e in page.events]
                after = page.next
    finally:
        await nc.close()

    # The daemon published every event; the slow subscriber lost some and got them back.
    assert witness.seqs == list(range(1, total + 1))
    assert subscriber.dropped > 0, "the subscriber never fell behind: nothing was tested"
    assert subscriber.gaps >= rounds
    assert subscriber.stream == history  # every event exactly once, in order, the same event
    assert subscriber.received + subscriber.recovered == total - BASELINE

    p50_free, p50_blocked = statistics.median(free), statistics.median(blocked)
    # Generous: the point is that creates do not wait for the subscriber at all.
    assert p50_blocked < 10 * p50_free + 0.05, (p50_free, p50_blocked)

    assert await asyncio.to_thread(daemon.stop) == 0
    verdict = await check_store(daemon.db_path, acked=acked)
    assert verdict.events == total
    figures.update(
        rounds=rounds,
        operations=total,
        acknowledged=total,
        events=total - BASELINE,
        received=subscriber.received,
        dropped=subscriber.dropped,
        recovered=subscriber.recovered,
        gaps=subscriber.gaps,
        p50_ms_without=round(p50_free * 1000, 2),
        p50_ms_blocked=round(p50_blocked * 1000, 2),
        losses=0,
    )
