"""CheckpointClient: CheckpointManager's API over NATS, against a running checkpointd.

Every method takes and returns what the manager's does and raises the same error classes (from
the reply's error code); both offer ``checkpointd.api.CheckpointAPI``. A method builds its verb's
request type (``checkpointd.requests``), which checks what it can without the store, and sends
that request's ``to_wire()``: the client knows the wire, not the engine.

Writes carry a ``Nats-Msg-Id`` (``idempotency_key``, else a fresh one per call), so a request
retried after a timeout or a lost connection takes effect once. Bodies
bigger than the server's ``max_payload`` go through the chunked upload/download of
``checkpointd.daemon.transfers``, transparently.

Read-your-writes: every reply carries the log position it was answered at
(``Checkpointd-Seq``); the client keeps the highest it has seen (``last_seq``) and sends it as
``Checkpointd-Min-Seq`` on every request, so a read reflects at least everything this client
saw acknowledged, whichever daemon answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from checkpointd import wire
from checkpointd.errors import (
    CheckpointError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    WriterMovedError,
)
from checkpointd.models import (
    Checkpoint,
    Event,
    History,
    Lineage,
    Notification,
    Page,
    VerifyResult,
)
from checkpointd.paging import walk_history, walk_list
from checkpointd.requests import (
    DEFAULT_PAGE_SIZE,
    MAX_LINEAGE,
    CopySessionRequest,
    CreateBatchRequest,
    CreateRequest,
    DeleteByMetadataRequest,
    DeleteExpiredRequest,
    DeleteRequest,
    DiffRequest,
    GetRequest,
    GetWritesRequest,
    HealthRequest,
    HistoryRequest,
    LineageRequest,
    ListOptions,
    ListRequest,
    PruneSessionRequest,
    PutWritesRequest,
    RebuildRequest,
    RestoreCheckpointRequest,
    SearchCheckpointsRequest,
    SessionsRequest,
    SessionStateRequest,
    StatsRequest,
    UpdateRequest,
    ValidateRequest,
    VerifyRequest,
    WireRequest,
    flag,
    request_mapping,
    text,
)
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
from checkpointd.snapshots import canonical_encode
from checkpointd.transport import barrier, connect

_HEADROOM = 1024  # bytes of a chunk message left for its headers
_LONG = 600.0  # seconds a rebuild or verify of a large log may take
# Uploads this client has in progress at once: fewer than the daemon allows one connection
# (max_uploads_per_connection, 16 by default), so concurrent big requests wait here instead.
_UPLOADS_AT_ONCE = 8


class CheckpointClient:
    """The checkpoint store over NATS. Use ``async with`` or ``open()``/``close()``.

    Args:
        nats_url: one URL or a comma-separated list.
        prefix: the service's subject prefix (``checkpoint``).
        encoding: ``msgpack`` (default, compact) or ``json`` on the wire.
        request_timeout: seconds to wait for each reply.
        retries: how many times a request that got no reply is sent again (same message id).
            With retries, a write that meets no responder or a cluster's "writer moved" 503
            is sent again until ``request_timeout`` has passed.
        attempt_timeout: seconds a write waits for each attempt's reply before it is sent
            again (same message id), the later attempts waiting half as long again each time,
            all within ``request_timeout``; None (the default) waits ``request_timeout`` for
            each. With a cluster set it to about 2: a write whose daemon died or froze while
            the writer lease moves is then sent again within seconds.
        connect_timeout: seconds ``open()`` may take before it gives up (UnavailableError).
        credentials_file, nkey_seed_file, token, user, password, tls: NATS authentication and
            TLS (an ``ssl.SSLContext``).
        nc: an already connected nats-py client to use instead (not closed by ``close()``).
    """

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = "checkpoint",
        encoding: str = "msgpack",
        request_timeout: float = 30.0,
        retries: int = 2,
        attempt_timeout: float | None = None,
        connect_timeout: float = 10.0,
        credentials_file: str | None = None,
        nkey_seed_file: str | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        name: str = "checkpointd-client",
        nc: Client | None = None,
    ) -> None:
        if encoding not in {"msgpack", "json"}:
            raise InvalidRequestError("must be msgpack or json", field="encoding")
        if attempt_timeout is not None and not attempt_timeout > 0:
            raise InvalidRequestError("must be positive seconds or None", field="attempt_timeout")
        self._url = nats_url
        self._prefix = prefix
        self._encoding = wire.MSGPACK if encoding == "msgpack" else wire.JSON
        self._timeout = request_timeout
        self._retries = retries
        self._attempt_timeout = attempt_timeout
        self._connect_timeout = connect_timeout
        self._connect_options: dict[str, Any] = {
            "user_credentials": credentials_file,
            "nkeys_seed": nkey_seed_file,
            "token": token,
            "user": user,
            "password": password,
            "tls": tls,
            "name": name,
        }
        self._nc = nc
        self._owns_nc = nc is None
        self._open = nc is not None
        self._uploading = asyncio.Semaphore(_UPLOADS_AT_ONCE)
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """The highest log position a reply to this client carried (0 before any).

        Every request asks for at least this position (``Checkpointd-Min-Seq``): a read waits
        until the daemon's views reach it, so it sees this client's acknowledged writes.
        """
        return self._last_seq

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> Self:
        """Connect (unless given a connection). Raises UnavailableError after the deadline."""
        if self._open:
            return self
        self._nc = await connect(
            self._url,
            deadline=self._connect_timeout,
            error_cb=_quiet,  # nats-py's default prints a traceback per failed attempt
            **self._connect_options,
        )
        self._open = True
        return self

    async def close(self) -> None:
        """Drain and close the connection this client opened. Idempotent."""
        nc, self._nc = self._nc, None
        self._open = False
        if nc is not None and self._owns_nc and not nc.is_closed:
            try:
                await nc.drain()
            except (nats.errors.Error, OSError, TimeoutError):
                await nc.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        request: Mapping[str, Any] | None = None,
        /,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Checkpoint:
        """As ``CheckpointManager.create``."""
        req = CreateRequest.from_wire(request_mapping(request, fields, "create"))
        reply = await self._call(req, key=_key(idempotency_key))
        return replace(Checkpoint.from_wire(reply), snapshot=req.snapshot)

    async def create_batch(
        self, requests: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Checkpoint]:
        """As ``CheckpointManager.create_batch``: atomic, all or nothing."""
        req = CreateBatchRequest.of(requests)
        reply = await self._call(req, key=_key(idempotency_key))
        return [
            replace(Checkpoint.from_wire(wire_cp), snapshot=item.snapshot)
            for wire_cp, item in zip(reply["checkpoints"], req.items, strict=True)
        ]

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
        """As ``CheckpointManager.update_checkpoint``."""
        data = request_mapping(changes, fields, "update")
        req = UpdateRequest.of(checkpoint_id, data, expected_version)
        return Checkpoint.from_wire(await self._call(req, key=_key(idempotency_key)))

    async def delete_checkpoint(
        self, checkpoint_id: str, *, idempotency_key: str | None = None
    ) -> bool:
        """As ``CheckpointManager.delete_checkpoint``: False if there was no such checkpoint."""
        req = DeleteRequest(text(checkpoint_id, "id"))
        reply = await self._call(req, key=_key(idempotency_key))
        return bool(reply["deleted"])

    async def delete_expired_checkpoints(self, *, idempotency_key: str | None = None) -> int:
        """As ``CheckpointManager.delete_expired_checkpoints``."""
        reply = await self._call(DeleteExpiredRequest(), key=_key(idempotency_key))
        return int(reply["deleted"])

    async def cleanup_once(self) -> int:
        """Expire what is due now (the daemon also runs this on its own schedule)."""
        return await self.delete_expired_checkpoints()

    async def rebuild(self, *, progress: Callable[[int], None] | None = None) -> int:
        """As ``CheckpointManager.rebuild``: the events replayed.

        The daemon does not stream progress: ``progress`` is called once, with the total.
        """
        events = int((await self._call(RebuildRequest(), retry=False, wait=_LONG))["events"])
        if progress is not None:
            progress(events)
        return events

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
        """As ``CheckpointManager.restore_checkpoint`` (``timeout`` keyword in seconds).

        A custom resolver is in-process only: InvalidRequestError here.
        """
        req = RestoreCheckpointRequest.of(
            checkpoint_id, options, kwargs, custom_resolver=custom_resolver
        )
        reply = await self._call(req, key=_key(idempotency_key))
        return RestoreResult.from_wire(reply)

    async def put_writes(
        self,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[Any],
        task_path: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> PutWritesResult:
        """As ``CheckpointManager.put_writes`` (bytes values need the msgpack encoding)."""
        req = PutWritesRequest.of(checkpoint_id, task_id, writes, task_path)
        return PutWritesResult.from_wire(await self._call(req, key=_key(idempotency_key)))

    async def copy_session(
        self,
        source_session_id: str,
        target_session_id: str,
        *,
        ids: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> CopySessionResult:
        """As ``CheckpointManager.copy_session``."""
        req = CopySessionRequest.of(source_session_id, target_session_id, ids)
        return CopySessionResult.from_wire(await self._call(req, key=_key(idempotency_key)))

    async def prune_session(
        self, session_id: str, keep: int = 1, *, idempotency_key: str | None = None
    ) -> int:
        """As ``CheckpointManager.prune_session``: how many checkpoints were deleted."""
        req = PruneSessionRequest.of(session_id, keep)
        return int((await self._call(req, key=_key(idempotency_key)))["deleted"])

    async def delete_by_metadata(
        self,
        key: str,
        values: Sequence[Any],
        session_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """As ``CheckpointManager.delete_by_metadata``: how many checkpoints were deleted."""
        req = DeleteByMetadataRequest.of(key, values, session_id)
        return int((await self._call(req, key=_key(idempotency_key)))["deleted"])

    # -- reads ---------------------------------------------------------------------------

    async def get_writes(self, checkpoint_id: str) -> list[PendingWrite]:
        """As ``CheckpointManager.get_writes`` (bytes values need the msgpack encoding)."""
        reply = await self._call(GetWritesRequest(text(checkpoint_id, "checkpointId")))
        return [PendingWrite.from_wire(write) for write in reply["writes"]]

    async def get_checkpoint(
        self, checkpoint_id: str, include_snapshot: bool = True
    ) -> Checkpoint | None:
        """As ``CheckpointManager.get_checkpoint``: None for a missing id."""
        req = GetRequest(text(checkpoint_id, "id"), flag(include_snapshot, "includeSnapshot"))
        try:
            return Checkpoint.from_wire(await self._call(req))
        except NotFoundError:
            return None

    async def get_checkpoints_by_session(
        self, session_id: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Page:
        """As ``CheckpointManager.get_checkpoints_by_session``."""
        opts = ListOptions.of(options, kwargs)
        req = ListRequest(text(session_id, "sessionId"), None, opts)
        return Page.from_wire(await self._call(req))

    async def get_checkpoints_by_feature(
        self, feature: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Page:
        """As ``CheckpointManager.get_checkpoints_by_feature``."""
        opts = ListOptions.of(options, kwargs)
        req = ListRequest(None, text(feature, "feature"), opts)
        return Page.from_wire(await self._call(req))

    def iter_checkpoints_by_session(
        self, session_id: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Checkpoint]:
        """As ``CheckpointManager.iter_checkpoints_by_session``: one request per page."""
        return walk_list(self.get_checkpoints_by_session, session_id, options, kwargs)

    def iter_checkpoints_by_feature(
        self, feature: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Checkpoint]:
        """As ``CheckpointManager.iter_checkpoints_by_feature``: one request per page."""
        return walk_list(self.get_checkpoints_by_feature, feature, options, kwargs)

    async def history(self, request: Mapping[str, Any] | None = None, /, **kwargs: Any) -> History:
        """As ``CheckpointManager.history``."""
        req = HistoryRequest.from_wire(request_mapping(request, kwargs, "history"))
        return History.from_wire(await self._call(req))

    def iter_history(
        self, request: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Event]:
        """As ``CheckpointManager.iter_history``: one request per page."""
        return walk_history(self.history, request, kwargs)

    async def health(self) -> int:
        """As ``CheckpointManager.health``: the log's last seq once the daemon's store answered."""
        return int((await self._call(HealthRequest()))["lastSeq"])

    async def verify_log(self, *, progress: Callable[[int], None] | None = None) -> VerifyResult:
        """As ``CheckpointManager.verify_log`` (``progress`` is called once, with the total)."""
        reply = await self._call(VerifyRequest(), retry=False, wait=_LONG)
        result = VerifyResult.from_wire(reply)
        if progress is not None:
            progress(result.events)
        return result

    async def search_checkpoints(
        self,
        query: str | Mapping[str, Any] | None = None,
        limit: int | None = None,
        /,
        **kwargs: Any,
    ) -> Page:
        """As ``CheckpointManager.search_checkpoints``."""
        req = SearchCheckpointsRequest.of(query, limit, kwargs)
        return Page.from_wire(await self._call(req))

    async def get_checkpoint_stats(self) -> Stats:
        """As ``CheckpointManager.get_checkpoint_stats``."""
        return Stats.from_wire(await self._call(StatsRequest()))

    async def validate_checkpoint(self, checkpoint_id: str) -> ValidationReport:
        """As ``CheckpointManager.validate_checkpoint``."""
        req = ValidateRequest(text(checkpoint_id, "id"))
        return ValidationReport.from_wire(await self._call(req))

    async def diff_checkpoints(self, before_id: str, after_id: str) -> Diff:
        """As ``CheckpointManager.diff_checkpoints``."""
        req = DiffRequest(text(before_id, "from"), text(after_id, "to"))
        return Diff.from_wire(await self._call(req))

    async def get_lineage(
        self, checkpoint_id: str, *, limit: int = MAX_LINEAGE, offset: int = 0
    ) -> Lineage:
        """As ``CheckpointManager.get_lineage``."""
        req = LineageRequest(text(checkpoint_id, "id"), limit, offset)
        return Lineage.from_wire(await self._call(req))

    async def get_session_state(self, session_id: str) -> SessionState:
        """As ``CheckpointManager.get_session_state``."""
        req = SessionStateRequest(text(session_id, "sessionId"))
        return SessionState.from_wire(await self._call(req))

    async def get_sessions(
        self, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> SessionPage:
        """As ``CheckpointManager.get_sessions``."""
        return SessionPage.from_wire(await self._call(SessionsRequest(page, page_size)))

    # -- notifications -------------------------------------------------------------------

    def notifications(
        self, event_type: str = "*", session_id: str | None = None
    ) -> NotificationStream:
        """Subscribe to notifications: ``async with client.notifications("restored", "s-1") as
        stream: async for n in stream: ...``.

        ``event_type`` is ``created``, ``updated``, ``deleted``, ``expired``, ``restored``,
        ``writes`` or ``*``; ``session_id`` None means every session. A restore's state too
        big for one message is fetched for you. Each notification carries its event's ``seq``: with
        ``*`` and every session, a jump in ``seq`` means missed events, which
        ``history(after_seq=...)`` returns.
        """
        if event_type not in _EVENT_TYPES:
            raise InvalidRequestError(f"must be one of {', '.join(sorted(_EVENT_TYPES))}")
        session = "*" if session_id is None else wire.session_token(session_id)
        return NotificationStream(self, f"{self._prefix}.events.{event_type}.{session}")

    # -- the wire ------------------------------------------------------------------------

    def _connection(self) -> Client:
        if self._nc is None or not self._open:
            raise UnavailableError("the checkpoint client is not open")
        return self._nc

    async def _call(
        self,
        request: WireRequest,
        *,
        key: str | None = None,
        retry: bool = True,
        wait: float | None = None,
    ) -> Any:
        """Send one request (its ``to_wire()`` body) and return the decoded reply object.

        A request that got no reply is sent again (a write with the same message id), except
        the long operations (``retry=False``: a rebuild or verify still running would be
        started a second time; they wait at least ``_LONG`` seconds for their reply).
        """
        wait = max(self._timeout, wait or 0.0)
        nc = self._connection()
        verb, body = request.VERB, request.to_wire()
        try:
            payload = wire.encode(body, self._encoding)
        except (TypeError, ValueError, OverflowError) as exc:
            _explain_unencodable(body)
            raise InvalidRequestError(f"{verb}: request cannot be encoded ({exc})") from None
        headers = {wire.CONTENT_TYPE: self._encoding, wire.MIN_SEQ: str(self._last_seq)}
        if key is not None:
            headers[wire.MSG_ID] = key
        subject = f"{self._prefix}.{verb}"
        attempts = self._retries + 1 if retry else 1
        # A keyed write (with retries allowed) is sent again until ``wait`` has passed when it
        # meets no responder or a WriterMovedError (a cluster's writer lease moving: nothing of
        # it was applied) or, with an attempt timeout, no reply within it (its daemon died with
        # it): its key makes every copy after the first return the first one's reply. Any other
        # 503 (a full disk, a closing store) is raised at once.
        failover = key is not None and attempts > 1
        first = self._attempt_timeout
        # A request sent in chunks waits its whole timeout each time: resending is costly.
        fits = len(payload) + wire.header_size(headers) <= nc.max_payload
        short = failover and first is not None and fits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        attempt = 0
        while True:
            share = wait
            if short and first is not None:
                share = _attempt_wait(first, attempt, deadline - loop.time())
            try:
                return await self._exchange(nc, subject, payload, headers, share)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                if not _again(attempt, attempts, failover, deadline):
                    raise _unavailable(subject, exc, wait) from None
            except WriterMovedError:
                if not _again(attempt, attempts, failover, deadline, counted=False):
                    raise
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                raise UnavailableError("the NATS connection is closed") from None
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
            attempt += 1

    async def _exchange(
        self, nc: Client, subject: str, payload: bytes, headers: dict[str, str], wait: float
    ) -> Any:
        limit = nc.max_payload
        if len(payload) + wire.header_size(headers) > limit:
            async with self._uploading:  # the upload is in progress until its request arrives
                upload = uuid.uuid4().hex
                await self._upload(nc, upload, payload, limit)
                headers = {**headers, wire.UPLOAD: upload}
                reply = await nc.request(subject, b"", timeout=wait, headers=headers)
        else:
            reply = await nc.request(subject, payload, timeout=wait, headers=headers)
        reply_headers = reply.headers or {}
        self._saw(reply_headers)
        data = reply.data
        if wire.DOWNLOAD in reply_headers:
            data = await self._download(nc, reply_headers)
        wire.raise_for_reply(data, reply_headers)
        return wire.decode(data, wire.content_type(reply_headers), trusted=True)

    def _saw(self, headers: Mapping[str, str]) -> None:
        """Keep the reply's ``Checkpointd-Seq`` if it is the highest yet (errors carry one too)."""
        seq = wire.position(headers.get(wire.SEQ))
        if seq is not None and seq > self._last_seq:
            self._last_seq = seq

    async def _upload(self, nc: Client, upload: str, payload: bytes, limit: int) -> None:
        size = limit - _HEADROOM
        count = -(-len(payload) // size)
        for index in range(count):
            headers = {wire.UPLOAD: upload, wire.CHUNK: f"{index}/{count}"}
            chunk = payload[index * size : (index + 1) * size]
            reply = await nc.request(
                f"{self._prefix}.upload", chunk, timeout=self._timeout, headers=headers
            )
            wire.raise_for_reply(reply.data, reply.headers)

    async def _download(self, nc: Client, headers: Mapping[str, str]) -> bytes:
        return await self.fetch_download(
            headers[wire.DOWNLOAD],
            size=int(headers[wire.DOWNLOAD_SIZE]),
            chunks=int(headers[wire.DOWNLOAD_CHUNKS]),
            sha256=headers[wire.DOWNLOAD_SHA256],
        )

    async def fetch_download(self, download: str, *, size: int, chunks: int, sha256: str) -> bytes:
        """The bytes of a chunked download (a big reply, or a notification's ``stateDownload``).

        Raises IntegrityError if they do not match ``size`` and ``sha256``.
        """
        nc = self._connection()
        count = chunks
        parts: list[bytes] = []
        for index in range(count):
            request = wire.encode({"id": download, "index": index}, wire.JSON)
            reply = await nc.request(f"{self._prefix}.download", request, timeout=self._timeout)
            wire.raise_for_reply(reply.data, reply.headers)
            parts.append(reply.data)
        data = b"".join(parts)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError("a chunked reply arrived damaged (size or sha256 mismatch)")
        return data


class NotificationStream:
    """An async iterator of Notification over one subscription; ``async with`` subscribes."""

    def __init__(self, client: CheckpointClient, subject: str) -> None:
        self._client = client
        self.subject = subject
        self._subscription: Subscription | None = None
        self._messages: AsyncIterator[Msg] | None = None

    async def __aenter__(self) -> Self:
        nc = self._client._connection()
        self._subscription = await nc.subscribe(self.subject)
        self._messages = aiter(self._subscription.messages)
        await barrier(nc)  # the server has the interest before anything is published
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        if self._messages is None:
            raise UnavailableError("use 'async with' to subscribe first")
        msg = await anext(self._messages)
        body = wire.decode(msg.data, wire.JSON)
        data = body.get("data") or {}
        whole = data.get("dataDownload")
        if isinstance(whole, Mapping):
            data = wire.decode(await self._fetch(whole), wire.JSON)
            body = {**body, "data": data}
        download = data.get("stateDownload")
        if isinstance(download, Mapping):
            state = wire.decode(await self._fetch(download), wire.JSON)
            data = {k: v for k, v in data.items() if k != "stateDownload"}
            body = {**body, "data": {**data, "state": state}}
        return Notification.from_wire(body)

    async def _fetch(self, download: Mapping[str, Any]) -> bytes:
        return await self._client.fetch_download(
            download["id"],
            size=download["size"],
            chunks=download["chunks"],
            sha256=download["sha256"],
        )


_EVENT_TYPES = frozenset({"*", "created", "updated", "deleted", "expired", "restored", "writes"})


def _explain_unencodable(body: Mapping[str, Any]) -> None:
    """Raise the manager's own error for a snapshot it would refuse (naming the value's path)."""
    for snapshot in (body.get("snapshot"), body.get("currentState")):
        if isinstance(snapshot, Mapping):
            canonical_encode(snapshot)
    for item in body.get("checkpoints") or ():
        if isinstance(item, Mapping) and isinstance(item.get("snapshot"), Mapping):
            canonical_encode(item["snapshot"])


def _key(given: str | None) -> str:
    return given if given is not None else uuid.uuid4().hex


def _again(
    attempt: int, attempts: int, failover: bool, deadline: float, *, counted: bool = True
) -> bool:
    """Whether a failed request is sent again: within its ``retries`` (``counted``), or, for
    a keyed write, until its deadline (less the next pause)."""
    if counted and attempt < attempts - 1:
        return True
    pause = min(0.05 * 2**attempt, 0.5)
    return failover and asyncio.get_running_loop().time() + pause < deadline


def _attempt_wait(first: float, attempt: int, remaining: float) -> float:
    """The first two attempts wait ``first`` (a writer lease moves in about 3 s), each later one
    half as long again: a slow but healthy daemon is not sent a copy every few seconds."""
    share = first * 1.5 ** max(0, attempt - 1)
    return max(0.001, min(remaining, share))


def _unavailable(subject: str, exc: Exception, timeout: float) -> CheckpointError:
    if isinstance(exc, nats.errors.NoRespondersError):
        return UnavailableError(f"no checkpointd service answers on {subject}")
    return UnavailableError(f"no reply on {subject} within {timeout}s")


async def _quiet(exc: Exception) -> None:
    """Connection errors are retried; what matters reaches the caller as UnavailableError."""
    del exc
