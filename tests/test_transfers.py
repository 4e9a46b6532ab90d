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
from checkpointd.errors import (
    InvalidRequestError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)

TTL = 300.0


class FakeMonotonic:
    """A monotonic clock (seconds as a float) that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def transfers(
    *, max_body: int = 1 << 20, max_total: int = 1 << 22, clock: FakeMonotonic | None = None
) -> Transfers:
    return Transfers(
        max_body=max_body, max_total=max_total, ttl=TTL, clock=clock or FakeMonotonic()
    )


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
    assert store.held == len(body)
    assert store.take("up") == body
    assert store.held == 0


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
    assert store.held == 0
    with pytest.raises(NotFoundError, match=r"not found"):
        store.take("up")


def test_largest_chunk_count_is_accepted() -> None:
    """The last index of the largest allowed count (99999/100000) is accepted."""
    store = transfers()
    store.add_chunk("up", "99999/100000", b"tail")
    assert store.held == 4


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
    held_before = store.held
    store.add_chunk("big", "0/3", b"123456")
    with pytest.raises(TooLargeError, match=r"upload is 12 bytes, over the limit of 10"):
        store.add_chunk("big", "1/3", b"789012")
    assert store.held == held_before
    with pytest.raises(NotFoundError, match=r"upload 'big' not found"):
        store.take("big")


def test_upload_of_exactly_max_body_is_accepted() -> None:
    """An upload of exactly max_body bytes is accepted."""
    store = transfers(max_body=10)
    store.add_chunk("up", "0/2", b"12345")
    store.add_chunk("up", "1/2", b"67890")
    assert store.take("up") == b"1234567890"


def test_chunk_over_max_total_is_unavailable_and_stores_nothing() -> None:
    """A chunk that would pass max_total is UnavailableError; held and the upload are unchanged."""
    store = transfers(max_total=10)
    store.add_chunk("up", "0/2", b"123456")
    with pytest.raises(UnavailableError, match=r"too many large transfers"):
        store.add_chunk("up", "1/2", b"789012")
    assert store.held == 6
    with pytest.raises(InvalidRequestError, match=r"missing 1 chunk"):
        store.take("up")


def test_first_chunk_over_max_total_leaves_no_upload() -> None:
    """A refused first chunk (memory bound) leaves no upload behind: take() is NotFoundError."""
    store = transfers(max_total=10)
    store.add_chunk("full", "0/1", b"123456")
    with pytest.raises(UnavailableError, match=r"too many large transfers"):
        store.add_chunk("up", "0/2", b"789012")
    assert store.held == 6
    with pytest.raises(NotFoundError, match=r"upload 'up' not found"):
        store.take("up")


def test_resent_chunk_replaces_rather_than_double_counts() -> None:
    """A chunk sent twice is stored once: the second copy replaces the first in body and held."""
    store = transfers(max_body=10)
    store.add_chunk("up", "0/2", b"12345678")
    store.add_chunk("up", "0/2", b"abcdefgh")  # would pass max_body if counted twice
    assert store.held == 8
    store.add_chunk("up", "0/2", b"xy")
    assert store.held == 2
    store.add_chunk("up", "1/2", b"z")
    assert store.take("up") == b"xyz"
    assert store.held == 0


def test_upload_expires_after_ttl() -> None:
    """An upload older than ttl is dropped at the next call, and its memory is released."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    store.add_chunk("up", "0/2", b"abandoned")
    clock.advance(TTL + 1)
    with pytest.raises(NotFoundError, match=r"upload 'up' not found"):
        store.take("up")
    assert store.held == 0


def test_upload_within_ttl_is_kept() -> None:
    """An upload younger than ttl is still there."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    store.add_chunk("up", "0/2", b"kept ")
    clock.advance(TTL - 1)
    store.add_chunk("up", "1/2", b"alive")
    assert store.take("up") == b"kept alive"


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
        assert store.held == len(body)
        parts[index] = store.chunk(offer.id, index)
    assert b"".join(parts[i] for i in range(offer.chunks)) == body
    assert store.held == 0


def test_download_is_dropped_once_every_chunk_was_served() -> None:
    """held falls when the last chunk was served, and the download is then NotFoundError."""
    store = transfers()
    offer = store.offer(b"0123456789", 4)
    assert offer.chunks == 3
    assert store.chunk(offer.id, 0) == b"0123"
    assert store.chunk(offer.id, 0) == b"0123"  # re-asking for a chunk does not finish it
    assert store.chunk(offer.id, 2) == b"89"
    assert store.held == 10
    assert store.chunk(offer.id, 1) == b"4567"
    assert store.held == 0
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


def test_offer_over_max_total_is_unavailable_and_stores_nothing() -> None:
    """An offer that would pass max_total is UnavailableError and holds nothing more."""
    store = transfers(max_total=10)
    store.offer(b"123456", 4)
    with pytest.raises(UnavailableError, match=r"too many large transfers"):
        store.offer(b"789012", 4)
    assert store.held == 6


def test_download_expires_after_ttl() -> None:
    """A download older than ttl is dropped at the next call, and its memory is released."""
    clock = FakeMonotonic()
    store = transfers(clock=clock)
    offer = store.offer(b"never fetched", 4)
    store.chunk(offer.id, 0)
    clock.advance(TTL + 1)
    with pytest.raises(NotFoundError, match=r"not found"):
        store.chunk(offer.id, 1)
    assert store.held == 0


def test_expiry_frees_room_for_new_transfers() -> None:
    """Expired uploads and downloads stop counting against max_total."""
    clock = FakeMonotonic()
    store = transfers(max_total=10, clock=clock)
    store.add_chunk("up", "0/2", b"12345")
    store.offer(b"12345", 4)
    clock.advance(TTL + 1)
    store.offer(b"0123456789", 4)
    assert store.held == 10
