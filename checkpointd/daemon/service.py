"""The ``checkpointd`` NATS service: endpoints, concurrency, replies, notifications.

A ``nats.micro`` service (so ``$SRV.PING/INFO/STATS`` answer) with one endpoint per verb on
``<prefix>.<verb>`` in a queue group. ``nats.micro`` awaits each handler before taking the next
message of that endpoint, so the handlers here only admit a request (waiting while
``max_inflight`` requests are running, which is the back-pressure) and run it as a task the
service owns: 64 callers in flight reach the writer together and share its group commits.

Every request is answered: the result in the request's encoding, or an error with the
``Nats-Service-Error``/``-Code`` headers and the ``{"error": {...}}`` body. An unexpected
exception is logged with its context and answered with a generic 500; its text never leaves.
Every reply to a verb carries ``Checkpointd-Seq``, the log position it was answered at (the
log head for a call that records none: one answered from the log itself, or an error), and a
request's ``Checkpointd-Min-Seq`` is the floor of its reads (``checkpointd.consistency``).
Upload chunk replies and download chunks carry no position: they move the bytes of one request
or reply, whose own message carries it.
No message the service sends is bigger than the connection's ``max_payload``, headers counted.

The service's long-lived tasks (the notification publisher and the transfer sweeper) belong to
one ``asyncio.TaskGroup``, run by the task ``start()`` creates and ``stop()`` ends. Requests in
flight are tasks of their own, tracked apart: each answers its own caller, so one that fails
must not cancel the others nor the publisher, as a failing member of a task group would.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import structlog
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from checkpointd import __version__, consistency, faults, wire
from checkpointd.compact_json import compact_dumps
from checkpointd.daemon.endpoints import ENDPOINTS, WRITES
from checkpointd.daemon.metrics import RequestMetrics
from checkpointd.daemon.notifications import Outgoing, notifications, without_state
from checkpointd.daemon.transfers import Transfers
from checkpointd.daemon.uploads import connection_of
from checkpointd.errors import CheckpointError, InternalError, InvalidRequestError
from checkpointd.loops import every
from checkpointd.manager import CheckpointManager
from checkpointd.sizing import looks_big
from checkpointd.storage.writer import Committed
from checkpointd.transport import barrier

log = structlog.get_logger("checkpointd.service")

SERVICE_NAME = "checkpointd"
DESCRIPTION = "Checkpoints of agent-session and workflow state: create, restore, search, audit."
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_HEADROOM = 1024  # bytes kept free for headers in a download chunk
_DECODE_ON_LOOP = 64 * 1024  # the biggest request body decoded on the event loop
_NOTIFY_BACKLOG = 100_000
_UNANSWERED = -1  # no call recorded the position it answered at
_SWEEP_INTERVAL = 30.0


class CheckpointService:
    """Serves a CheckpointManager on NATS. ``start()``/``stop()`` or ``async with``.

    The manager and the connection are the caller's: the service neither opens nor closes them.
    """

    def __init__(
        self,
        manager: CheckpointManager,
        nc: Client,
        *,
        prefix: str = "checkpoint",
        queue_group: str = SERVICE_NAME,
        max_inflight: int = 256,
        transfer_ttl: float = 300.0,
        transfer_idle_timeout: float = 10.0,
        max_uploads: int = 256,
        max_uploads_per_connection: int = 16,
        writes: bool = True,
        identity: Mapping[str, str] | None = None,
        log_floor: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """``writes`` False: the write endpoints (and the upload, which only writes need) are
        not subscribed until ``start_writes()`` (a cluster's daemon that is not the writer).
        ``identity``: metadata naming this daemon in ``$SRV.INFO`` (with ``role``).
        ``log_floor(seq)``: returns once the log has reached a read's ``Checkpointd-Min-Seq``
        (a cluster's daemon may be behind the writer; reads answered from the log alone, such
        as health and verify, would otherwise not wait for it, as the views' reads do)."""
        if not _PREFIX.fullmatch(prefix):
            raise InvalidRequestError(f"subject prefix {prefix!r} must be dot-separated tokens")
        self._manager = manager
        self._nc = nc
        self._prefix = prefix
        self._queue_group = queue_group
        self._slots = asyncio.Semaphore(max_inflight)
        self._transfers = Transfers.sized_for(
            manager.config.max_checkpoint_size,
            max_uploads=max_uploads,
            max_uploads_per_connection=max_uploads_per_connection,
            idle_timeout=transfer_idle_timeout,
            ttl=transfer_ttl,
        )
        self._sweep_interval = min(_SWEEP_INTERVAL, transfer_idle_timeout)
        self._service: Service | None = None
        self._writes_here = writes
        self._identity = dict(identity or {})
        self._log_floor = log_floor
        self._writer_service: Service | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # One entry per COMMIT (its notifications in seq order); ``_backlog`` counts the
        # notifications queued, which ``_NOTIFY_BACKLOG`` bounds.
        self._outbox: asyncio.Queue[list[Outgoing]] = asyncio.Queue()
        self._backlog = 0
        self._running: asyncio.Task[None] | None = None  # runs the task group
        self._closing = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None
        self._dropped = 0
        self.metrics = RequestMetrics()

    @property
    def prefix(self) -> str:
        return self._prefix

    def figures(self) -> dict[str, Any]:
        """The service's own state for the metrics document."""
        return {
            "inflight": len(self._inflight),
            "notifications": {"backlog": self._outbox.qsize(), "dropped": self._dropped},
            "transfers": self._transfers.figures(),
        }

    async def start(self) -> Self:
        """Register the service and its endpoints, and start publishing notifications.

        ``$SRV.INFO`` carries the store's id and the prefix in its metadata (``store_id``,
        ``prefix``), so a second store on the same prefix can be found (``checkpointd serve``
        looks before it starts serving).
        """
        store_id = await self._manager.store_id()
        try:
            await self._start_tasks()
            self._unlisten = self._manager.add_commit_listener(self._on_commit)
            await self._add_service(store_id)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start_tasks(self) -> None:
        """Start the task that runs the task group; return once the group's tasks are in it."""
        started = asyncio.get_running_loop().create_future()
        self._closing.clear()
        self._running = asyncio.get_running_loop().create_task(
            self._run_tasks(started), name="checkpointd service"
        )
        await started

    async def _run_tasks(self, started: asyncio.Future[None]) -> None:
        """The service's task group: its loops run until ``stop()`` sets ``_closing``."""
        async with asyncio.TaskGroup() as tasks:
            self._publisher = tasks.create_task(self._publish_loop(), name="notifications")
            sweeper = tasks.create_task(
                every(self._sweep_interval, self._sweep, "transfer sweep"), name="sweeper"
            )
            started.set_result(None)
            await self._closing.wait()
            self._publisher.cancel()
            sweeper.cancel()

    async def _new_service(self, metadata: dict[str, str], queue_group: str) -> Service:
        return await add_service(
            self._nc,
            name=SERVICE_NAME,
            version=__version__,
            description=DESCRIPTION,
            metadata=metadata,
            queue_group=queue_group,
        )

    async def _add_service(self, store_id: str) -> None:
        metadata = {"store_id": store_id, "prefix": self._prefix}
        if self._identity:
            metadata |= {**self._identity, "role": "reader"}
        service = await self._new_service(metadata, self._queue_group)
        self._service = service
        for verb in ENDPOINTS:
            if self._writes_here or verb not in WRITES:
                await service.add_endpoint(
                    name=verb, subject=f"{self._prefix}.{verb}", handler=self._admitter(verb)
                )
        if self._writes_here:
            await service.add_endpoint(
                name="upload", subject=f"{self._prefix}.upload", handler=self._upload
            )
        # In a cluster every daemon gets every download request (a queue group of its own) and
        # the one holding the download answers: a reply's chunks are where the reply was made.
        alone = None if self._writes_here else f"{self._queue_group}-{uuid.uuid4().hex[:12]}"
        await service.add_endpoint(
            name="download",
            subject=f"{self._prefix}.download",
            handler=self._download,
            queue_group=alone,
        )
        await barrier(self._nc)  # the endpoints answer once start() returns

    async def start_writes(self) -> None:
        """Subscribe the write endpoints and the upload, as a second service instance whose
        ``$SRV.INFO`` metadata says ``role = "writer"`` (this daemon holds the writer lease).
        Idempotent.

        They are in a queue group of this instance's own, not the shared one: a paused writer's
        subscriptions outlive its lease on the server (until its ping timeout), and a write
        must then reach the new writer too, not one of the two in turn; the deposed one
        refuses its copy (``NotWriterError``), unapplied.
        """
        if self._writes_here or self._writer_service is not None or self._service is None:
            return
        metadata = {**self._service.info().metadata, "role": "writer"}
        queue_group = f"{self._queue_group}-writer-{uuid.uuid4().hex[:12]}"
        service = await self._new_service(metadata, queue_group)
        self._writer_service = service
        for verb in sorted(WRITES):
            if verb in ENDPOINTS:
                await service.add_endpoint(
                    name=verb, subject=f"{self._prefix}.{verb}", handler=self._admitter(verb)
                )
        await service.add_endpoint(
            name="upload", subject=f"{self._prefix}.upload", handler=self._upload
        )
        await barrier(self._nc)

    async def stop_writes(self) -> None:
        """Unsubscribe what ``start_writes`` subscribed; the requests already delivered are
        still answered. Idempotent."""
        service, self._writer_service = self._writer_service, None
        if service is not None:
            await _drain_endpoints(service)
            await service.stop()

    async def stop(self) -> None:
        """Stop taking requests, answer the ones in flight, publish what was committed.

        Idempotent.
        """
        await self.stop_writes()
        service, self._service = self._service, None
        if service is not None:
            await _drain_endpoints(service)
            await service.stop()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        running, self._running = self._running, None
        if running is not None:
            publisher = self._publisher
            if publisher is not None and not publisher.done():
                await self._outbox.join()  # what was committed is published
            self._closing.set()
            try:
                await running
            except Exception:
                log.exception("the service's background tasks failed")
            self._publisher = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- requests ------------------------------------------------------------------------

    def _admitter(self, verb: str) -> Callable[[Request], Any]:
        async def admit(request: Request) -> None:
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._serve(verb, request))
            self._inflight.add(task)
            task.add_done_callback(self._finished)

        return admit

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _serve(self, verb: str, request: Request) -> None:
        async def work(encoding: str) -> tuple[bytes, dict[str, str]]:
            headers = request.headers or {}
            body = request.data
            upload = headers.get(wire.UPLOAD)
            if upload is not None:
                body = self._transfers.take(upload)
            floor = wire.min_seq(headers)
            data = await _decoded(body, encoding)
            key = headers.get(wire.MSG_ID) if verb in WRITES else None
            # This task serves this request alone, so the context variables are its own. Both
            # are set: its context starts as a copy of the one start() subscribed in.
            consistency.min_seq.set(floor)
            consistency.answered_at.set(_UNANSWERED)
            if (
                self._log_floor is not None
                and verb not in WRITES
                and floor > self._manager.log_head
            ):
                await self._log_floor(floor)
            result = await ENDPOINTS[verb](self._manager, data, key)
            seq = consistency.answered_at.get()
            if seq == _UNANSWERED:  # answered from the log alone (health, verify, rebuild)
                seq = self._manager.log_head
            try:
                if looks_big(result):
                    reply = await asyncio.to_thread(wire.encode_in_pieces, result, encoding)
                else:
                    reply = wire.encode(result, encoding)
            except TypeError:  # bytes (a pending write's value) in a JSON reply
                raise InvalidRequestError(
                    "the reply holds bytes, which JSON cannot carry: ask in msgpack"
                    f" ({wire.CONTENT_TYPE}: {wire.MSGPACK})"
                ) from None
            return reply, {wire.CONTENT_TYPE: encoding, wire.SEQ: str(seq)}

        await self._answer(request, verb, work, positioned=True)

    async def _answer(
        self,
        request: Request,
        what: str,
        work: Callable[[str], Awaitable[tuple[bytes, dict[str, str]]]],
        *,
        positioned: bool = False,
    ) -> None:
        """Run ``work`` and send its reply, or the error reply: every request is answered.

        ``positioned``: the reply carries ``Checkpointd-Seq``; ``work`` sets it on success, an
        error reply gets the log head known when it is built.
        """
        started = time.perf_counter()
        encoding = wire.JSON
        failed = True
        try:
            encoding = wire.content_type(request.headers)
            body, headers = await work(encoding)
            failed = False
        except CheckpointError as error:
            body, headers = wire.error_reply(error, encoding)
        except Exception:
            log.exception("request failed", endpoint=what, subject=request.subject)
            body, headers = wire.error_reply(InternalError("internal error"), encoding)
        if positioned and wire.SEQ not in headers:
            headers[wire.SEQ] = str(self._manager.log_head)
        await self._reply(request, body, headers)
        code = headers.get(wire.ERROR_CODE, "200")  # the error's status, e.g. "404"
        self.metrics.observe(what, time.perf_counter() - started, error=failed, code=code)

    async def _reply(self, request: Request, body: bytes, headers: dict[str, str]) -> None:
        if not reply_subject(request):  # published without a reply inbox: nobody to answer
            return
        limit = self._nc.max_payload
        if len(body) + wire.header_size(headers) > limit:
            try:
                offer = self._transfers.offer(body, max(1, limit - _HEADROOM))
            except CheckpointError as error:
                seq = headers.get(wire.SEQ)
                body, headers = wire.error_reply(error, headers.get(wire.CONTENT_TYPE, wire.JSON))
                if seq is not None:  # what was done is done: its position still goes out
                    headers[wire.SEQ] = seq
            else:
                headers = {
                    **headers,
                    wire.DOWNLOAD: offer.id,
                    wire.DOWNLOAD_SIZE: str(offer.size),
                    wire.DOWNLOAD_CHUNKS: str(offer.chunks),
                    wire.DOWNLOAD_SHA256: offer.sha256,
                }
                body = b""
        try:
            await request.respond(body, headers=headers)
            if faults.reached("after-reply-before-notify"):
                if self._publisher is not None:
                    self._publisher.cancel()  # the reply goes out, the notifications do not
                await self._nc.flush()
                faults.crash()
        except Exception:
            log.warning("could not send a reply", subject=request.subject, exc_info=True)

    # -- chunked transfers ---------------------------------------------------------------

    async def _upload(self, request: Request) -> None:
        async def work(_: str) -> tuple[bytes, dict[str, str]]:
            headers = request.headers or {}
            upload, chunk = headers.get(wire.UPLOAD), headers.get(wire.CHUNK)
            if upload is None or chunk is None:
                raise InvalidRequestError(f"upload needs {wire.UPLOAD} and {wire.CHUNK} headers")
            # A connection's uploads in progress are bounded; its reply inbox names it.
            connection = connection_of(reply_subject(request))
            self._transfers.add_chunk(upload, chunk, request.data, connection=connection)
            return b"{}", {wire.CONTENT_TYPE: wire.JSON}

        await self._answer(request, "upload", work)

    async def _download(self, request: Request) -> None:
        if not self._writes_here and not self._holds_download(request):
            return  # another daemon of the cluster holds it (or nobody: the caller times out)

        async def work(encoding: str) -> tuple[bytes, dict[str, str]]:
            data = wire.decode(request.data, encoding)
            index = data.get("index")
            if isinstance(index, bool) or not isinstance(index, int):
                raise InvalidRequestError("expected an integer", field="index")
            chunk = self._transfers.chunk(str(data.get("id")), index)
            return chunk, {wire.CONTENT_TYPE: "application/octet-stream"}

        await self._answer(request, "download", work)

    def _holds_download(self, request: Request) -> bool:
        try:
            data = wire.decode(request.data, wire.content_type(request.headers))
        except CheckpointError:
            return True  # answered with the error
        return data.get("id") in self._transfers.downloads

    async def _sweep(self) -> None:
        """Free abandoned transfers even when no other transfer comes along."""
        self._transfers.expire()

    # -- notifications -------------------------------------------------------------------

    def _on_commit(self, committed: list[Committed]) -> None:
        """On the loop, right after a COMMIT: queue its notifications in ``seq`` order.

        A group's notifications go into the outbox as one entry (one queue hand-off per COMMIT
        rather than per event).
        """
        batch = list(notifications(self._prefix, committed))
        room = _NOTIFY_BACKLOG - self._backlog
        if len(batch) > room:
            # Subscribers find the gap by seq and fill it from history.
            room = max(room, 0)
            before, self._dropped = self._dropped, self._dropped + len(batch) - room
            batch = batch[:room]
            if before == 0 or before // 1000 != self._dropped // 1000:  # rate-limited
                log.warning("notification backlog full; dropping", dropped=self._dropped)
        if batch:
            self._backlog += len(batch)
            self._outbox.put_nowait(batch)

    async def _publish_loop(self) -> None:
        while True:
            batch = await self._outbox.get()
            try:
                for notification in batch:
                    try:
                        await self._publish(notification)
                    except Exception:
                        log.warning(
                            "could not publish a notification", seq=notification.seq, exc_info=True
                        )
                    finally:
                        self._backlog -= 1
            finally:
                self._outbox.task_done()

    async def _publish(self, notification: Outgoing) -> None:
        body = await _json_off_loop_if_big(notification.body)
        limit = self._nc.max_payload
        if len(body) > limit and "state" in notification.body["data"]:
            offer = self._transfers.offer(
                await _json_off_loop_if_big(notification.body["data"]["state"]), limit - _HEADROOM
            )
            body = _json(without_state(notification.body, offer.to_wire()))
        if len(body) > limit:
            # Still too big (large metadata or conflicts): the whole data goes by download.
            data = await _json_off_loop_if_big(notification.body["data"])
            offer = self._transfers.offer(data, limit - _HEADROOM)
            body = _json({**notification.body, "data": {"dataDownload": offer.to_wire()}})
        await self._nc.publish(notification.subject, body)


# -- what nats.micro does not expose -----------------------------------------------------------
# The only two reads of nats.micro's private attributes, guarded: a request's reply inbox and
# the endpoints' subscriptions. Everything else goes through its public API (``Request.data``,
# ``.headers``, ``.subject``, ``.respond()``; ``add_service``, ``add_endpoint``, ``stop``).


def reply_subject(request: Request) -> str | None:
    """The request's reply inbox: the one place the service reads nats.micro's private ``_msg``.

    ``Request`` gives the subject, headers and data, and ``respond()`` sends to the inbox, but
    it does not tell the inbox itself. The service needs it twice: to leave a message sent
    without one unanswered (``respond()`` would raise only after a big reply's download was
    offered), and to tell which connection an upload chunk came from (``connection_of``).
    """
    msg = getattr(request, "_msg", None)
    reply = getattr(msg, "reply", None)
    return reply if isinstance(reply, str) and reply else None


async def _drain_endpoints(service: Service) -> None:
    """Admit the requests already delivered to the endpoints before they unsubscribe.

    ``Service.stop()`` unsubscribes, which throws away messages waiting in a subscription's
    queue: their callers would wait out their timeouts. Draining first (UNSUB, then handle what
    is queued) gets each of them admitted, and so answered. nats.micro does not expose the
    endpoints' subscriptions, hence the guarded private attributes.
    """
    endpoints = getattr(service, "_endpoints", None)
    if not isinstance(endpoints, list):
        return
    for endpoint in endpoints:
        subscription = getattr(endpoint, "_subscription", None)
        if subscription is not None:
            try:
                await subscription.drain()
            except Exception:
                log.warning("could not drain an endpoint", exc_info=True)
    # Drained subscriptions are gone: Service.stop() must not unsubscribe them again (it
    # raises); it still drains the $SRV subscriptions.
    endpoints.clear()


_DUMPS = compact_dumps(sort_keys=False)


def _json(value: Mapping[str, Any]) -> bytes:
    return _DUMPS(value).encode()


async def _json_off_loop_if_big(value: Mapping[str, Any]) -> bytes:
    """``_json(value)``, on a worker thread when big (a restore's state is snapshot-sized)."""
    if looks_big(value):
        return await asyncio.to_thread(_json, value)
    return _json(value)


async def _decoded(body: bytes, encoding: str) -> dict[str, Any]:
    """A request body as an object; a big one is decoded on a worker thread.

    Raises InvalidRequestError (see ``wire.decode``).
    """
    if len(body) > _DECODE_ON_LOOP:
        return await asyncio.to_thread(wire.decode, body, encoding)
    return wire.decode(body, encoding)
