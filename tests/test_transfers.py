"""Chunked transfers: uploads assembled from chunks, downloads served in chunks, both bounded.

``Transfers`` is pure (no NATS): these tests drive it directly, with a fake monotonic clock.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.daemon.transfers import Transfers
from checkpointd.daemon.uploads import MIN_CHUNK_COST, UploadLimits, connection_of
from checkpointd.errors import (
    InvalidRequestError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)

IDLE = 10.0
TTL = 300.0
BIG = 1 << 30  # a bound a test does not reach


class FakeMonotonic:
    """A monotonic clock (seconds as a float) that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def transfers(
    *,
    max_body: int = 1 << 20,
    upload_bytes: int = 1 << 22,
    download_bytes: int = 1 << 22,
    max_uploads: int = 1000,
    per_connection: int = 1000,
    connection_bytes: int = BIG,
    clock: FakeMonotonic | None = None,
) -> Transfers:
    limits = UploadLimits(
        max_body=max_body,
        max_bytes=upload_bytes,
        max_uploads=max_uploads,
        max_per_connection=per_connection,
        max_connection_bytes=connection_bytes,
        idle_timeout=IDLE,
    )
    return Transfers(limits, download_bytes=download_bytes, ttl=TTL, clock=clock or FakeMonotonic())


def cost(*chunks: bytes) -> int:
    """What holding ``chunks`` is charged against the upload bounds."""
    return sum(max(len(chunk), MIN_CHUNK_COST) for chunk in chunks)


@st.composite
def split_bodies(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[int]]:
    """A body, its split into 1..20 chunks (some maybe empty), and an order to send them in."""
    body = draw(st.binary(max_size=2000))
    count = draw(st.integers(min_value=1, max_value=20))
    cuts = sorted(
        draw(
            st.lists(
                st.integers(min_value=0, max_value=len(body)),
                min_size=count - 1,
                max_size=count - 1,
            )
        )
    )
    bounds = [0, *cuts, len(body)]
    chunks = [body[start:end] for start, end in itertools.pairwise(bounds)]
    order = draw(st.permutations(range(count)))
    return body, chunks, list(order)


# -- uploads -----------------------------------------------------------------------------------


@given(split_bodies())
def test_chunks_in_any_order_assemble_to_the_body(case: tuple[bytes, list[bytes], list[int]]):
    """Chunks added in any order assemble to the original bytes, and take() frees them."""
    body, chunks, order = case
    store = transfers()
    for index in order:
        store.add_chunk("up", f"{index}/{len(chunks)}", chunks[index])
    assert store.uploads.held == cost(*chunks)
    assert store.take("up") == body
    assert store.uploads.held == 0
    assert len(store.uploads) == 0


def test_take_of_an_incomplete_upload_names_the_missing_count() -> None:
    """take() of an upload still missing chunks is InvalidRequestError naming how many."""
    store = transfers()
    store.add_chunk("up", "0/3", b"first")
    with pytest.raises(InvalidRequestError, match=r"missing 2 chunk"):
        store.take("up")


def test_take_of_an_incomplete_upload_keeps_it() -> None:
    """A refused take() keeps the chunks received so far, so the upload can still complete."""
    store = transfers()
    store.add_chunk("up", "1/2", b"world")
    with pytest.raises(InvalidRequestError, match=r"missing 1 chunk"):
        store.take("up")
    store.add_chunk("up", "0/2", b"hello ")
    assert store.take("up") == b"hello world"


def test_take_of_an_unknown_upload_is_not_found() -> None:
    """take() of an id that was never uploaded is NotFoundError."""
    store = transfers()
    with pytest.raises(NotFoundError, match=r"upload 'nope' not found"):
        store.take("nope")


def test_take_forgets_the_upload() -> None:
    """An upload can be taken once; a second take() is NotFoundError."""
    store = transfers()
    store.add_chunk("up", "0/1", b"body")
    store.take("up")
    with pytest.raises(NotFoundError, match=r"upload 'up' not found"):
        store.take("up")


@pytest.mark.parametrize(
    "header", ["a/b", "3/2", "-1/2", "0/0", "0/100001", "1", "1/2/3", "", "/", "2/2"]
)
def test_malformed_or_out_of_range_chunk_header_is_invalid(header: str) -> None:
    """A chunk header that is not ``<index>/<count>`` with 0 <= index < count <= 100000 is 400."""
    store = transfers()
    with pytest.raises(InvalidRequestError, match=r"Checkpointd-Chunk"):
        store.add_chunk("up", header, b"x")


def test_refused_chunk_header_stores_nothing() -> None:
    """A chunk with a bad header leaves no upload behind."""
    store = transfers()
    with pytest.raises(InvalidRequestError, match=r"out of range"):
        store.add_chunk("up", "5/2", b"data")
    assert (store.uploads.held, len(store.uploads)) == (0, 0)
    with pytest.raises(NotFoundError, match=r"not found"):
        store.take("up")


def test_largest_chunk_count_is_accepted() -> None:
    """The last index of the largest allowed count (99999/100000) is accepted."""
    store = transfers()
    store.add_chunk("up", "99999/100000", b"tail")
    assert len(store.uploads) == 1


def test_chunk_count_must_match_the_upload() -> None:
    """A chunk announcing another count than the upload's first chunk is InvalidRequestError."""
    store = transfers()
    store.add_chunk("up", "0/2", b"a")
    with pytest.raises(InvalidRequestError, match=r"has 2 chunks, not 3"):
        store.add_chunk("up", "1/3", b"b")


@pytest.mark.parametrize("upload_id", ["", "x" * 65])
def test_upload_id_length_is_checked(upload_id: str) -> None:
    """An upload id of 0 or more than 64 characters is InvalidRequestError."""
    store = transfers()
    with pytest.raises(InvalidRequestError, match=r"upload id must be 1\.\.64"):
        store.add_chunk(upload_id, "0/1", b"x")


def test_upload_over_max_body_is_too_large_and_freed() -> None:
    """An upload growing past max_body is TooLargeError and its held bytes are released."""
    store = transfers(max_body=10)
    store.add_chunk("other", "0/2", b"kept")
    held_before = store.uploads.held
    store.add_chunk("big", "0/3", b"123456")
    with pytest.raises(TooLargeError, match=r"upload is 12 bytes, over the limit of 10"):
        store.add_chunk("big", "1/3", b"789012")
    assert store.uploads.held == held_before
    assert len(store.uploads) == 1
    with pytest.raises(NotFoundError, match=r"upload 'big' not found"):
        store.take("big")


def test_upload_of_exactly_max_body_is_accepted() -> None:
    """An upload of exactly max_body bytes is accepted."""
    store = transfers(max_body=10)
    store.add_chunk("up", "0/2", b"12345")
    store.add_chunk("up", "1/2", b"67890")
    assert store.take("up") == b"1234567890"


def test_chunk_over_the_upload_bytes_is_unavailable_and_stores_nothing() -> None:
    """A chunk that would pass the uploads' byte bound is UnavailableError; what is held and
    the upload are unchanged."""
    store = transfers(upload_bytes=1000)
    store.add_chunk("up", "0/2", b"a" * 600)
    with pytest.raises(UnavailableError, match=r"uploads in progress hold all the memory"):
        store.add_chunk("up", "1/2", b"b" * 600)
    assert store.uploads.held == 600
    with pytest.raises(InvalidRequestError, match=r"missing 1 chunk"):
        store.take("up")


def test_first_chunk_over_the_upload_bytes_leaves_no_upload() -> None:
    """A refused first chunk (memory bound) leaves no upload behind: take() is NotFoundError."""
    store = transfers(upload_bytes=1000)
    store.add_chunk("full", "0/1", b"a" * 600)
    with pytest.raises(UnavailableError, match=r"uploads in progress hold all the memory"):
        store.add_chunk("up", "0/2", b"b" * 600)
    assert (store.uploads.held, len(store.uploads)) == (600, 1)
    with pytest.raises(NotFoundError, match=r"upload 'up' not found"):
        store.take("up")


def test_resent_chunk_replaces_rather_than_double_counts() -> None:
    """A chunk sent twice is stored once: the second copy replaces the first in body and held."""
    store = transfers(max_body=1000)
    store.add_chunk("up", "0/2", b"a" * 800)
    store.add_chunk("up", "0/2", b"b" * 800)  # would pass max_body if counted twice
    assert store.uploads.held == 800
    store.add_chunk("up", "0/2", b"xy")
    assert store.uploads.held == cost(b"xy")
    store.add_chunk("up", "1/2", b"z")
    assert store.take("up") == b"xyz"
    assert store.uploads.held == 0


# -- bounds on uploads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "connection"),
    [
        ("_INBOX.5ZnSfp1q7hYlXD3IuZBu7K.4gdLvK3E", "_INBOX.5ZnSfp1q7hYlXD3IuZBu7K"),
        ("_INBOX_app.orders.nuid.token", "_INBOX_app.orders.nuid"),
        ("_INBOX.5ZnSfp1q7hYlXD3IuZBu7K", "_INBOX.5ZnSfp1q7hYlXD3IuZBu7K"),
        ("reply", "reply"),
        ("", ""),
        (None, ""),
    ],
)
def test_the_connection_is_the_reply_subject_without_its_last_token(
    reply: str | None, connection: str
) -> None:
    """A reply subject names its connection without the last token (a muxed request inbox);
    one of two tokens or fewer is taken whole, and no reply is the connection ``""``."""
    assert connection_of(reply) == connection


def test_empty_chunks_to_distinct_ids_count_toward_the_total_uploads() -> None:
    """Empty chunks start uploads like any other: past max_uploads the next one is refused."""
    store = transfers(max_uploads=3)
    for n in range(3):
        store.add_chunk(f"up{n}", "0/2", b"", connection=f"c{n}")
    with pytest.raises(UnavailableError, match=r"3 uploads are in progress, the most allowed"):
        store.add_chunk("up3", "0/2", b"", connection="c3")
    assert (len(store.uploads), store.uploads.held) == (3, 3 * MIN_CHUNK_COST)


def test_empty_chunks_are_charged_against_the_upload_bytes() -> None:
    """An empty chunk is charged MIN_CHUNK_COST bytes, so one upload of 100,000 empty chunks
    cannot hold unbounded memory."""
    store = transfers(upload_bytes=10 * MIN_CHUNK_COST)
    for index in range(10):
        store.add_chunk("up", f"{index}/100000", b"")
    with pytest.raises(UnavailableError, match=r"hold all the memory"):
        store.add_chunk("up", "10/100000", b"")


def test_a_connection_past_its_upload_count_is_refused_and_another_is_served() -> None:
    """A connection with max_per_connection uploads in progress cannot start another; a second
    connection can, and chunks of the first one's uploads are still accepted."""
    store = transfers(per_connection=2)
    store.add_chunk("a1", "0/2", b"", connection="A")
    store.add_chunk("a2", "0/2", b"", connection="A")
    with pytest.raises(UnavailableError, match=r"this connection has 2 uploads in progress"):
        store.add_chunk("a3", "0/2", b"", connection="A")
    store.add_chunk("b1", "0/1", b"b's body", connection="B")
    store.add_chunk("a1", "1/2", b"a1's body", connection="A")
    assert store.take("a1") == b"a1's body"
    assert store.take("b1") == b"b's body"
    store.add_chunk("a3", "0/1", b"a3's body", connection="A")  # a1 finished: room again


def test_a_connection_past_its_bytes_is_refused_and_another_is_served() -> None:
    """A connection holding max_connection_bytes cannot add more; a second connection can."""
    store = transfers(connection_bytes=1000)
    store.add_chunk("a1", "0/2", b"a" * 900, connection="A")
    with pytest.raises(UnavailableError, match=r"this connection's uploads hold all the memory"):
        store.add_chunk("a2", "0/1", b"a" * 200, connection="A")
    with pytest.raises(UnavailableError, match=r"this connection's uploads hold all the memory"):
        store.add_chunk("a1", "1/2", b"a" * 200, connection="A")
    store.add_chunk("b1", "0/1", b"b" * 900, connection="B")
    assert store.uploads.held == 1800


def test_a_later_chunk_is_charged_to_the_connection_that_started_the_upload() -> None:
    """Chunks of an upload count against the connection of its first chunk, whoever sends them."""
    store = transfers(connection_bytes=1000)
    store.add_chunk("a1", "0/2", b"a" * 900, connection="A")
    with pytest.raises(UnavailableError, match=r"this connection's uploads hold all the memory"):
        store.add_chunk("a1", "1/2", b"a" * 200, connection="B")


def test_refused_chunks_are_counted_and_change_nothing_else() -> None:
    """A chunk refused by a bound is counted in the figures; what is held stays as it was."""
    store = transfers(max_uploads=1)
    store.add_chunk("up", "0/2", b"x" * 200, connection="A")
    before = store.figures()
    for n in range(3):
        with pytest.raises(UnavailableError, match=r"retry shortly"):
            store.add_chunk(f"other{n}", "0/1", b"", connection="B")
    assert store.figures() == {**before, "uploadChunksRefused": 3}
    assert before == {
        "uploads": 1,
        "uploadBytes": 200,
        "uploadChunksRefused": 0,
        "downloads": 0,
        "downloadBytes": 0,
    }


def test_a_largest_body_fits_the_bounds_transfers_are_sized_with() -> None:
    """With the bounds ``sized_for`` derives, one connection can upload a body of exactly the
    largest size (its last chunk one byte, charged more than its length), and not a byte more."""
    max_checkpoint_size = 40 << 20  # a quarter of the budget is less than one body here
    store = Transfers.sized_for(max_checkpoint_size, clock=FakeMonotonic())
    max_body = 2 * max_checkpoint_size + (1 << 20)
    store.add_chunk("up", "0/2", bytes(max_body - 1), connection="A")
    with pytest.raises(TooLargeError, match=rf"over the limit of {max_body} bytes"):
        store.add_chunk("up", "1/2", b"xy", connection="A")
    store.add_chunk("again", "0/2", bytes(max_body - 1), connection="A")
    store.add_chunk("again", "1/2", b"x", connection="A")
    assert len(store.take("again")) == max_body


# -- expiry of uploads -------------------------------------------------------------------------


def test_an_upload_no_chunk_touched_for_the_idle_timeout_is_dropped() -> None:
    """An upload idle for longer than idle_timeout is dropped at the next call; its memory and
    its place in its connection's count are released."""
    clock = FakeMonotonic()
    store = transfers(per_connection=1, clock=clock)
    store.add_chunk("up", "0/2", b"abandoned", connection="A")
    clock.advance(IDLE + 0.5)
    with pytest.raises(NotFoundError, match=r"upload 'up' not found"):
        store.take("up")
    assert (store.uploads.held, len(store.uploads)) == (0, 0)
    store.add_chunk("next", "0/1", b"body", connection="A")


def test_each_chunk_renews_the_idle_timeout() -> None:
    """An upload whose chunks keep coming is kept however long it takes in all."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    for index in range(5):
        clock.advance(IDLE - 1)
        store.add_chunk("up", f"{index}/5", bytes([65 + index]))
    clock.advance(IDLE - 1)
    assert store.take("up") == b"ABCDE"


def test_expire_drops_idle_uploads_without_another_call() -> None:
    """expire() (the service's sweep) drops idle uploads and keeps the recently touched ones."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    store.add_chunk("old", "0/2", b"old")
    clock.advance(IDLE / 2)
    store.add_chunk("new", "0/2", b"new")
    clock.advance(IDLE / 2 + 1)
    store.expire()
    assert (len(store.uploads), store.uploads.held) == (1, cost(b"new"))


class Stamp(float):
    """A clock reading that counts how often expiry compares it: the uploads it looked at."""

    compared = 0

    def _count(self, other: object, op: str) -> bool:
        Stamp.compared += 1
        result: bool = getattr(float, op)(self, other)
        return result

    def __lt__(self, other: object) -> bool:
        return self._count(other, "__lt__")

    def __le__(self, other: object) -> bool:
        return self._count(other, "__le__")

    def __gt__(self, other: object) -> bool:
        return self._count(other, "__gt__")

    def __ge__(self, other: object) -> bool:
        return self._count(other, "__ge__")


class StampingClock(FakeMonotonic):
    def __call__(self) -> float:
        return Stamp(self.now)


def test_expiry_looks_at_the_expired_uploads_only() -> None:
    """With 20,000 uploads held, a chunk looks at one of them to expire nothing, and at k + 1
    of them to expire the k idle ones: expiry never scans what it keeps."""
    clock = StampingClock()
    store = transfers(clock=clock, max_uploads=100_000, per_connection=100_000)
    step = 0.0001
    for n in range(20_000):
        clock.advance(step)
        store.add_chunk(f"up{n}", "0/2", b"")
    Stamp.compared = 0
    store.add_chunk("up19999", "1/2", b"")
    assert Stamp.compared == 1
    clock.advance(IDLE - 20_000 * step + 10.5 * step)  # the first ten are now idle too long
    Stamp.compared = 0
    store.add_chunk("up19998", "1/2", b"")
    assert Stamp.compared == 11
    assert len(store.uploads) == 20_000 - 10


# -- downloads ---------------------------------------------------------------------------------


@given(
    body=st.binary(max_size=2000),
    chunk_size=st.integers(min_value=1, max_value=300),
    data=st.data(),
)
def test_offered_body_comes_back_in_chunks(body: bytes, chunk_size: int, data: st.DataObject):
    """offer() then chunk() in any order gives back the body; size, chunks and sha256 agree."""
    store = transfers()
    offer = store.offer(body, chunk_size)
    assert offer.size == len(body)
    assert offer.chunks == max(1, -(-len(body) // chunk_size))
    assert offer.sha256 == hashlib.sha256(body).hexdigest()
    assert offer.to_wire() == {
        "id": offer.id,
        "size": offer.size,
        "chunks": offer.chunks,
        "sha256": offer.sha256,
    }
    parts: dict[int, bytes] = {}
    for index in data.draw(st.permutations(range(offer.chunks))):
        assert store.downloads.held == len(body)
        parts[index] = store.chunk(offer.id, index)
    assert b"".join(parts[i] for i in range(offer.chunks)) == body
    assert store.downloads.held == 0


def test_download_is_dropped_once_every_chunk_was_served() -> None:
    """held falls when the last chunk was served, and the download is then NotFoundError."""
    store = transfers()
    offer = store.offer(b"0123456789", 4)
    assert offer.chunks == 3
    assert store.chunk(offer.id, 0) == b"0123"
    assert store.chunk(offer.id, 0) == b"0123"  # re-asking for a chunk does not finish it
    assert store.chunk(offer.id, 2) == b"89"
    assert store.downloads.held == 10
    assert store.chunk(offer.id, 1) == b"4567"
    assert store.downloads.held == 0
    with pytest.raises(NotFoundError, match=r"download .* not found"):
        store.chunk(offer.id, 0)


def test_empty_body_is_one_empty_chunk() -> None:
    """An empty body is offered as one chunk of no bytes."""
    store = transfers()
    offer = store.offer(b"", 8)
    assert (offer.size, offer.chunks) == (0, 1)
    assert store.chunk(offer.id, 0) == b""
    with pytest.raises(NotFoundError, match=r"not found"):
        store.chunk(offer.id, 0)


@pytest.mark.parametrize("index", [-1, 3, 4, 1000])
def test_chunk_index_out_of_range_is_invalid(index: int) -> None:
    """A chunk index below 0 or at or past the chunk count is InvalidRequestError."""
    store = transfers()
    offer = store.offer(b"0123456789", 4)
    with pytest.raises(InvalidRequestError, match=rf"has no chunk {index}"):
        store.chunk(offer.id, index)


def test_chunk_of_an_unknown_download_is_not_found() -> None:
    """chunk() of an id never offered is NotFoundError."""
    store = transfers()
    with pytest.raises(NotFoundError, match=r"download 'nope' not found"):
        store.chunk("nope", 0)


def test_offer_over_the_download_bytes_is_unavailable_and_stores_nothing() -> None:
    """An offer that would pass the downloads' byte bound is UnavailableError and holds nothing
    more."""
    store = transfers(download_bytes=10)
    store.offer(b"123456", 4)
    with pytest.raises(UnavailableError, match=r"too many large replies wait to be fetched"):
        store.offer(b"789012", 4)
    assert (store.downloads.held, len(store.downloads)) == (6, 1)


def test_download_expires_after_ttl() -> None:
    """A download older than ttl is dropped at the next call, and its memory is released."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    offer = store.offer(b"never fetched", 4)
    store.chunk(offer.id, 0)
    clock.advance(TTL + 1)
    with pytest.raises(NotFoundError, match=r"not found"):
        store.chunk(offer.id, 1)
    assert store.downloads.held == 0


def test_a_download_outlives_the_upload_idle_timeout() -> None:
    """A download not yet fetched is kept past idle_timeout: only ttl drops it."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    offer = store.offer(b"0123456789", 4)
    clock.advance(TTL - 1)
    assert store.chunk(offer.id, 2) == b"89"


def test_expiry_frees_room_for_new_transfers() -> None:
    """Expired uploads and downloads stop counting against their bounds."""
    clock = FakeMonotonic()
    store = transfers(upload_bytes=1000, download_bytes=10, clock=clock)
    store.add_chunk("up", "0/2", b"u" * 1000)
    store.offer(b"12345", 4)
    clock.advance(TTL + 1)
    store.add_chunk("up2", "0/2", b"v" * 1000)
    store.offer(b"0123456789", 4)
    assert (store.uploads.held, store.downloads.held) == (1000, 10)


def test_expiry_of_downloads_looks_at_the_expired_ones_only() -> None:
    """With 5,000 downloads on offer, an offer looks at one of them when none is due."""
    clock = StampingClock()
    store = transfers(clock=clock)
    for _ in range(5_000):
        clock.advance(0.001)
        store.offer(b"x", 4)
    Stamp.compared = 0
    store.offer(b"y", 4)
    assert Stamp.compared == 1


# -- separate budgets --------------------------------------------------------------------------


def test_uploads_holding_all_their_bytes_do_not_stop_replies() -> None:
    """Uploads at their byte bound leave the downloads' budget whole: a big reply is offered."""
    store = transfers(upload_bytes=1000, download_bytes=1000)
    store.add_chunk("up", "0/2", b"u" * 1000)
    with pytest.raises(UnavailableError, match=r"uploads in progress hold all the memory"):
        store.add_chunk("up2", "0/1", b"")
    offer = store.offer(b"d" * 1000, 400)
    assert offer.chunks == 3


def test_downloads_holding_all_their_bytes_do_not_stop_uploads() -> None:
    """Downloads at their byte bound leave the uploads' budget whole: an upload is accepted."""
    store = transfers(upload_bytes=1000, download_bytes=1000)
    store.offer(b"d" * 1000, 400)
    with pytest.raises(UnavailableError, match=r"too many large replies"):
        store.offer(b"more", 400)
    store.add_chunk("up", "0/1", b"u" * 1000)
    assert store.take("up") == b"u" * 1000
