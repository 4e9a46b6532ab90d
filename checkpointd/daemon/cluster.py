"""A daemon in a cluster: the log on a JetStream stream, the writer lease, following the stream.

With ``log_backend = "jetstream"`` several daemons serve one store. Each keeps its own copy of
the log and its own views (``checkpointd.storage.replica``) and serves reads from them. One of
them, the holder of the writer lease, also serves the writes: **the others do not subscribe the
write endpoints** (nor the chunked upload, which only writes need). A client's write therefore
always reaches the writer, and while the lease moves it meets "no responders" (or, from a
writer that just lost its lease, a 503 for a write it did not apply) and sends the same request
again with the same ``Nats-Msg-Id`` until its timeout: the idempotency keys are part of the
replicated log, so a retry that reaches the new writer after the first attempt was applied gets
the stored reply, never a second effect.

Which daemon is the writer (for operators and tests):
- ``$SRV.INFO.checkpointd``: the writer answers for a second service instance whose metadata
  has ``role = "writer"`` (besides ``pid``, ``host`` and ``state_directory``); every daemon's
  reading instance has ``role = "reader"`` and the same three;
- the KV bucket ``<jetstream_stream>_LEASE``, key ``writer``: JSON ``{pid, host,
  state_directory}`` of the holder (absent: nobody holds it);
- the log lines ``writer lease taken`` / ``writer lease lost`` (with ``pid``).

The lease is taken by compare-and-set and renewed every ``RENEW_EVERY`` seconds; the bucket's
TTL ends it ``LEASE_TTL`` seconds after the last renewal the servers saw. The holder stops
appending ``LEASE_MARGIN`` seconds before that by its own monotonic clock, counted from when it
*sent* the renewal, so a paused or cut-off writer stops before another can take over; and every
append is fenced on the last segment, so even a writer whose clock misled it cannot fork the
chain. A new writer applies the stream to its copy before it subscribes the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client

from checkpointd.errors import CheckpointError
from checkpointd.storage.jetstream import LEASE_MARGIN, LEASE_TTL, RENEW_EVERY, JetStreamLog
from checkpointd.storage.replica import StreamReplica

log = structlog.get_logger("checkpointd.cluster")

FOLLOW_POLL = 1.0
"""Seconds between looks at the stream when no new segment has been announced."""
_BACKOFF = 1.0

OnWriter = Callable[[bool], Awaitable[None]]
"""Told True when this daemon becomes the writer (after catching up), False when it stops."""


def identity(state_directory: str) -> dict[str, str]:
    """What names this daemon in the lease and in ``$SRV.INFO`` metadata."""
    return {
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
        "state_directory": os.path.abspath(state_directory),
    }


class Cluster:
    """The lease and the follower of one daemon. Its loops are thin drivers around the public
    steps ``lease_step()`` and ``replica.follow_once()``."""

    def __init__(
        self, replica: StreamReplica, nc: Client, on_writer: OnWriter, state_directory: str
    ) -> None:
        self.replica = replica
        self.stream: JetStreamLog = replica.stream
        self._nc = nc
        self._on_writer = on_writer
        self._holder = json.dumps(identity(state_directory)).encode()
        self._revision: int | None = None
        self._serving = False
        self._catching_up: asyncio.Future[int] | None = None
        self._rung = asyncio.Event()
        self._quiet = _Quiet()

    @property
    def is_writer(self) -> bool:
        """This daemon holds the lease and serves the writes."""
        return self._serving and self.replica.holds_lease

    # -- the lease -----------------------------------------------------------------------

    async def lease_step(self) -> None:
        """Take the lease when free, renew it when held, give the writes up when it is lost."""
        sent = time.monotonic()
        if self._revision is None:
            revision = await self.stream.take_lease(self._holder)
            if revision is None:
                return
            self._revision = revision
            self.replica.lease_until = sent + LEASE_TTL - LEASE_MARGIN
            log.info("writer lease taken", pid=os.getpid(), revision=revision)
        else:
            try:
                self._revision = await self.stream.renew_lease(self._holder, self._revision)
                self.replica.lease_until = sent + LEASE_TTL - LEASE_MARGIN
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._lost("taken by another daemon or expired")
                return
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                if not self.replica.holds_lease:
                    await self._lost(f"not renewed in time ({type(exc).__name__})")
                    return
        if not self.replica.holds_lease:
            await self._lost("not renewed in time")
        elif not self._serving:
            await self._become_writer()

    async def _become_writer(self) -> None:
        """Serve the writes once the copy holds every segment. The catch-up runs as a task of
        its own, waited for at most ``RENEW_EVERY`` per step, so the lease is renewed while a
        slow catch-up (a stream read waiting on a new stream leader) goes on."""
        if self._catching_up is None:
            self._catching_up = asyncio.ensure_future(self.replica.catch_up())
        done, _ = await asyncio.wait({self._catching_up}, timeout=RENEW_EVERY)
        if not done:
            return
        task, self._catching_up = self._catching_up, None
        try:
            task.result()
        except BaseException:
            await self.release()  # another daemon may manage what this one cannot
            raise
        self._serving = True
        await self._on_writer(True)

    def _stop_catching_up(self) -> None:
        task, self._catching_up = self._catching_up, None
        if task is not None:
            task.cancel()

    async def _lost(self, why: str) -> None:
        self.replica.lease_until = 0.0
        self._revision = None
        self._stop_catching_up()
        if self._serving:
            self._serving = False
            log.warning("writer lease lost", pid=os.getpid(), reason=why)
            await self._on_writer(False)
        self.replica.behind.set()  # another writer may have appended: follow from here

    async def release(self) -> None:
        """On a clean stop: stop writing and give the lease up for another daemon to take."""
        revision, self._revision = self._revision, None
        self.replica.lease_until = 0.0
        self._stop_catching_up()
        if self._serving:
            self._serving = False
            await self._on_writer(False)
        if revision is not None:
            await self.stream.release_lease(revision)
            log.info("writer lease released", pid=os.getpid())

    async def lease_loop(self) -> None:
        while True:
            _stop_if_cancelled()
            try:
                await self.lease_step()
            except (CheckpointError, nats.errors.Error, OSError, TimeoutError) as exc:
                self._quiet.warn("writer lease step failed", exc)
            await asyncio.sleep(RENEW_EVERY)

    # -- following the stream ------------------------------------------------------------

    async def follow_loop(self) -> None:
        """Apply new segments as the stream gets them (unless this daemon writes them)."""
        doorbell = await self._nc.subscribe(self.stream.names.head, cb=self._ring)
        try:
            while True:
                _stop_if_cancelled()
                behind = self.replica.behind.is_set()
                if behind or not self.is_writer:
                    self.replica.behind.clear()
                    try:
                        if await self.replica.follow_once():
                            continue
                    except (CheckpointError, nats.errors.Error, OSError, TimeoutError) as exc:
                        self._quiet.warn("could not follow the stream", exc)
                        self.replica.behind.set()
                        await asyncio.sleep(_BACKOFF)
                        continue
                await self._wait()
        finally:
            with contextlib.suppress(Exception):
                await doorbell.unsubscribe()

    async def _ring(self, _: object) -> None:
        self._rung.set()

    async def _wait(self) -> None:
        """Until a segment is announced, an append failed, or ``FOLLOW_POLL`` passed."""
        behind = asyncio.ensure_future(self.replica.behind.wait())
        rung = asyncio.ensure_future(self._rung.wait())
        try:
            await asyncio.wait({behind, rung}, timeout=FOLLOW_POLL)
        finally:
            behind.cancel()
            rung.cancel()
        self._rung.clear()


def _stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop. A cancellation that arrives just
    as an awaited timeout fires can be swallowed by the library awaiting it
    (``asyncio.wait_for`` on Python 3.11): the loops look at the request itself too, so a
    stopping daemon never keeps them."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Quiet:
    """The loops retry every second while NATS or the stream is away: log a failure the first
    time, then the same one at most once a minute, with how often it recurred."""

    EVERY = 60.0

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def warn(self, what: str, exc: BaseException) -> None:
        key = (what, f"{type(exc).__name__}: {exc}"[:200])
        now = time.monotonic()
        logged_at, repeats = self._last.get(key, (now - self.EVERY, 0))
        if now - logged_at < self.EVERY:
            self._last[key] = (logged_at, repeats + 1)
            return
        if len(self._last) > 100:
            self._last.clear()
        self._last[key] = (now, 0)
        log.warning(what, error=key[1], repeats_since_last=repeats)
