"""Uploads in progress: the chunks of request bodies too big for one message, until their request.

An upload is named by the id its client chose and belongs to the connection that sent its first
chunk. What the uploads may hold is bounded, and a chunk past a bound is refused with
UnavailableError (503: retry later) with nothing stored:

- uploads in progress, in total (``max_uploads``) and per connection (``max_per_connection``);
  an upload counts from its first chunk, an empty one too;
- bytes, in total (``max_bytes``) and per connection (``max_connection_bytes``); a chunk is
  charged its length but at least ``MIN_CHUNK_COST``, so empty chunks are not free;
- time: an upload that no chunk touched for ``idle_timeout`` seconds is dropped.

An upload growing past ``max_body`` bytes is TooLargeError (413) and is dropped.

The uploads sit in an ordered dict, least recently touched first, so expiry pops from its front:
it costs O(expired), whatever is held.

Which connection a chunk came from: NATS does not tell a service who sent a message, but the
reply subject does. nats-py, nats.go and nats.js send every request of one connection to a reply
subject under one inbox of that connection's (``_INBOX.<nuid>.<token>``), so the reply subject
without its last token names the connection (``connection_of``). A reply of two tokens (an inbox
per request) is taken whole, and chunks sent without a reply share one name. A client chooses its
reply subjects, so this keeps honest clients apart from a careless or simple abuser; against a
client that forges them, the total bounds and the idle timeout still hold.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from checkpointd.errors import InvalidRequestError, NotFoundError, TooLargeError, UnavailableError

MIN_CHUNK_COST = 128
"""Bytes a stored chunk is charged at least: holding even an empty one costs memory."""


def connection_of(reply: str | None) -> str:
    """The connection a message came from, as its reply subject tells it (module docstring)."""
    if not reply:
        return ""
    head = reply.rpartition(".")[0]
    return head if "." in head else reply


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """The bounds on uploads in progress (see the module docstring)."""

    max_body: int
    max_bytes: int
    max_uploads: int
    max_per_connection: int
    max_connection_bytes: int
    idle_timeout: float


@dataclass(slots=True)
class _Upload:
    connection: str
    count: int
    touched: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0  # the body's bytes received so far
    cost: int = 0  # what it is charged: each chunk at least MIN_CHUNK_COST


@dataclass(slots=True)
class _Share:
    """One connection's uploads in progress and what they are charged."""

    uploads: int = 0
    cost: int = 0


class Uploads:
    """The uploads in progress, bounded per connection, in total and in idle time."""

    def __init__(self, limits: UploadLimits, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._clock = clock
        self._uploads: OrderedDict[str, _Upload] = OrderedDict()  # least recently touched first
        self._shares: dict[str, _Share] = {}
        self._cost = 0
        self.refused = 0  # chunks refused by a bound, since the start

    def __len__(self) -> int:
        return len(self._uploads)

    @property
    def held(self) -> int:
        """Bytes charged to the uploads in progress."""
        return self._cost

    def add_chunk(self, upload_id: str, chunk: str, data: bytes, *, connection: str = "") -> None:
        """Store one chunk (``chunk`` is ``"<index>/<count>"``); the upload was touched now.

        A chunk sent again replaces the earlier copy. ``connection`` is ``connection_of`` the
        message; it matters only for the chunk that starts an upload.

        Raises:
            InvalidRequestError: a malformed header or id, or another count than the upload's.
            TooLargeError: the body would pass ``max_body``; the upload is dropped.
            UnavailableError: a bound would be passed; nothing is stored.
        """
        now = self._clock()
        self._expire(now)
        index, count = _chunk_position(chunk)
        if not 0 < len(upload_id) <= 64:
            raise InvalidRequestError("upload id must be 1..64 characters", field="upload")
        upload = self._uploads.get(upload_id) or _Upload(connection, count, now)
        if count != upload.count:
            raise InvalidRequestError(
                f"upload {upload_id!r} has {upload.count} chunks, not {count}"
            )
        previous = upload.chunks.get(index)
        grown = len(data) - (0 if previous is None else len(previous))
        if upload.size + grown > self._limits.max_body:
            self._drop(upload_id)
            raise TooLargeError("upload", upload.size + grown, self._limits.max_body)
        cost = _cost(data) - (0 if previous is None else _cost(previous))
        self._charge(upload_id, upload, cost)  # refuses before anything is stored
        upload.chunks[index] = data
        upload.size += grown
        upload.touched = now
        self._uploads[upload_id] = upload
        self._uploads.move_to_end(upload_id)

    def take(self, upload_id: str) -> bytes:
        """The assembled body of a complete upload, which is then forgotten.

        Raises NotFoundError (never started, taken, or dropped) or InvalidRequestError (chunks
        are missing; the upload is kept, so it can still be completed).
        """
        self._expire(self._clock())
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise NotFoundError("upload", upload_id)
        if len(upload.chunks) != upload.count:
            missing = upload.count - len(upload.chunks)
            raise InvalidRequestError(f"upload {upload_id!r} is missing {missing} chunk(s)")
        self._drop(upload_id)
        return b"".join(upload.chunks[i] for i in range(upload.count))

    def expire(self) -> None:
        """Drop the uploads idle for longer than ``idle_timeout`` (every call does it too)."""
        self._expire(self._clock())

    def _expire(self, now: float) -> None:
        horizon = now - self._limits.idle_timeout
        while self._uploads:
            upload_id, upload = next(iter(self._uploads.items()))
            if upload.touched >= horizon:
                return
            self._drop(upload_id)

    def _charge(self, upload_id: str, upload: _Upload, cost: int) -> None:
        limits = self._limits
        share = self._shares.get(upload.connection) or _Share()
        starts = upload_id not in self._uploads
        if starts and len(self._uploads) >= limits.max_uploads:
            self._refuse(f"{len(self._uploads)} uploads are in progress, the most allowed")
        if starts and share.uploads >= limits.max_per_connection:
            self._refuse(
                f"this connection has {share.uploads} uploads in progress, the most allowed"
            )
        if self._cost + cost > limits.max_bytes:
            self._refuse("the uploads in progress hold all the memory allowed for them")
        if share.cost + cost > limits.max_connection_bytes:
            self._refuse("this connection's uploads hold all the memory allowed for one")
        share.uploads += starts
        share.cost += cost
        self._shares[upload.connection] = share
        upload.cost += cost
        self._cost += cost

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        raise UnavailableError(f"{reason}; retry shortly")

    def _drop(self, upload_id: str) -> None:
        upload = self._uploads.pop(upload_id, None)
        if upload is None:
            return
        self._cost -= upload.cost
        share = self._shares[upload.connection]
        share.uploads -= 1
        share.cost -= upload.cost
        if share.uploads == 0:
            del self._shares[upload.connection]


def _cost(data: bytes) -> int:
    return max(len(data), MIN_CHUNK_COST)


def _chunk_position(chunk: str) -> tuple[int, int]:
    try:
        index_text, count_text = chunk.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InvalidRequestError("expected <index>/<count>", field="Checkpointd-Chunk") from None
    if not (0 < count <= 100_000 and 0 <= index < count):
        raise InvalidRequestError("chunk index or count out of range", field="Checkpointd-Chunk")
    return index, count
