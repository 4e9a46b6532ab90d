"""The views, kept by a projector that follows the log, and the reads' wait for them.

A write is acknowledged once its events are in the log; the views (checkpoints, full-text
search, stats, sessions, lineage) are built from the log by the projector
(``checkpointd.views.tail``), on a thread of this process or in a process of its own. ``Views``
is the owner's side: it starts the projector, learns its position, restarts it if it dies,
replaces a views file that cannot be used, rebuilds online, and makes every read wait until the
views have reached the log head the read observed (bounded by ``read_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import structlog

from checkpointd import consistency
from checkpointd.errors import CheckpointError, InternalError, UnavailableError
from checkpointd.projections import Projector
from checkpointd.storage.sqlite import translate
from checkpointd.views import tail

log = structlog.get_logger("checkpointd.views")

RESTART_DELAYS = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)
"""Seconds before each restart of a projector that keeps dying (the last repeats)."""
_JOIN_TIMEOUT = 10.0
NUDGE_DELAY = 0.005
"""Seconds from a commit to the projector's wake-up when no read is waiting for the views."""

Hook = Callable[[], Callable[[], Awaitable[None]] | None]
"""A weak reference to the reader pool's pause or resume (the pool must not be kept alive by the
views: see ``CheckpointManager.__del__``)."""


class Views:
    """The owner of the projector and of the views' position. Use on the event loop only.

    ``pause_reads``/``resume_reads`` are called around a swap of the views file, so that the
    reader connections are closed while the file is replaced.
    """

    def __init__(
        self,
        *,
        log_path: str,
        views_path: str,
        store_id: str,
        fts_enabled: bool,
        mode: str,
        read_timeout: float,
        log_head: Callable[[], int],
    ) -> None:
        self.log_path = log_path
        self.views_path = views_path
        self._store_id = store_id
        self._fts = fts_enabled
        self._mode = mode
        self.read_timeout = read_timeout
        self._log_head = log_head
        self.position = 0
        self.progress = 0  # events of a bulk build so far (for the daemon's status line)
        self._waiters: list[tuple[int, int, asyncio.Future[int]]] = []
        self._tickets = itertools.count()
        self._channel: Connection | None = None
        self._worker: threading.Thread | multiprocessing.process.BaseProcess | None = None
        self._nudged = False
        self._wake_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._deaths = 0
        self._restart: asyncio.Task[None] | None = None
        self._available = asyncio.Event()  # cleared while the file is swapped
        self._first = asyncio.Event()
        self._stale: str | None = None
        self.pause_reads: Hook | None = None
        self.resume_reads: Hook | None = None
        self._swap = asyncio.Lock()
        self._rebuilding = asyncio.Lock()  # one rebuild at a time: they share the fresh file
        self._next_rebuild: asyncio.Task[int] | None = None  # not started yet: others join it
        self._next_progress: list[Callable[[int], None]] = []
        self._starting = False
        self._reported = False  # the running projector has reported its position
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the projector; a views file it cannot use is replaced by a fresh one."""
        self._stopping = False
        self._starting = True
        try:
            await self._start()
        finally:
            self._starting = False

    async def _start(self) -> None:
        for _ in range(2):
            self._first.clear()
            self._stale = None
            self._reported = False
            self._spawn()
            await self._first.wait()
            if self._reported:
                if not self._swap.locked():  # in a swap, reads go on once the readers reopen
                    self._available.set()
                return
            if self._stale is None:  # it died before saying where it is
                await self._join()
                raise UnavailableError(
                    "the projector could not start (with projector = 'process', a script must"
                    " start the store under `if __name__ == '__main__':`); see the log"
                )
            log.warning("views file unusable; building it again", reason=self._stale)
            await self._join()
            tail.remove_files(self.views_path)
        raise UnavailableError("the views file cannot be created")

    async def stop(self) -> None:
        """Let the projector reach the log head (waiting ``read_timeout`` at most), then stop
        it (its last batch commits or rolls back); idempotent.

        So a clean close leaves the views caught up, and the next open has nothing to replay.
        """
        if not self._stopping and self._channel is not None:
            with contextlib.suppress(UnavailableError):
                await self.wait_for(self._log_head())
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
            self._restart = None
        await self._join()
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(UnavailableError("the checkpoint store is closed"))
        self._waiters.clear()

    def abandon(self) -> None:
        """Tell the projector to stop without waiting (an owner being garbage-collected)."""
        self._stopping = True
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.send(None)
            if self._loop is not None and not self._loop.is_closed():
                # The loop's reader holds this object (and through it the reader pool).
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(channel.fileno())

    @property
    def alive(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def _spawn(self) -> None:
        parent, child = multiprocessing.Pipe(duplex=True)
        args = (self.log_path, self.views_path, self._store_id, self._fts, child)
        worker: threading.Thread | multiprocessing.process.BaseProcess
        if self._mode == "process":
            worker = multiprocessing.get_context("spawn").Process(
                target=tail.run, args=args, name="checkpointd-projector", daemon=True
            )
            worker.start()
            child.close()  # the child's copy is its own; ours would hide its death
        else:
            worker = threading.Thread(
                target=tail.run, args=args, name="checkpointd-projector", daemon=True
            )
            worker.start()
        self._worker, self._channel, self._nudged = worker, parent, False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(parent.fileno(), self._readable, parent)

    async def _join(self) -> None:
        channel, worker = self._channel, self._worker
        self._channel = self._worker = None
        if channel is not None:
            asyncio.get_running_loop().remove_reader(channel.fileno())
            with contextlib.suppress(OSError):
                channel.send(None)
        if worker is not None:
            await asyncio.to_thread(worker.join, _JOIN_TIMEOUT)
            if isinstance(worker, multiprocessing.process.BaseProcess) and worker.is_alive():
                worker.kill()
                await asyncio.to_thread(worker.join, _JOIN_TIMEOUT)
        if channel is not None:
            channel.close()

    # -- messages from the projector -------------------------------------------------------

    def _readable(self, channel: Connection) -> None:
        try:
            while channel.poll():
                self._message(channel.recv())
        except (EOFError, OSError):
            self._died(channel)

    def _message(self, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "position":
            self._reported = True
            self._nudged = False
            self._deaths = 0
            self._first.set()
            self._advance(int(value))
            if self._log_head() > self.position:
                # Commits the projector has not seen: their nudges (and a waiting read's
                # wake-up) were dropped while the last wake-up was outstanding.
                if self._waiters:
                    self._wake()
                else:
                    self.nudge(self._log_head())
        elif kind == "progress":
            self.progress = int(value)
        elif kind == "failed":
            log.warning("the projector failed; restarting it", error=str(value))
        elif kind == "stale":
            self._stale = str(value)
            self._first.set()

    def _advance(self, position: int) -> None:
        if position <= self.position and self.position:
            return
        self.position = position
        while self._waiters and self._waiters[0][0] <= position:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(position)

    def _died(self, channel: Connection) -> None:
        if channel is not self._channel:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(channel.fileno())
        self._first.set()
        if self._stopping or self._starting:
            return  # stopping, or start() is watching and handles it
        stale = self._stale
        if stale is None:
            log.warning("the projector stopped; restarting it", position=self.position)
        self._restart = loop.create_task(self._revive(stale))

    async def _revive(self, stale: str | None) -> None:
        delay = RESTART_DELAYS[min(self._deaths, len(RESTART_DELAYS) - 1)]
        self._deaths += 1
        await self._join()
        await asyncio.sleep(delay)
        if self._stopping:
            return
        if stale is not None:
            log.warning("views file unusable; building it again", reason=stale)
            async with self._swapped():
                tail.remove_files(self.views_path)
                await self.start()
            return
        self._stale = None
        self._spawn()

    # -- the owner's side ------------------------------------------------------------------

    def nudge(self, head: int) -> None:
        """The log's head moved (called after each COMMIT): wake the projector soon, once.

        The wake-up waits ``NUDGE_DELAY`` so that the commits of that moment reach the
        projector as one batch rather than one batch (and one round trip) each; a read that
        needs the views sooner wakes it at once (``wait_for``).
        """
        if self._nudged or self._channel is None or self._wake_timer is not None:
            return
        assert self._loop is not None
        self._wake_timer = self._loop.call_later(NUDGE_DELAY, self._wake)

    def _wake(self) -> None:
        """Send the projector the log head now (at most once until it reports again)."""
        timer, self._wake_timer = self._wake_timer, None
        if timer is not None:
            timer.cancel()
        channel = self._channel
        if self._nudged or channel is None:
            return
        self._nudged = True
        try:
            channel.send(self._log_head())
        except OSError:
            self._nudged = False

    async def wait_for(self, seq: int, within: float | None = None) -> int:
        """The views' position once it is at least ``seq``.

        Raises UnavailableError if that takes longer than ``within`` seconds (default
        ``read_timeout``): the answer would be stale, so there is none.
        """
        if self.position >= seq and self._available.is_set():
            return self.position
        limit = self.read_timeout if within is None else within
        deadline = time.monotonic() + limit
        try:
            async with asyncio.timeout(limit):
                await self._available.wait()
                # Again after each wait: a swap of the views file in between starts the
                # position over, at the fresh file's.
                while self.position < seq or not self._available.is_set():
                    if self.position < seq:
                        self._wake()  # a reader is waiting: no batching delay
                        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                        heapq.heappush(self._waiters, (seq, next(self._tickets), future))
                        await future
                    await self._available.wait()
        except TimeoutError:
            waited = limit - max(0.0, deadline - time.monotonic())
            raise UnavailableError(
                f"the views did not reach log position {seq} within {waited:.1f}s"
                f" (they are at {self.position}); retry"
            ) from None
        return self.position

    async def barrier(self) -> int:
        """Wait until the views reflect every write acknowledged so far (and at least the
        calling task's ``consistency.min_seq``); the position the read answers at."""
        target = max(self._log_head(), consistency.min_seq.get())
        position = await self.wait_for(target)
        consistency.answered(position)
        return position

    # -- rebuilding ------------------------------------------------------------------------

    async def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Build fresh views from event 0 beside the live ones, then swap them in.

        Reads go on from the live views while the fresh file is built, pause while the files
        are swapped, and then wait, as always, for the views to reach the log head. Returns the
        events replayed.

        One rebuild runs at a time. Rebuilds asked for while one runs share the next one (it
        starts after all of them asked), so a burst of requests costs two rebuilds, not one
        each; a caller that goes away does not cancel it for the others.
        """
        task = self._next_rebuild
        if task is None:
            self._next_progress = []
            task = self._next_rebuild = asyncio.ensure_future(self._rebuild_next())
            task.add_done_callback(_retrieved)
        if progress is not None:
            self._next_progress.append(progress)
        return await asyncio.shield(task)

    async def _rebuild_next(self) -> int:
        async with self._rebuilding:
            self._next_rebuild = None  # from here on, a request waits for the one after
            callbacks = self._next_progress

            def progress(events: int) -> None:
                for callback in callbacks:
                    callback(events)

            return await self._rebuild(progress)

    async def _rebuild(self, progress: Callable[[int], None]) -> int:
        fresh = f"{self.views_path}.rebuild"
        tail.remove_files(fresh)
        try:
            try:
                count = await asyncio.to_thread(self._build, fresh, progress)
            except CheckpointError:
                raise
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            except Exception as exc:  # an event the projections cannot read
                log.exception("rebuild failed; the live views are unchanged")
                raise InternalError("the rebuild failed; the live views are unchanged") from exc
            async with self._swapped():
                await self._join()
                tail.remove_files(self.views_path)
                os.replace(fresh, self.views_path)
                _sync_directory(self.views_path)
                await self.start()
        finally:
            tail.remove_files(fresh)
        return count

    def _build(self, path: str, progress: Callable[[int], None] | None) -> int:
        conn = tail.open_views(path, self.log_path, store_id=self._store_id, fts_enabled=self._fts)
        try:
            conn.execute("PRAGMA synchronous = OFF")  # made durable as a whole below
            count = tail.build(conn, Projector(fts_enabled=self._fts), progress)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return count

    @contextlib.asynccontextmanager
    async def _swapped(self) -> Any:
        """Reads paused and reader connections closed while the views file is replaced."""
        async with self._swap:
            self._available.clear()
            pause = None if self.pause_reads is None else self.pause_reads()
            if pause is not None:
                await pause()
            try:
                self.position = 0
                yield
            finally:
                resume = None if self.resume_reads is None else self.resume_reads()
                if resume is not None:
                    await resume()
                self._available.set()


def _retrieved(task: asyncio.Task[int]) -> None:
    """Mark a shared rebuild's outcome as seen (every caller may have gone away)."""
    if not task.cancelled():
        task.exception()


def _sync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
