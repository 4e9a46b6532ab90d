"""Object keys in request bodies: strings only, at any depth, refused where bodies are decoded.

msgpack can carry a map key of its bin type, which decodes to ``bytes``; JSON cannot. A body
holding one anywhere is a 400 before any endpoint sees it, rather than a 500 from the first
endpoint that sorts or joins its keys.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
from contract import CONTENT_TYPE, ERROR, ERROR_CODE, JSON, MSGPACK
from nats.aio.client import Client
from natsserver import NatsServer

from checkpointd import wire
from checkpointd.errors import InvalidRequestError

DEADLINE = 10.0  # seconds to wait for a reply
LEAKS = ("Traceback", 'File "', "TypeError", "<class ", "object at 0x", "sorted")

NESTED: list[Any] = [
    {b"x": 1},
    {"sessionId": "a", b"x": 1},
    {"changes": {"metadata": {b"k": "v"}}},
    {"params": [1, {"a": [{b"k": 1}]}]},
    {"snapshot": {"state": {"deep": {b"k": 1}}}},
    {"currentState": {b"state": {}}},
]


def packed(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize("body", NESTED)
def test_a_bytes_key_anywhere_in_a_msgpack_body_is_invalid(body: Any) -> None:
    """A msgpack map key of the bin type, at the top or nested in objects and lists, is a 400."""
    with pytest.raises(InvalidRequestError, match="object key that is not a string"):
        wire.decode(packed(body), wire.MSGPACK)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Łódź, ĉiuĵaŭde", "tags": ["ŝ", "Ą"]},  # UTF-8 holding 0xc4 and 0xc5 bytes
        {"n": 196, "m": 197, "k": 198},  # the bin markers as uint8 values
        {"blob": b"\xc4\x00", "list": [b"x"]},  # bytes as values: for the endpoint to judge
    ],
)
def test_bodies_without_a_bytes_key_decode_as_sent(body: dict[str, Any]) -> None:
    """Marker bytes of msgpack's bin type in text, numbers or values do not make a body bad."""
    assert wire.decode(packed(body), wire.MSGPACK) == body


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A raw nats-py connection to the session's nats-server."""
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


async def ask(nc: Client, subject: str, body: Any) -> tuple[dict[str, str], Any]:
    msg = await nc.request(subject, packed(body), timeout=DEADLINE, headers={CONTENT_TYPE: MSGPACK})
    headers = dict(msg.headers or {})
    assert headers.get(CONTENT_TYPE) == MSGPACK
    text = msg.data.decode("utf-8", "replace") + " ".join(headers.values())
    assert not [leak for leak in LEAKS if leak in text], text[:500]
    return headers, msgpack.unpackb(msg.data, raw=False)


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("history", {b"x": 1}),
        ("list", {"sessionId": "a", b"x": 1}),
        ("create", {"name": "n", "sessionId": "s", "snapshot": {}, "branches": [], b"x": 1}),
        ("restore", {"id": "x", "dryRun": True, "currentState": {"state": {b"k": 1}}}),
        ("update", {"id": "x", "changes": {"metadata": {b"k": 1}}}),
        ("search", {"query": "a", "filters": {b"author": "me"}}),
        ("verify", {b"": None}),
    ],
)
async def test_a_bytes_key_is_a_400_on_every_endpoint(
    nc: Client, served: str, verb: str, body: Any
) -> None:
    """Over NATS a body with a bytes key gets a 400 ``invalid`` reply, not a 500 traceback."""
    headers, reply = await ask(nc, f"{served}.{verb}", body)
    assert headers.get(ERROR_CODE) == "400", (headers, reply)
    assert reply["error"]["code"] == "invalid"
    assert "not a string" in headers[ERROR]


async def test_the_same_request_with_string_keys_is_answered(nc: Client, served: str) -> None:
    """The requests above with their keys as strings succeed: only the key type was wrong."""
    headers, reply = await ask(nc, f"{served}.list", {"sessionId": "a"})
    assert ERROR_CODE not in headers, reply
    assert reply["total"] == 0


async def test_json_bodies_are_untouched_by_the_key_check(nc: Client, served: str) -> None:
    """JSON has string keys only; a JSON history request is answered as before."""
    msg = await nc.request(
        f"{served}.history", b'{"sessionId": "a"}', timeout=DEADLINE, headers={CONTENT_TYPE: JSON}
    )
    assert ERROR_CODE not in (msg.headers or {}), msg.data
    assert json.loads(msg.data) == {"events": [], "next": None}
