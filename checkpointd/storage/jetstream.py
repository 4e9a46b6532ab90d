"""The log on a replicated JetStream stream: the stream, its object store and the writer lease.

Three JetStream resources, all with the configured replica count, per stream name ``S``:

- the stream ``S`` on the subject ``checkpointd.log.S``: one message per committed group (a
  segment, ``checkpointd.storage.segment``); the stream sequence is the segment number, and
  every append is fenced with ``Nats-Expected-Last-Sequence`` (the last segment the writer has
  applied), so a writer that missed a segment — a deposed one — cannot fork the hash chain.
  After each append the writer announces its number on ``checkpointd.head.S`` (plain NATS),
  which wakes the followers;
- the object store ``S_BLOBS``: values too big to travel inline, by the sha256 of their bytes;
- the key-value bucket ``S_LEASE`` with a TTL of ``LEASE_TTL`` seconds: its key ``writer``,
  taken by compare-and-set (create) and renewed with ``update(last=revision)``, is the writer
  lease. Its value names the holder (JSON: ``pid``, ``host``, ``state_directory``).

The stream is created when missing, with ``sync_interval: always`` left to the servers' config
(the README's cluster config sets it: JetStream otherwise acknowledges before the fsync).
This module does I/O only; what a segment holds and how a copy applies it are elsewhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from checkpointd.errors import ConfigError, UnavailableError
from checkpointd.storage.segment import Packed

log = structlog.get_logger("checkpointd.jetstream")

SUBJECT = "checkpointd.log.{stream}"
HEAD_SUBJECT = "checkpointd.head.{stream}"
LEASE_KEY = "writer"
LEASE_TTL = 3.0
"""Seconds a writer lease lasts unless renewed (the KV bucket's TTL)."""
RENEW_EVERY = 0.75
"""Seconds between renewals by the holder, and between attempts to take it by the others."""
LEASE_MARGIN = 0.75
"""Seconds before the lease's end (by the holder's own clock) at which it stops writing."""
APPEND_TIMEOUT = 2.0
"""Seconds an append waits for the stream's acknowledgement (its objects' puts apart): a
stream that lost its leader fails the group soon, and the caller's retry meets the next one."""
_HEADER_ROOM = 4096  # bytes of max_payload left for a segment's headers
_WRONG_LAST_SEQUENCE = 10071
_NOT_FOUND = 10037


class FencedError(UnavailableError):
    """The stream holds segments this writer has not applied: it is not (or no longer) the
    only writer. Nothing was appended."""


@dataclass(frozen=True, slots=True)
class StreamNames:
    stream: str

    @property
    def subject(self) -> str:
        return SUBJECT.format(stream=self.stream)

    @property
    def head(self) -> str:
        """Where the writer announces each segment's number (the followers' doorbell)."""
        return HEAD_SUBJECT.format(stream=self.stream)

    @property
    def lease(self) -> str:
        return f"{self.stream}_LEASE"

    @property
    def blobs(self) -> str:
        return f"{self.stream}_BLOBS"


class JetStreamLog:
    """The stream and its companions on one NATS connection (the caller's)."""

    def __init__(self, nc: Client, stream: str, replicas: int, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.names = StreamNames(stream)
        self.replicas = replicas
        self.timeout = timeout
        self._js: JetStreamContext = nc.jetstream(timeout=timeout)
        self._lease: KeyValue | None = None
        self._blobs: ObjectStore | None = None
        self._direct = False

    @property
    def budget(self) -> int:
        """The biggest segment body one message may carry."""
        return max(1024, self.nc.max_payload - _HEADER_ROOM)

    async def open(self) -> None:
        """Create the stream, the lease bucket and the object store where missing.

        Raises:
            ConfigError: the cluster cannot hold ``replicas`` copies (or has no JetStream).
            UnavailableError: JetStream does not answer.
        """
        try:
            await self._ensure_stream()
            self._lease = await self._js.create_key_value(
                bucket=self.names.lease,
                ttl=LEASE_TTL,
                history=1,
                replicas=self.replicas,
                storage=api.StorageType.FILE,
            )
            self._blobs = await self._js.create_object_store(
                self.names.blobs, replicas=self.replicas, storage=api.StorageType.FILE
            )
        except nats.js.errors.APIError as exc:
            raise _refused(exc, self.replicas, await _size_or_none(self.nc)) from None
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            reason = "JetStream does not answer (is it enabled on the cluster?)"
            raise UnavailableError(reason) from None

    async def _ensure_stream(self) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            info = await self._js.stream_info(self.names.stream)
            self._direct = bool(info.config.allow_direct)
            return
        await self._js.add_stream(
            api.StreamConfig(
                name=self.names.stream,
                description="checkpointd's event log: one message per committed group",
                subjects=[self.names.subject],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                discard=api.DiscardPolicy.NEW,
                max_msgs=-1,
                max_bytes=-1,
                max_age=0,
                # Segments are read by number from any replica that has them (raw, no JSON).
                allow_direct=True,
            )
        )
        self._direct = True
        log.info("stream created", stream=self.names.stream, replicas=self.replicas)

    # -- the stream -----------------------------------------------------------------------

    async def append(self, packed: Packed, expected_last: int) -> int:
        """Put the segment's objects, then publish it after segment ``expected_last``.

        Returns its segment number (the stream sequence).
        Raises:
            FencedError: the stream's last segment is not ``expected_last``.
            UnavailableError: no acknowledgement within the timeout (it may or may not be in
                the stream: the caller treats it as not acknowledged and catches up).
        """
        try:
            for name, data in packed.objects.items():
                await self.blobs.put(name, data, meta=self._object_meta(name))
            ack = await self._js.publish(
                self.names.subject,
                packed.body,
                timeout=APPEND_TIMEOUT,
                stream=self.names.stream,
                headers={"Nats-Expected-Last-Sequence": str(expected_last)},
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise FencedError(
                    "another writer appended to the log; this daemon is catching up"
                ) from None
            log.warning("append refused", error=str(exc))
            raise UnavailableError("the log's stream refused the append; retry") from None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("append not acknowledged", error=type(exc).__name__)
            raise UnavailableError("the log's stream did not acknowledge the append") from None
        with contextlib.suppress(nats.errors.Error):  # a doorbell: the followers poll anyway
            await self.nc.publish(self.names.head, str(ack.seq).encode())
        return int(ack.seq)

    def _object_meta(self, name: str) -> api.ObjectMeta:
        """An object's chunks fit in ``max_payload`` (nats-py's default chunk may not)."""
        chunk = min(128 * 1024, self.budget)
        return api.ObjectMeta(name=name, options=api.ObjectMetaOptions(max_chunk_size=chunk))

    async def get(self, seq: int) -> bytes | None:
        """Segment ``seq``'s message body, or None when the stream does not hold it (yet).

        Read directly from any replica; one that does not have it yet sends the question to
        the stream's leader, so None means the stream has no such segment.
        Raises UnavailableError when the stream does not answer.
        """
        if self._direct:
            body = await self._get(seq, direct=True)
            if body is not None:
                return body
        return await self._get(seq, direct=False)

    async def _get(self, seq: int, *, direct: bool) -> bytes | None:
        try:
            message = await self._js.get_msg(self.names.stream, seq, direct=direct)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.APIError as exc:
            if exc.err_code == _NOT_FOUND:
                return None
            raise UnavailableError("the log's stream refused a read") from None
        except (nats.errors.Error, OSError, TimeoutError):
            raise UnavailableError("the log's stream does not answer") from None
        return message.data or b""

    async def last_seq(self) -> int:
        """The stream's last segment number (0 when empty)."""
        try:
            info = await self._js.stream_info(self.names.stream)
        except (nats.errors.Error, OSError, TimeoutError):
            raise UnavailableError("the log's stream does not answer") from None
        return int(info.state.last_seq or 0)

    async def fetch_object(self, name: str) -> bytes:
        """An object's bytes. Raises UnavailableError when it cannot be read."""
        try:
            result = await self.blobs.get(name)
        except (nats.errors.Error, OSError, TimeoutError):
            raise UnavailableError(f"the log's object {name} cannot be read") from None
        return bytes(result.data or b"")

    @property
    def blobs(self) -> ObjectStore:
        assert self._blobs is not None, "open() first"
        return self._blobs

    # -- the writer lease ----------------------------------------------------------------

    @property
    def lease(self) -> KeyValue:
        assert self._lease is not None, "open() first"
        return self._lease

    async def take_lease(self, holder: bytes) -> int | None:
        """Take the lease if nobody holds it: its revision, or None when it is held."""
        try:
            return int(await self.lease.create(LEASE_KEY, holder))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def renew_lease(self, holder: bytes, revision: int) -> int:
        """Renew the lease held at ``revision``; the new revision.

        Raises nats.js.errors.KeyWrongLastSequenceError when it was lost, or a NATS error.
        """
        return int(await self.lease.update(LEASE_KEY, holder, last=revision))

    async def release_lease(self, revision: int) -> None:
        """Give the lease up (on a clean stop), so another daemon takes it at once."""
        try:
            await self.lease.delete(LEASE_KEY, last=revision)
        except (nats.errors.Error, OSError, TimeoutError):
            log.info("could not release the writer lease; it expires by itself")

    async def holder(self) -> bytes | None:
        """The lease holder's value, or None when nobody holds it."""
        try:
            entry = await self.lease.get(LEASE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value


async def cluster_size(nc: Client) -> int | None:
    """How many servers the connected NATS cluster has; None when the server does not say.

    Read from the server's INFO: a clustered server lists every member's client URL in
    ``connect_urls`` (itself included), unless told not to advertise them; a lone server is 1.
    Raises UnavailableError when JetStream is not enabled on the server.
    """
    try:
        await nc.jetstream().account_info()
    except (nats.errors.Error, OSError, TimeoutError):
        raise UnavailableError("JetStream is not enabled on the NATS server") from None
    info = getattr(nc, "_server_info", {}) or {}
    urls = info.get("connect_urls") or []
    if urls:
        return len(urls)
    return None if info.get("cluster") else 1


async def _size_or_none(nc: Client) -> int | None:
    try:
        return await cluster_size(nc)
    except UnavailableError:
        return None


def _refused(exc: nats.js.errors.APIError, replicas: int, size: int | None) -> Exception:
    """A placement refusal is the configuration's fault only when the cluster is smaller than
    ``replicas``; otherwise a peer is offline (a cluster still forming, a server restarting)
    and a later start succeeds."""
    text = (exc.description or "").lower()
    placement = "replica" in text or "insufficient resources" in text or "no suitable peers" in text
    if placement and (size is None or replicas > size):
        reason = f"the NATS cluster cannot hold {replicas} replicas ({exc.description})"
        return ConfigError("jetstream_replicas", replicas, reason)
    return UnavailableError(f"JetStream refused to set up the log: {exc.description}")
