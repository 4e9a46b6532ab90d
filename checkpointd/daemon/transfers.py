"""Chunked transfers: bodies bigger than the NATS connection's ``max_payload``.

Upload (client to daemon): the client sends the body in chunks to ``<prefix>.upload``, each
with headers ``Checkpointd-Upload: <id>`` and ``Checkpointd-Chunk: <index>/<count>`` (each
acknowledged with an empty object), then sends the request itself to the endpoint with
``Checkpointd-Upload: <id>`` and an empty body; the assembled chunks are its body.

Download (daemon to client): a reply too big to send is an empty body with headers
``Checkpointd-Download: <id>``, ``-Size``, ``-Chunks`` and ``-Sha256``; the client asks
``<prefix>.download`` for ``{"id": ..., "index": i}`` and gets the raw bytes of chunk ``i``.

Everything is held in memory. Uploads and downloads have a memory budget each, so uploads
nobody finishes cannot make replies fail. Uploads are bounded per connection and in total and
dropped when idle (``checkpointd.daemon.uploads``); a download is dropped once its last chunk
was served, or ``ttl`` seconds after it was offered.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from checkpointd.daemon.uploads import MIN_CHUNK_COST, UploadLimits, Uploads
from checkpointd.errors import InvalidRequestError, NotFoundError, UnavailableError


@dataclass(frozen=True, slots=True)
class Download:
    id: str
    size: int
    chunks: int
    sha256: str

    def to_wire(self) -> dict[str, object]:
        return {"id": self.id, "size": self.size, "chunks": self.chunks, "sha256": self.sha256}


@dataclass(slots=True)
class _Offer:
    body: bytes
    chunk_size: int
    born: float
    served: set[int] = field(default_factory=set)


class Downloads:
    """The downloads on offer, bounded in bytes and dropped ``ttl`` seconds after the offer."""

    def __init__(self, *, max_bytes: int, ttl: float, clock: Callable[[], float]) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        # Oldest first: offers are added in the order they are born, so expiry pops the front.
        self._offers: OrderedDict[str, _Offer] = OrderedDict()
        self._held = 0

    def __len__(self) -> int:
        return len(self._offers)

    def __contains__(self, download_id: object) -> bool:
        """Whether ``download_id`` is on offer here (a cluster's daemons hold their own)."""
        return download_id in self._offers

    @property
    def held(self) -> int:
        """Bytes held by the downloads on offer."""
        return self._held

    def offer(self, body: bytes, chunk_size: int) -> Download:
        """Hold ``body`` for a chunked download. Raises UnavailableError (memory bound)."""
        now = self._clock()
        self._expire(now)
        if self._held + len(body) > self._max_bytes:
            raise UnavailableError("too many large replies wait to be fetched; retry shortly")
        download_id = secrets.token_hex(16)
        self._offers[download_id] = _Offer(body, chunk_size, now)
        self._held += len(body)
        chunks = max(1, -(-len(body) // chunk_size))
        return Download(download_id, len(body), chunks, hashlib.sha256(body).hexdigest())

    def chunk(self, download_id: str, index: int) -> bytes:
        """Chunk ``index`` of a download; the download is dropped once every chunk was served."""
        self._expire(self._clock())
        offer = self._offers.get(download_id)
        if offer is None:
            raise NotFoundError("download", download_id)
        start = index * offer.chunk_size
        if index < 0 or (start >= len(offer.body) and index > 0):
            raise InvalidRequestError(f"download {download_id!r} has no chunk {index}")
        offer.served.add(index)
        data = offer.body[start : start + offer.chunk_size]
        if len(offer.served) * offer.chunk_size >= len(offer.body):
            self._drop(download_id)
        return data

    def expire(self) -> None:
        """Drop the downloads offered more than ``ttl`` seconds ago (every call does it too)."""
        self._expire(self._clock())

    def _expire(self, now: float) -> None:
        horizon = now - self._ttl
        while self._offers:
            download_id, offer = next(iter(self._offers.items()))
            if offer.born >= horizon:
                return
            self._drop(download_id)

    def _drop(self, download_id: str) -> None:
        self._held -= len(self._offers.pop(download_id).body)


class Transfers:
    """Uploads in progress and downloads on offer: what the service's endpoints call."""

    def __init__(
        self,
        uploads: UploadLimits,
        *,
        download_bytes: int,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uploads = Uploads(uploads, clock)
        self.downloads = Downloads(max_bytes=download_bytes, ttl=ttl, clock=clock)

    @classmethod
    def sized_for(
        cls,
        max_checkpoint_size: int,
        *,
        max_uploads: int = 256,
        max_uploads_per_connection: int = 16,
        idle_timeout: float = 10.0,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> Self:
        """Transfers whose byte bounds follow from the largest snapshot accepted.

        A request body may be ``2 * max_checkpoint_size + 1 MiB`` (an encoded snapshot and the
        rest of the request). Uploads and downloads may each hold ``4 * max_checkpoint_size``
        but at least 256 MiB; one connection's uploads a quarter of that, or one largest body.
        """
        max_body = 2 * max_checkpoint_size + (1 << 20)
        budget = max(4 * max_checkpoint_size, 256 << 20)
        limits = UploadLimits(
            max_body=max_body,
            max_bytes=budget,
            max_uploads=max_uploads,
            max_per_connection=max_uploads_per_connection,
            # A body's last chunk may be charged up to MIN_CHUNK_COST more than its length.
            max_connection_bytes=max(budget // 4, max_body + MIN_CHUNK_COST),
            idle_timeout=idle_timeout,
        )
        return cls(limits, download_bytes=budget, ttl=ttl, clock=clock)

    def add_chunk(self, upload_id: str, chunk: str, data: bytes, *, connection: str = "") -> None:
        """``Uploads.add_chunk``."""
        self.uploads.add_chunk(upload_id, chunk, data, connection=connection)

    def take(self, upload_id: str) -> bytes:
        """``Uploads.take``."""
        return self.uploads.take(upload_id)

    def offer(self, body: bytes, chunk_size: int) -> Download:
        """``Downloads.offer``."""
        return self.downloads.offer(body, chunk_size)

    def chunk(self, download_id: str, index: int) -> bytes:
        """``Downloads.chunk``."""
        return self.downloads.chunk(download_id, index)

    def expire(self) -> None:
        """Drop the idle uploads and the downloads past their ``ttl``."""
        self.uploads.expire()
        self.downloads.expire()

    def figures(self) -> dict[str, int]:
        """What is held now, and how many chunks a bound refused, for the metrics document."""
        return {
            "uploads": len(self.uploads),
            "uploadBytes": self.uploads.held,
            "uploadChunksRefused": self.uploads.refused,
            "downloads": len(self.downloads),
            "downloadBytes": self.downloads.held,
        }
