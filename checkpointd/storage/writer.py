"""The one writer: commands queue up and commit in groups on a dedicated thread.

The log's append machinery: it owns the writing connection, the thread and the transactions,
and hands each command to the write side's handler (``checkpointd.write``), which decides what
the command appends.

The writer thread takes commands straight from a thread-safe queue: as soon as it is free it
takes everything waiting (up to ``max_group``) and commits it as one ``BEGIN IMMEDIATE`` ...
``COMMIT`` (one fsync with ``synchronous=FULL``), while the event loop goes on preparing the next
commands. Results go back to the loop once per group.

A group runs start to finish in one synchronous call on the writer thread, so cancelling a
caller can never leave a transaction open: the caller stops waiting, the group still commits or
rolls back as a whole. A caller's future is resolved only after COMMIT returned, so an
acknowledged write is durable.

A delete or expiry zeroes the snapshot's pages (``secure_delete``), but the WAL still holds the
frames written before: ``WAL_TRUNCATE_DELAY`` seconds after a group that removed snapshots, the
writer checkpoints the WAL into the database file and truncates it to zero bytes (retrying
after the same delay while readers hold it), so the bytes leave the disk too.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from checkpointd import consistency, faults
from checkpointd.errors import CheckpointError, InternalError, StorageError, UnavailableError
from checkpointd.events.types import EventRecord, EventType
from checkpointd.storage.replica import ReplicationError
from checkpointd.storage.sqlite import BUSY_TIMEOUT_MS, translate
from checkpointd.write import commands as cmd
from checkpointd.write.commands import Command
from checkpointd.write.handler import CommandHandler, Outcome, PartialWriteError

if TYPE_CHECKING:
    from checkpointd.storage.replica import StreamReplica

log = structlog.get_logger("checkpointd.writer")

T = TypeVar("T")
Committed = tuple[Command, tuple[EventRecord, ...]]
CommitListener = Callable[[list[Committed]], None]
"""Called on the event loop after each COMMIT with each command and the events it appended,
in commit (``seq``) order; commands that appended nothing are left out."""
QUEUE_LIMIT = 10_000
RESERVE_BYTES = 2 * 1024 * 1024
"""Free bytes kept on the views' disk: below them, writes that grow the store are refused."""
_GROWS = (cmd.Create, cmd.CreateBatch, cmd.Update, cmd.Restore, cmd.PutWrites, cmd.CopySession)
WAL_TRUNCATE_DELAY = 1.0
"""Seconds from a group that removed snapshots to the WAL truncate (later ones join it)."""
_TRUNCATE_BUSY_MS = 100  # how long the truncate waits for readers before trying again later
_REMOVALS = frozenset({EventType.DELETED.value, EventType.EXPIRED.value})


@dataclass(frozen=True, slots=True)
class _Job:
    command: Command
    future: asyncio.Future[Outcome]


@dataclass(frozen=True, slots=True)
class _Exclusive:
    """Work that runs alone on the writer thread (open, rebuild, close), between groups."""

    fn: Callable[[], Any]
    future: asyncio.Future[Any]


class _Stop:
    pass


_Item = _Job | _Exclusive | _Stop


class GroupCommitWriter:
    """Owns the writer thread and, through its CommandHandler, the writing connection."""

    def __init__(
        self,
        open_handler: Callable[[], CommandHandler],
        *,
        max_group: int,
        on_commit: CommitListener | None = None,
        on_head: Callable[[int], None] | None = None,
        reserve_path: str | None = None,
        replica: StreamReplica | None = None,
    ) -> None:
        self._open_handler = open_handler
        # With the log on a JetStream stream: ships each group before its COMMIT.
        self._replica = replica
        self._max_group = max_group
        self._on_commit = on_commit
        self._on_head = on_head
        self._reserve_path = reserve_path  # a file on the disk that must keep RESERVE_BYTES free
        self.head = 0
        """The seq of the last committed event, as the event loop knows it: set before any
        caller of that group is answered, so a read that begins after an acknowledgement
        observes at least the acknowledged write."""
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(QUEUE_LIMIT)
        self._handler: CommandHandler | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._truncate_at: float | None = None  # monotonic time the WAL truncate is due

    async def start(self) -> None:
        """Start the thread and open the connection on it."""
        self._loop = asyncio.get_running_loop()
        # Once open: a WAL left by a crash may still hold frames of snapshots deleted before it.
        self._truncate_at = time.monotonic() + WAL_TRUNCATE_DELAY
        self._thread = threading.Thread(target=self._run, name="checkpointd-writer", daemon=True)
        self._thread.start()
        self._handler = await self._exclusive(self._open_handler)
        self.head = self._handler.seq
        if self._replica is not None:
            replica = self._replica
            await self._exclusive(lambda: replica.open(self))

    @property
    def handler(self) -> CommandHandler:
        """The command handler (and through it the connection and codec) once started."""
        if self._handler is None:
            raise UnavailableError("the checkpoint store is closed")
        return self._handler

    @property
    def alive(self) -> bool:
        """The writer thread is running and taking commands."""
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def abandon(self) -> None:
        """Stop the thread without closing anything (for an owner being garbage-collected)."""
        self._closing = True
        self._inbox.put(_Stop())

    async def submit(self, command: Command) -> Outcome:
        """Queue a command; returns once its group has committed (or raises its error)."""
        await self._slots.acquire()
        # Checked after the only await: a job queued here is ahead of close()'s final job.
        if self._closing or self._handler is None:
            self._slots.release()
            raise UnavailableError("the checkpoint store is closed")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._inbox.put(_Job(command, future))
        try:
            outcome = await future
        finally:
            # Once the future is done (a result, or the caller cancelled): no extra callback.
            self._slots.release()
        consistency.answered(outcome.seq)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def exclusive(self, fn: Callable[[CommandHandler], T]) -> T:
        """Run ``fn(handler)`` alone on the writer thread, between groups."""
        handler = self._handler
        if self._closing or handler is None:
            raise UnavailableError("the checkpoint store is closed")
        return await self._exclusive(lambda: fn(handler))

    async def advance(self, fn: Callable[[CommandHandler], int], *, removed: bool = False) -> int:
        """Run ``fn(handler)`` alone on the writer thread, where it appends events that no
        command of this writer appended (a replica applying the log's stream) and returns
        the new head: the head advances and the views are nudged as after a COMMIT; when
        it ``removed`` rows, the WAL is truncated as after a group that removed snapshots."""

        def run(handler: CommandHandler) -> int:
            head = fn(handler)
            if removed and self._truncate_at is None:
                self._truncate_at = time.monotonic() + WAL_TRUNCATE_DELAY
            return head

        head = await self.exclusive(run)
        if head > self.head:
            self.head = head
            if self._on_head is not None:
                self._on_head(head)
        return head

    async def _exclusive(self, fn: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inbox.put(_Exclusive(fn, future))
        return await future

    async def close(self) -> None:
        """Finish every queued command, then close the connection. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._closing = True
        handler = self._handler
        if handler is not None:
            # Queued behind every job already submitted, which therefore all commit first.
            await self._exclusive(handler.close)
        self._inbox.put(_Stop())
        await asyncio.to_thread(thread.join)
        self._handler = None

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._next()
            if isinstance(item, _Stop):
                return
            if isinstance(item, _Exclusive):
                self._run_exclusive(item)
                continue
            group = [item]
            pending: _Item | None = None
            while len(group) < self._max_group:
                try:
                    nxt = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _Job):
                    pending = nxt
                    break
                group.append(nxt)
            outcomes = self._commit_group([job.command for job in group])
            faults.crash_point("after-commit-before-reply")
            if self._handler is not None:
                self._handler.sign_head()  # before the replies: an acknowledged head is signed
            self._call_soon(self._deliver, group, outcomes)
            self._schedule_truncate(outcomes)
            if isinstance(pending, _Stop):
                return
            if isinstance(pending, _Exclusive):
                self._run_exclusive(pending)

    def _next(self) -> _Item:
        """The next item; while a WAL truncate is pending, run it when it falls due first."""
        while self._truncate_at is not None:
            try:
                return self._inbox.get(timeout=max(0.0, self._truncate_at - time.monotonic()))
            except queue.Empty:
                self._truncate_wal()
        return self._inbox.get()

    def _schedule_truncate(self, outcomes: list[Outcome]) -> None:
        removed = any(e.type in _REMOVALS for outcome in outcomes for e in outcome.events)
        if removed and self._truncate_at is None:
            self._truncate_at = time.monotonic() + WAL_TRUNCATE_DELAY
        elif self._truncate_at is not None and time.monotonic() >= self._truncate_at:
            self._truncate_wal()  # a writer that is never idle still truncates on time

    def _truncate_wal(self) -> None:
        """Checkpoint the WAL and truncate it; if readers hold it, try again after the delay."""
        self._truncate_at = None
        handler = self._handler
        if handler is None or self._closing:
            return  # closing the last connection checkpoints and removes the WAL anyway
        conn = handler.conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {_TRUNCATE_BUSY_MS}")
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error:
            log.warning("could not truncate the WAL; trying again", exc_info=True)
            busy = 1
        if busy:
            self._truncate_at = time.monotonic() + WAL_TRUNCATE_DELAY

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            log.warning("event loop closed before a result could be delivered")

    def _run_exclusive(self, job: _Exclusive) -> None:
        try:
            result = job.fn()
        except Exception as exc:
            self._call_soon(_set_exception, job.future, _as_checkpoint_error(exc))
        else:
            self._call_soon(_set_result, job.future, result)

    def _deliver(self, group: list[_Job], outcomes: list[Outcome]) -> None:
        """On the loop: advance the head, resolve the group's futures, tell the listeners."""
        head = max((outcome.seq for outcome in outcomes), default=0)
        if head > self.head:
            self.head = head
            if self._on_head is not None:
                self._on_head(head)
        committed: list[Committed] = []
        for job, outcome in zip(group, outcomes, strict=True):
            if outcome.events:
                committed.append((job.command, outcome.events))
            _set_result(job.future, outcome)
        if committed and self._on_commit is not None:
            try:
                self._on_commit(committed)
            except Exception:
                log.exception("commit listener failed")

    def _commit_group(self, commands: list[Command]) -> list[Outcome]:
        """Commit the group, refusing what would grow the store while the disk the views are
        on is nearly full: the projector must always be able to apply what was acknowledged
        (removals go through, they make room)."""
        path = self._reserve_path
        if path is None or not _low_on_space(path):
            return self._commit(commands)
        grows = [isinstance(command, _GROWS) for command in commands]
        if not any(grows):
            return self._commit(commands)
        kept = iter(self._commit([c for c, g in zip(commands, grows, strict=True) if not g]))
        seq = self.handler.seq
        full = StorageError(
            "storage is full: the write was not applied (the last free space is kept for the"
            " views to follow the log)"
        )
        return [Outcome(error=full, seq=seq) if grow else next(kept) for grow in grows]

    def _commit(self, commands: list[Command]) -> list[Outcome]:
        """One transaction for the whole group; runs on the writer thread.

        If the group fails as a whole (a SQLite error, a command that failed after writing, a
        failed COMMIT), it is rolled back — nothing of it was acknowledged — and its commands
        are retried one per transaction, so only the culprit fails.
        """
        handler = self._handler
        assert handler is not None
        conn = handler.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [handler.handle(command) for command in commands]
            faults.crash_point("after-append-before-commit")
            if self._replica is not None:
                self._replica.publish(handler)  # acknowledged by the stream, or raises
            conn.execute("COMMIT")
        except Exception as exc:
            if not _recover(handler):
                unusable = UnavailableError("the database is unusable")
                return [Outcome(error=unusable, seq=handler.seq) for _ in commands]
            if isinstance(exc, ReplicationError):
                # Not shipped: the whole group fails as one (retrying its commands one by
                # one would meet the same stream), and nothing of it was acknowledged.
                return [Outcome(error=exc, seq=handler.seq) for _ in commands]
            if len(commands) > 1:
                return [self._commit([command])[0] for command in commands]
            error = _as_checkpoint_error(exc)
            log.warning(
                "command rolled back", command=type(commands[0]).__name__, error=error.message
            )
            return [Outcome(error=error, seq=handler.seq)]
        return outcomes


def _low_on_space(path: str) -> bool:
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < RESERVE_BYTES


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # a caller that gave up (cancelled, timed out) is skipped
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _recover(handler: CommandHandler) -> bool:
    """Roll back and re-read the chain head; False if even that fails (the writer stays up)."""
    try:
        if handler.conn.in_transaction:
            handler.conn.execute("ROLLBACK")
        handler.reload_head()
    except Exception:
        log.exception("could not recover after a failed group")
        return False
    return True


def _as_checkpoint_error(exc: BaseException) -> CheckpointError:
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, sqlite3.Error):
        return translate(exc)
    if isinstance(exc, PartialWriteError) and isinstance(exc.__cause__, CheckpointError):
        return exc.__cause__
    log.error("unexpected writer failure", exc_info=exc)
    return InternalError("internal error")
