"""Chunked transfers: bodies bigger than the NATS connection's ``max_payload``.

Upload (client to daemon): the client sends the body in chunks to ``<prefix>.upload``, each
with headers ``Checkpointd-Upload: <id>`` and ``Checkpointd-Chunk: <index>/<count>`` (each
acknowledged with an empty object), then sends the request itself to the endpoint with
``Checkpointd-Upload: <id>`` and an empty body; the assembled chunks are its body.

Download (daemon to client): a reply too big to send is an empty body with headers
``Checkpointd-Download: <id>``, ``-Size``, ``-Chunks`` and ``-Sha256``; the client asks
``<prefix>.download`` for ``{"id": ..., "index": i}`` and gets the raw bytes of chunk ``i``.

Everything is held in memory, bounded in total bytes, and dropped after ``ttl`` seconds; a
download is dropped once its last chunk was served.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from checkpointd.errors import InvalidRequestError, NotFoundError, TooLargeError, UnavailableError


@dataclass(slots=True)
class _Upload:
    count: int
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    born: float = 0.0


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
    served: set[int] = field(default_factory=set)
    born: float = 0.0


class Transfers:
    """The in-memory store of uploads in progress and downloads on offer."""

    def __init__(
        self,
        *,
        max_body: int,
        max_total: int,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_body = max_body
        self._max_total = max_total
        self._ttl = ttl
        self._clock = clock
        self._uploads: dict[str, _Upload] = {}
        self._offers: dict[str, _Offer] = {}
        self._held = 0

    # -- uploads -------------------------------------------------------------------------

    def add_chunk(self, upload_id: str, chunk: str, data: bytes) -> None:
        """Store one chunk (``chunk`` is ``"<index>/<count>"``). Raises InvalidRequestError,
        TooLargeError (the body would pass ``max_body``), UnavailableError (memory bound)."""
        self._expire()
        index, count = _chunk_position(chunk)
        if not 0 < len(upload_id) <= 64:
            raise InvalidRequestError("upload id must be 1..64 characters", field="upload")
        upload = self._uploads.get(upload_id) or _Upload(count, born=self._clock())
        if count != upload.count:
            raise InvalidRequestError(
                f"upload {upload_id!r} has {upload.count} chunks, not {count}"
            )
        previous = upload.chunks.get(index)
        grown = len(data) - (0 if previous is None else len(previous))
        if upload.size + grown > self._max_body:
            self._drop_upload(upload_id)
            raise TooLargeError("upload", upload.size + grown, self._max_body)
        self._reserve(grown)  # before the upload is registered: a refused chunk leaves nothing
        self._uploads[upload_id] = upload
        upload.chunks[index] = data
        upload.size += grown

    def take(self, upload_id: str) -> bytes:
        """The assembled body of a complete upload, which is then forgotten."""
        self._expire()
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise NotFoundError("upload", upload_id)
        if len(upload.chunks) != upload.count:
            missing = upload.count - len(upload.chunks)
            raise InvalidRequestError(f"upload {upload_id!r} is missing {missing} chunk(s)")
        body = b"".join(upload.chunks[i] for i in range(upload.count))
        self._drop_upload(upload_id)
        return body

    def _drop_upload(self, upload_id: str) -> None:
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            self._held -= upload.size

    # -- downloads -----------------------------------------------------------------------

    def offer(self, body: bytes, chunk_size: int) -> Download:
        """Hold ``body`` for a chunked download. Raises UnavailableError (memory bound)."""
        self._expire()
        self._reserve(len(body))
        download_id = secrets.token_hex(16)
        self._offers[download_id] = _Offer(body, chunk_size, born=self._clock())
        chunks = max(1, -(-len(body) // chunk_size))
        return Download(download_id, len(body), chunks, hashlib.sha256(body).hexdigest())

    def chunk(self, download_id: str, index: int) -> bytes:
        """Chunk ``index`` of a download; the download is dropped once every chunk was served."""
        self._expire()
        offer = self._offers.get(download_id)
        if offer is None:
            raise NotFoundError("download", download_id)
        start = index * offer.chunk_size
        if index < 0 or (start >= len(offer.body) and index > 0):
            raise InvalidRequestError(f"download {download_id!r} has no chunk {index}")
        offer.served.add(index)
        data = offer.body[start : start + offer.chunk_size]
        if len(offer.served) * offer.chunk_size >= len(offer.body):
            self._offers.pop(download_id)
            self._held -= len(offer.body)
        return data

    # -- bounds --------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Bytes held in uploads and downloads right now."""
        return self._held

    def _reserve(self, size: int) -> None:
        if self._held + size > self._max_total:
            raise UnavailableError("too many large transfers in progress; retry shortly")
        self._held += size

    def expire(self) -> None:
        """Drop the transfers older than ``ttl`` (every other call does it too)."""
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl
        for upload_id in [k for k, u in self._uploads.items() if u.born < horizon]:
            self._drop_upload(upload_id)
        for download_id in [k for k, o in self._offers.items() if o.born < horizon]:
            self._held -= len(self._offers.pop(download_id).body)


def _chunk_position(chunk: str) -> tuple[int, int]:
    try:
        index_text, count_text = chunk.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InvalidRequestError("expected <index>/<count>", field="Checkpointd-Chunk") from None
    if not (0 < count <= 100_000 and 0 <= index < count):
        raise InvalidRequestError("chunk index or count out of range", field="Checkpointd-Chunk")
    return index, count
