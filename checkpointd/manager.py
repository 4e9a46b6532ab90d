"""CheckpointManager: the embedded engine, in-process, with no daemon and no network.

The composition root: ``open()`` builds the writer (the log's connection, migrations, keyring,
codec), the views (their projector, which follows the log) and the reader pool in order on an
``AsyncExitStack``; ``close()`` unwinds it in reverse, finishing every queued command first.
Commands go to the group-committing writer, which commits to the log alone; queries go to the
read model, which waits until the views have caught up with every acknowledged write.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import structlog

from checkpointd import faults
from checkpointd.clock import Clock, SystemClock, format_timestamp
from checkpointd.config import Config
from checkpointd.daemon.metrics import MetricsCollector, RequestMetrics
from checkpointd.engine import open_write_side
from checkpointd.errors import (
    ConfigError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)
from checkpointd.events.signing import ChainKeys
from checkpointd.events.verify import verify_file
from checkpointd.loops import Background
from checkpointd.merge import diff_states
from checkpointd.models import Checkpoint, Event, History, Lineage, Page, VerifyResult
from checkpointd.paging import walk_history, walk_list
from checkpointd.reads.checkpoints import ReadModel
from checkpointd.reads.search import SearchRequest
from checkpointd.reads.sessions import read_session_state, read_sessions
from checkpointd.reads.stats import read_stats
from checkpointd.reads.validate import create_event, failed_report, validate_stored
from checkpointd.requests import (
    DEFAULT_PAGE_SIZE,
    MAX_LINEAGE,
    CopySessionRequest,
    CreateRequest,
    DeleteByMetadataRequest,
    HistoryRequest,
    ListOptions,
    PruneSessionRequest,
    PutWritesRequest,
    SearchCheckpointsRequest,
    UpdateRequest,
    batch_items,
    distinct_ids,
    request_mapping,
    text,
    wire_keys,
)
from checkpointd.restore import RestoreRequest, restore
from checkpointd.restore_details import restore_reply
from checkpointd.results import (
    CopySessionResult,
    Diff,
    PendingWrite,
    PutWritesResult,
    RestoreResult,
    SessionPage,
    SessionState,
    Stats,
    ValidationReport,
)
from checkpointd.sizing import looks_big
from checkpointd.snapshots import SnapshotCodec
from checkpointd.storage.lock import WriterLock
from checkpointd.storage.readers import ReaderPool
from checkpointd.storage.writer import CommitListener, Committed, GroupCommitWriter
from checkpointd.subscriptions import LocalNotificationStream
from checkpointd.views import Views
from checkpointd.write import commands as cmd
from checkpointd.write import replies
from checkpointd.write.encode import encode_create, encode_writes
from checkpointd.write.idempotency import Idempotency, Reply, keyed, submit

if TYPE_CHECKING:
    from checkpointd.storage.replica import StreamReplica

log = structlog.get_logger("checkpointd")

_EVER_CREATED = "SELECT 1 FROM events WHERE stream = ? AND version = 1"
_DUE = (
    "SELECT id FROM checkpoints WHERE retention_expires_at <= ?"
    " ORDER BY retention_expires_at LIMIT ?"
)


class CheckpointManager:
    """The checkpoint store, embedded. Use ``async with`` or ``open()``/``close()``.

    Settings are keyword arguments named as the original Checkpoint API's configuration in
    snake_case (durations in seconds), a ``Config``, or that configuration mapping as it is
    (camelCase, durations in milliseconds: ``CheckpointManager({"databasePath": "cp.db"})``).
    Every method that takes a request accepts keyword arguments (snake_case) or one mapping in
    the wire shape (camelCase).

    While open it runs its background loops: with ``auto_cleanup`` (the default)
    ``cleanup_once()`` every ``cleanup_interval`` seconds, the first one interval after opening
    (``cleanup_loop=False`` leaves that to the caller, as the daemon does); with
    ``enable_metrics`` and an ``on_metrics`` callback, ``publish_metrics_once()`` every
    ``metrics_interval`` seconds. ``close()`` cancels them.

    Raises:
        ConfigError: an unknown setting or a bad value (at construction, naming the key).
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        clock: Clock | None = None,
        on_commit: CommitListener | None = None,
        on_metrics: Callable[[dict[str, Any]], object] | None = None,
        cleanup_loop: bool = True,
        replica: StreamReplica | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise ConfigError("settings", sorted(settings), "pass a Config or settings, not both")
        if config is None:
            config = Config.from_mapping(settings)
        elif not isinstance(config, Config):
            config = Config.from_seed(config)  # the original document's mapping: camelCase, ms
        if on_metrics is not None and not config.enable_metrics:
            raise ConfigError("enable_metrics", False, "on_metrics is given: set it to true")
        self.config = config
        self._on_metrics = on_metrics
        self._cleanup_loop = cleanup_loop
        self._replica = replica  # the daemon's, when the log's truth is a JetStream stream
        self._background = Background()
        self._collector: MetricsCollector | None = None
        self._streams: set[LocalNotificationStream] = set()
        self._clock: Clock = clock or SystemClock()
        self._listeners: list[CommitListener] = [] if on_commit is None else [on_commit]
        self._stack: AsyncExitStack | None = None
        self._writer: GroupCommitWriter | None = None
        self._views: Views | None = None
        self._reads: ReadModel | None = None
        self._codec: SnapshotCodec | None = None
        self._lock: WriterLock | None = None
        self._opened = False

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the database (creating and migrating it), the writer and the readers.

        Raises:
            ConfigError: the encryption settings are unusable.
            StorageError: the database cannot be opened.
            DatabaseInUseError: another process (or manager) writes to this database.
        """
        if self._stack is not None:
            return self
        stack = AsyncExitStack()
        lock = WriterLock(os.fspath(self.config.database_path))
        lock.acquire()
        stack.callback(lock.release)  # released last, after the writer has closed
        self._lock = lock
        try:
            # The writer thread must not hold the manager (a partial, not a bound method), so an
            # unclosed manager can be collected and warn.
            nudge = _Nudge()
            writer = GroupCommitWriter(
                functools.partial(open_write_side, self.config, self._clock),
                max_group=self.config.max_group_size,
                on_commit=functools.partial(_fan_out, self._listeners),
                on_head=nudge,
                reserve_path=self.config.views_file,
                replica=self._replica,
            )
            stack.push_async_callback(writer.close)
            await writer.start()
            store_id = await writer.exclusive(_store_id)
            views = Views(
                log_path=os.fspath(self.config.database_path),
                views_path=self.config.views_file,
                store_id=store_id,
                fts_enabled=self.config.enable_fts,
                mode=self.config.projector,
                read_timeout=self.config.read_timeout,
                log_head=lambda: writer.head,
            )
            nudge.attach(views)
            self._views = views
            # Closed after the writer (which finishes every queued command first), so that the
            # stopping projector applies everything the log holds.
            stack.push_async_callback(_close_in_order, writer, views)
            await views.start()
            readers = ReaderPool(
                self.config.views_file,
                os.fspath(self.config.database_path),
                self.config.reader_connections,
                barrier=views.barrier,
            )
            stack.push_async_callback(readers.close)
            await readers.open()
            views.pause_reads = weakref.WeakMethod(readers.pause)
            views.resume_reads = weakref.WeakMethod(readers.resume)
        except BaseException:
            await stack.aclose()
            raise
        self._codec = writer.handler.codec
        self._writer = writer
        self._reads = ReadModel(
            readers,
            self._codec,
            verify_checksums=self.config.enable_validation,
            max_page_snapshots=self.config.max_checkpoint_size,
        )
        self._collector = MetricsCollector(self, RequestMetrics())
        # Pushed last, so unwound first: the loops stop and subscribers end before the writer.
        stack.callback(self._end_streams)
        stack.push_async_callback(self._background.stop)
        self._stack = stack
        self._opened = True
        self._start_loops()
        return self

    def _start_loops(self) -> None:
        config = self.config
        if config.auto_cleanup and self._cleanup_loop:
            self._background.every(config.cleanup_interval, self.cleanup_once, "cleanup")
        if config.enable_metrics and self._on_metrics is not None:
            self._background.every(config.metrics_interval, self.publish_metrics_once, "metrics")

    async def close(self) -> None:
        """Finish queued commands, then close readers and the writer. Idempotent."""
        stack, self._stack = self._stack, None
        self._reads = None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_stack", None) is None:
            return
        warnings.warn(
            f"unclosed CheckpointManager for {self.config.database_path!r}:"
            " use 'async with' or 'await close()'",
            ResourceWarning,
            stacklevel=1,
        )
        self._background.abandon()
        if self._views is not None:
            self._views.abandon()
        if self._writer is not None:
            self._writer.abandon()
        if self._lock is not None:
            self._lock.release()

    def add_commit_listener(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` on the event loop after every COMMIT (see ``CommitListener``).

        Returns a function that removes it. A listener that raises is logged and skipped.
        """
        self._listeners.append(listener)
        return functools.partial(self._listeners.remove, listener)

    def notifications(
        self, event_type: str = "*", session_id: str | None = None
    ) -> LocalNotificationStream:
        """Notifications as the daemon publishes them, in-process: ``async with
        manager.notifications("restored", "s-1") as stream: async for n in stream: ...``.

        The same API and ``Notification`` values as ``CheckpointClient.notifications``:
        ``event_type`` is ``created``, ``updated``, ``deleted``, ``expired``, ``restored``,
        ``writes`` or ``*``; ``session_id`` None means every session; a restore asked with
        ``notify=False`` sends none. The iteration ends when the manager closes. Raises
        InvalidRequestError for an unknown type, UnavailableError on entering while the
        manager is not open.
        """
        return LocalNotificationStream(self._subscribe, event_type, session_id)

    def _subscribe(self, stream: LocalNotificationStream) -> Callable[[], None]:
        self._require()
        self._listeners.append(stream.on_commit)
        self._streams.add(stream)

        def unsubscribe() -> None:
            self._streams.discard(stream)
            if stream.on_commit in self._listeners:
                self._listeners.remove(stream.on_commit)

        return unsubscribe

    def _end_streams(self) -> None:
        streams, self._streams = self._streams, set()
        for stream in streams:
            stream.end()

    async def metrics(self) -> dict[str, Any]:
        """The metrics document the daemon publishes on ``<prefix>.metrics``, for the interval
        since the previous call (or since opening).

        In-process no request passes through a service, so its ``requests`` figures stay 0.
        Raises UnavailableError when the manager is not open.
        """
        self._require()
        assert self._collector is not None
        return await self._collector.collect()

    async def publish_metrics_once(self) -> dict[str, Any]:
        """One step of the metrics loop: ``metrics()``, handed to ``on_metrics`` (awaited when
        it returns an awaitable). Returns the document."""
        document = await self.metrics()
        if self._on_metrics is not None:
            result = self._on_metrics(document)
            if inspect.isawaitable(result):
                await result
        return document

    def _require(self) -> tuple[GroupCommitWriter, ReadModel]:
        if self._writer is None or self._reads is None:
            state = "closed" if self._opened else "not open"
            raise UnavailableError(f"the checkpoint manager is {state}")
        return self._writer, self._reads

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        request: Mapping[str, Any] | None = None,
        /,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Checkpoint:
        """Create a checkpoint from keyword arguments or one wire-shaped mapping.

        Durable when it returns. With ``idempotency_key``, a repeated call with the same key and
        request creates nothing and returns the first result (the same key with another request
        is a ConflictError); so do the other writing methods. Raises:
            InvalidRequestError: a missing, unknown or wrong-typed field.
            TooLargeError: the snapshot is over ``max_checkpoint_size``.
            IntegrityError: a supplied ``checksum`` or ``size`` does not match.
            NotFoundError: ``parentCheckpoint`` or ``restoredFrom`` names no checkpoint.
        """
        writer, _ = self._require()
        data = request_mapping(request, fields, "create")
        req = CreateRequest.from_wire(data)
        big = looks_big(req.snapshot)
        key = None
        if idempotency_key is not None:
            reply = replies.checkpoint(req.snapshot)
            key = await _keyed(idempotency_key, "create", data, reply, big=big)
        item: CreateRequest | cmd.EncodedCreate = req  # a small snapshot: encoded by the writer
        if big:
            (item,) = await self._encoded_if_big((req,), big=big)
        created = await submit(writer, cmd.Create(item, cmd.Context(req.created_by, None, key)))
        assert isinstance(created, Checkpoint)
        return created

    async def create_batch(
        self, requests: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Checkpoint]:
        """Create many checkpoints atomically: all of them commit, or none (the first error)."""
        writer, _ = self._require()
        datas = [request_mapping(item, {}, "create") for item in batch_items(requests)]
        reqs = tuple(CreateRequest.from_wire(data) for data in datas)
        distinct_ids(reqs)
        big = looks_big([req.snapshot for req in reqs])
        reply = replies.checkpoints([req.snapshot for req in reqs])
        key = await _keyed(idempotency_key, "create_batch", datas, reply, big=big)
        items = await self._encoded_if_big(reqs, big=big)
        created = await submit(writer, cmd.CreateBatch(items, cmd.Context(idempotency=key)))
        assert isinstance(created, list)
        return created

    async def _encoded_if_big(
        self, requests: tuple[CreateRequest, ...], *, big: bool
    ) -> tuple[CreateRequest | cmd.EncodedCreate, ...]:
        """Big snapshots are encoded now on a worker thread; small ones by the writer."""
        codec = self._codec
        assert codec is not None
        if not big:
            return requests

        def encode_all() -> tuple[CreateRequest | cmd.EncodedCreate, ...]:
            return tuple(encode_create(codec, self.config, request) for request in requests)

        return await asyncio.to_thread(encode_all)

    async def update_checkpoint(
        self,
        checkpoint_id: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Checkpoint:
        """Change ``name``, ``metadata`` (replaced whole), ``branches`` or ``retentionExpiresAt``.

        The result carries no snapshot. Raises:
            NotFoundError: no such checkpoint.
            ConflictError: ``expected_version`` is not the current version.
            InvalidRequestError: a snapshot change or an unknown field.
        """
        writer, _ = self._require()
        data = request_mapping(changes, fields, "update")
        req = UpdateRequest.of(checkpoint_id, data, expected_version)
        wire = {"id": checkpoint_id, "changes": data, "expectedVersion": expected_version}
        key = keyed(idempotency_key, "update", wire, replies.checkpoint())
        updated = await submit(writer, cmd.Update(req, cmd.Context(idempotency=key)))
        assert isinstance(updated, Checkpoint)
        return updated

    async def delete_checkpoint(
        self, checkpoint_id: str, *, idempotency_key: str | None = None
    ) -> bool:
        """Delete a checkpoint and physically remove its snapshot; False if there was none.

        The log keeps the ``checkpoint.deleted`` event with the checksum.
        """
        writer, _ = self._require()
        checkpoint_id = text(checkpoint_id, "id")
        key = keyed(idempotency_key, "delete", {"id": checkpoint_id}, replies.DELETED)
        deleted = await submit(writer, cmd.Delete(checkpoint_id, cmd.Context(idempotency=key)))
        return bool(deleted)

    async def delete_expired_checkpoints(self, *, idempotency_key: str | None = None) -> int:
        """Expire every checkpoint whose retention has ended; returns how many.

        Runs in steps of a few hundred checkpoints, each its own transaction.
        """
        writer, reads = self._require()
        total = 0
        while True:
            key = keyed(idempotency_key, "delete_expired", {}, replies.EXPIRED)
            context = replace(cmd.RETENTION, idempotency=key)
            now = self._clock.now()
            limit = cmd.EXPIRE_STEP
            due = await reads.readers.fetchall(_DUE, (format_timestamp(now), limit))
            candidates = tuple(checkpoint_id for (checkpoint_id,) in due)
            step = cmd.ExpireDue(now=now, candidates=candidates, prior=total, context=context)
            done = await submit(writer, step)
            assert isinstance(done, cmd.ExpiredStep)
            total = done.total
            # A retry answered from its key's stored reply has expired nothing now: it is done.
            if len(candidates) < limit or not done.expired:
                return total
            faults.crash_point("mid-cleanup")

    async def put_writes(
        self,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[Any],
        task_path: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> PutWritesResult:
        """Tie a task's pending writes to a live checkpoint.

        ``writes`` are ``{index, channel, value}`` mappings or ``(index, channel, value)``
        tuples; a value is anything a snapshot may hold, bytes too. Per (checkpoint, task,
        index): an ``index >= 0`` is written once (a repeat is left out, not refused), an
        ``index < 0`` replaces the one before. The values are stored like a snapshot
        (compressed, encrypted) and go when the checkpoint is deleted or expires. Raises:
            NotFoundError: the checkpoint is not live.
            InvalidRequestError: a malformed write or a value no snapshot could hold.
            TooLargeError: the values are over ``max_checkpoint_size``.
        """
        writer, _ = self._require()
        req = PutWritesRequest.of(checkpoint_id, task_id, writes, task_path)
        values = [write.value for write in req.writes]
        big = looks_big(values)
        key = None
        if idempotency_key is not None:
            wire = req.to_wire()
            key = await _keyed(idempotency_key, "put_writes", wire, replies.PUT_WRITES, big=big)
        encoded = None
        if big:  # encoded now on a worker thread (small ones by the writer)
            codec = self._codec
            assert codec is not None
            encoded = await asyncio.to_thread(
                encode_writes,
                codec,
                req.checkpoint_id,
                values,
                compress=self.config.enable_compression,
                encrypt=self.config.enable_encryption,
            )
        command = cmd.PutWrites(req, encoded, cmd.Context(idempotency=key))
        done = await submit(writer, command)
        assert isinstance(done, PutWritesResult)
        return done

    async def get_writes(self, checkpoint_id: str) -> list[PendingWrite]:
        """The checkpoint's pending writes, in (task_path, task_id, index) order.

        Raises NotFoundError for a checkpoint that is not live, IntegrityError if a value's
        stored bytes are damaged.
        """
        _, reads = self._require()
        return await reads.writes(checkpoint_id)

    async def copy_session(
        self,
        source_session_id: str,
        target_session_id: str,
        *,
        ids: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> CopySessionResult:
        """Copy every live checkpoint of a session into another, atomically.

        Oldest first, each becomes a new checkpoint of the target with the same name,
        timestamp, snapshot, branches, metadata (``parentCheckpoint`` pointing at the parent's
        copy when that was copied too) and pending writes; its ``restoredFrom`` is the
        checkpoint it copies. ``ids`` may choose copies' ids (``{source_id: new_id}``); the
        others get new ones. The source is unchanged; an empty source copies nothing. Raises:
            InvalidRequestError: the same session twice, or a malformed id.
            ConflictError: a chosen id exists or existed.
        """
        writer, _ = self._require()
        req = CopySessionRequest.of(source_session_id, target_session_id, ids)
        key = keyed(idempotency_key, "copy_session", req.to_wire(), replies.COPIED)
        done = await submit(writer, cmd.CopySession(req, cmd.Context(idempotency=key)))
        assert isinstance(done, CopySessionResult)
        return done

    async def prune_session(
        self, session_id: str, keep: int = 1, *, idempotency_key: str | None = None
    ) -> int:
        """Delete all but the ``keep`` newest live checkpoints of a session (newest by
        ``timestamp``, ties by creation order), with their pending writes, atomically;
        returns how many were deleted. ``keep=0`` deletes them all."""
        writer, _ = self._require()
        req = PruneSessionRequest.of(session_id, keep)
        key = keyed(idempotency_key, "prune_session", req.to_wire(), replies.DELETED_COUNT)
        done = await submit(writer, cmd.PruneSession(req, cmd.Context(idempotency=key)))
        assert isinstance(done, int)
        return done

    async def delete_by_metadata(
        self,
        key: str,
        values: Sequence[Any],
        session_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Delete every live checkpoint (of ``session_id``, if given) whose ``metadata[key]``
        equals one of ``values`` (strings, numbers, booleans; a boolean equals only a
        boolean), with their pending writes, atomically; returns how many were deleted.

        A checkpoint created while this call runs may be left alone.
        """
        writer, reads = self._require()
        req = DeleteByMetadataRequest.of(key, values, session_id)
        idempotency = keyed(
            idempotency_key, "delete_by_metadata", req.to_wire(), replies.DELETED_COUNT
        )
        marks = ", ".join("?" * len(req.values))
        sql = (
            "SELECT c.id FROM checkpoints c, json_each(c.metadata) j"
            f" WHERE j.key = ? AND j.value IN ({marks})"
        )
        args: list[Any] = [req.key, *req.values]
        if req.session_id is not None:
            sql += " AND c.session_id = ?"
            args.append(req.session_id)
        found = await reads.readers.fetchall(sql + " ORDER BY c.seq", args)
        candidates = tuple(checkpoint_id for (checkpoint_id,) in found)
        command = cmd.DeleteByMetadata(req, candidates, cmd.Context(idempotency=idempotency))
        done = await submit(writer, command)
        assert isinstance(done, int)
        return done

    async def cleanup_once(self) -> int:
        """One step of the auto-cleanup loop (the daemon calls it every ``cleanup_interval``).

        Expires what is due and forgets idempotency keys older than ``idempotency_window``.
        Returns the number of checkpoints expired.
        """
        writer, _ = self._require()
        expired = await self.delete_expired_checkpoints()
        horizon = self._clock.now() - timedelta(seconds=self.config.idempotency_window)
        await writer.submit(cmd.ForgetKeys(before=horizon))
        return expired

    async def rebuild(self, *, progress: Callable[[int], None] | None = None) -> int:
        """Build the views again from event 0, online; returns the events replayed.

        A fresh views file is built beside the live one while reads and writes go on, then
        swapped in (reads pause for the swap, then wait for the new views to reach the log
        head as always). ``progress(events_so_far)`` is called every 10,000 events from a
        worker thread.
        """
        self._require()
        assert self._views is not None
        return await self._views.rebuild(progress)

    @property
    def log_head(self) -> int:
        """The seq of the last event committed to the log (0: none, or not open)."""
        return 0 if self._writer is None else self._writer.head

    @property
    def views_position(self) -> int:
        """The log position the views have reached, as the projector last reported it."""
        return 0 if self._views is None else self._views.position

    @property
    def views_progress(self) -> int:
        """Events the projector has applied, counting a fresh build of the views as it goes."""
        return 0 if self._views is None else max(self._views.position, self._views.progress)

    async def wait_for_views(self, seq: int, within: float | None = None) -> int:
        """Wait until the views have reached log position ``seq``; returns their position.

        Raises UnavailableError after ``within`` seconds (default ``read_timeout``).
        """
        self._require()
        assert self._views is not None
        return await self._views.wait_for(seq, within)

    # -- reads ---------------------------------------------------------------------------

    async def get_checkpoint(
        self, checkpoint_id: str, include_snapshot: bool = True
    ) -> Checkpoint | None:
        """The checkpoint, or None. Raises IntegrityError if its snapshot cannot be read."""
        _, reads = self._require()
        return await reads.get(checkpoint_id, include_snapshot=include_snapshot)

    async def get_checkpoints_by_session(
        self, session_id: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Page:
        """A page of the session's checkpoints (newest first by default).

        Keywords: ``where``, ``params``, ``order_by``, ``page``, ``page_size``,
        ``include_snapshot`` (default False); or the original API's options mapping.
        """
        return await self._list("session_id", text(session_id, "sessionId"), options, kwargs)

    async def get_checkpoints_by_feature(
        self, feature: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Page:
        """A page of the checkpoints whose ``metadata.feature`` is ``feature``."""
        return await self._list("feature", text(feature, "feature"), options, kwargs)

    def iter_checkpoints_by_session(
        self, session_id: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Checkpoint]:
        """Every checkpoint of the session: ``async for cp in manager.iter_...(...)``.

        Reads ``get_checkpoints_by_session`` page after page with the same options (``page`` is
        where to start, ``page_size`` how many each read takes); see ``checkpointd.paging`` for
        what a concurrent create or delete does to the walk.
        """
        return walk_list(self.get_checkpoints_by_session, session_id, options, kwargs)

    def iter_checkpoints_by_feature(
        self, feature: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Checkpoint]:
        """Every checkpoint of the feature, page after page (as ``iter_checkpoints_by_session``)."""
        return walk_list(self.get_checkpoints_by_feature, feature, options, kwargs)

    async def _list(
        self, column: str, value: str, options: Mapping[str, Any] | None, kwargs: dict[str, Any]
    ) -> Page:
        _, reads = self._require()
        opts = ListOptions.of(options, kwargs)
        return await reads.list(
            column=column,
            value=value,
            where=opts.where,
            params=opts.params,
            order_by=opts.order_by,
            page=opts.page,
            page_size=opts.page_size,
            include_snapshot=opts.include_snapshot,
        )

    async def history(self, request: Mapping[str, Any] | None = None, /, **kwargs: Any) -> History:
        """Events oldest first (``checkpoint_id=``, ``session_id=``, ``after_seq=``, ``limit=``)."""
        _, reads = self._require()
        req = HistoryRequest.from_wire(request_mapping(request, kwargs, "history"))
        return await reads.history(
            checkpoint_id=req.checkpoint_id,
            session_id=req.session_id,
            after_seq=req.after_seq,
            limit=req.limit,
        )

    def iter_history(
        self, request: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Event]:
        """Every event from ``after_seq`` on, oldest first, following ``next`` page after page
        (the options of ``history``; ``limit`` is how many each read takes)."""
        return walk_history(self.history, request, kwargs)

    async def store_id(self) -> str:
        """The store's id: 32 hex digits chosen when its log was created, never changed.

        The service advertises it (``store_id`` in ``$SRV.INFO``) so that two different stores
        on one subject prefix are told apart. A copy of the database file has the same id.
        Raises UnavailableError when the store is closed.
        """
        _, reads = self._require()
        row = await reads.readers.fetchone(
            "SELECT value FROM meta WHERE key = 'store_id'", views=False
        )
        assert row is not None, "migration 5 writes the store id"
        return str(row[0])

    async def health(self) -> int:
        """The log's last ``seq``, read by a reader once the writer thread is seen running.

        The daemon's watchdog and metrics call it. It does not queue behind the writer, so a
        long rebuild does not make the store look dead. Raises UnavailableError (or
        StorageError) when the store is closed, the writer thread has stopped or the database
        cannot be read.
        """
        writer, reads = self._require()
        if not writer.alive:
            raise UnavailableError("the writer thread has stopped")
        row = await reads.readers.fetchone("SELECT COALESCE(MAX(seq), 0) FROM events", views=False)
        return 0 if row is None else int(row[0])

    async def verify_log(self, *, progress: Callable[[int], None] | None = None) -> VerifyResult:
        """Re-hash the whole event log and check it as ``checkpointd.events.verify`` says.

        ``ok`` is False at the first changed or missing event, signed head that does not hold
        (with an encryption key configured), or view row that differs from its create event.
        ``progress(events_so_far)`` is called every 10,000 events from a worker thread.
        """
        _, reads = self._require()
        keys = ChainKeys.from_keyring(reads.codec.keyring)
        path = os.fspath(self.config.database_path)
        views = self.config.views_file
        return await asyncio.to_thread(verify_file, path, progress, keys, views)

    async def search_checkpoints(
        self,
        query: str | Mapping[str, Any] | None = None,
        limit: int | None = None,
        /,
        **kwargs: Any,
    ) -> Page:
        """Full-text search with filters: ``("milestone", 10)`` or the original API's mapping.

        Keywords (instead of a mapping): ``query``, ``limit``, ``filters``, ``sorting``,
        ``pagination``. Returns a Page with ``scores`` (higher is more relevant). An empty
        query (or ``*``) lists by the filters; text without an indexable term (``:``) matches
        nothing. Raises InvalidRequestError for a text search while ``enable_fts`` is off.
        """
        _, reads = self._require()
        data = SearchCheckpointsRequest.of(query, limit, kwargs).fields
        request = SearchRequest.from_wire(data)
        if request.has_text and not self.config.enable_fts:
            raise InvalidRequestError(
                "full-text search is off (enable_fts = false); an empty query or '*' lists"
                " by filters",
                field="query",
            )
        return await reads.search(request)

    async def get_checkpoint_stats(self) -> Stats:
        """Totals and counts from the maintained projection (no scan)."""
        _, reads = self._require()
        return await read_stats(reads.readers)

    async def validate_checkpoint(self, checkpoint_id: str) -> ValidationReport:
        """Decrypt, decompress, re-checksum, re-size and schema-check one checkpoint.

        Damage is reported (``is_valid`` False), not raised. Raises NotFoundError.
        """
        _, reads = self._require()
        try:
            row, blob = await reads.stored(checkpoint_id)
        except IntegrityError as exc:  # its row or blob cannot even be read
            return failed_report(exc.message)
        created = await create_event(reads.readers, row)
        return await asyncio.to_thread(validate_stored, reads.codec, row, blob, created)

    async def restore_checkpoint(
        self,
        checkpoint_id: str,
        options: Mapping[str, Any] | None = None,
        /,
        *,
        custom_resolver: Callable[..., Any] | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> RestoreResult:
        """Restore a checkpoint into its session (or ``target_session_id``), merging states.

        Keywords: ``target_session_id``, ``merge_strategy`` (overwrite, merge, keep-original),
        ``preserve_current_state``, ``current_state``, ``custom_resolver``, ``validation``,
        ``rollback_on_error``, ``notify``, ``timeout`` (seconds), ``dry_run``; or the original
        API's options mapping (its ``timeout`` in milliseconds). See ``checkpointd.restore``.
        """
        writer, reads = self._require()
        if options is not None:
            if kwargs:
                raise InvalidRequestError("pass an options mapping or keywords, not both")
            request = RestoreRequest.from_wire(checkpoint_id, options, timeout_unit=0.001)
            given: Any = ["wire", checkpoint_id, options]
        else:
            data = wire_keys(kwargs)
            if custom_resolver is not None:
                data["conflictResolution"] = {
                    **data.get("conflictResolution", {}),
                    "customResolver": custom_resolver,
                }
            request = RestoreRequest.from_wire(checkpoint_id, data, timeout_unit=1.0)
            given = ["python", checkpoint_id, data]
        assert self._codec is not None
        key = keyed(idempotency_key, "restore", given, restore_reply(reads))
        if request.dry_run:
            key = None  # a dry run writes nothing, so there is nothing to do once
        return await restore(
            request, reads=reads, writer=writer, codec=self._codec, config=self.config, key=key
        )

    async def diff_checkpoints(self, before_id: str, after_id: str) -> Diff:
        """The structural differences between two checkpoints' snapshots (JSON Pointer paths)."""
        _, reads = self._require()
        before = await self._snapshot_of(reads, before_id)
        after = await self._snapshot_of(reads, after_id)
        if looks_big([before, after]):
            changes = await asyncio.to_thread(diff_states, before, after)
        else:
            changes = diff_states(before, after)
        return Diff(tuple(change.to_wire() for change in changes))

    @staticmethod
    async def _snapshot_of(reads: ReadModel, checkpoint_id: str) -> Mapping[str, Any]:
        found = await reads.get(checkpoint_id, include_snapshot=True)
        if found is None or found.snapshot is None:
            raise NotFoundError("checkpoint", checkpoint_id)
        return found.snapshot

    async def get_lineage(
        self, checkpoint_id: str, *, limit: int = MAX_LINEAGE, offset: int = 0
    ) -> Lineage:
        """Live ancestors and descendants through parent and restore links, nearest first.

        At most ``limit`` (1..1000, default 1000) of each, after skipping ``offset`` of each;
        the result's ``next`` is the ``offset`` of the following page, None when both lists
        are complete. Raises InvalidRequestError for a bad ``limit`` or ``offset``, and
        NotFoundError for an id that never existed (a deleted checkpoint's lineage is read).
        """
        _, reads = self._require()
        checkpoint_id = text(checkpoint_id, "id")
        # The log, not the view: a deleted checkpoint still has its lineage.
        if await reads.readers.fetchone(_EVER_CREATED, (checkpoint_id,)) is None:
            raise NotFoundError("checkpoint", checkpoint_id)
        return await reads.lineage(checkpoint_id, limit=limit, offset=offset)

    async def get_session_state(self, session_id: str) -> SessionState:
        """The session's current state: what a restore into it merges with.

        Raises NotFoundError for a session the log has never seen.
        """
        _, reads = self._require()
        return await read_session_state(reads.readers, reads.codec, session_id)

    async def get_sessions(
        self, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> SessionPage:
        """A page of every session with its live checkpoints and last event, most recent first.

        Raises InvalidRequestError for a page below 1 or a page size outside 1..1000.
        """
        _, reads = self._require()
        return await read_sessions(reads.readers, page, page_size)


async def _close_in_order(writer: GroupCommitWriter, views: Views) -> None:
    try:
        await writer.close()
    finally:
        await views.stop()


class _Nudge:
    """The writer's head listener: wakes the projector (set once the views exist).

    It holds the views weakly: the writer's thread must not keep them (and through them the
    reader pool) alive after an unclosed manager is collected.
    """

    def __init__(self) -> None:
        self._views: weakref.ref[Views] | None = None

    def attach(self, views: Views) -> None:
        self._views = weakref.ref(views)

    def __call__(self, head: int) -> None:
        views = None if self._views is None else self._views()
        if views is not None:
            views.nudge(head)


def _store_id(handler: Any) -> str:
    row = handler.conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    assert row is not None, "migration 5 writes the store id"
    return str(row[0])


def _fan_out(listeners: list[CommitListener], committed: list[Committed]) -> None:
    for listener in tuple(listeners):
        try:
            listener(committed)
        except Exception:
            log.exception("commit listener failed")


async def _keyed(
    key: str | None, operation: str, request: Any, reply: Reply, *, big: bool
) -> Idempotency | None:
    """``keyed``, on a worker thread for a big request (its digest covers every byte)."""
    if key is not None and big:
        return await asyncio.to_thread(keyed, key, operation, request, reply)
    return keyed(key, operation, request, reply)
