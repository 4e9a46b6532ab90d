"""Bodies and headers on NATS: encodings, error replies and header sizes (docs/protocol.md)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import msgpack
import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd import wire
from checkpointd.errors import (
    ERRORS_BY_CODE,
    CheckpointError,
    ConflictError,
    InternalError,
    InvalidRequestError,
    NotFoundError,
    StorageError,
    TooLargeError,
    UnavailableError,
    WriterMovedError,
)

ENCODINGS = [wire.JSON, wire.MSGPACK]
STATUS = {
    "invalid": "400",
    "not_found": "404",
    "conflict": "409",
    "too_large": "413",
    "integrity": "422",
    "unavailable": "503",
    "internal": "500",
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=8)


def nested_objects(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep ({"a": {"a": ... {}}})."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def nested_lists(depth: int) -> dict[str, Any]:
    """An object holding lists, ``depth`` levels deep in all ({"a": [[...[]]]})."""
    value: list[Any] = []
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


def packed(value: Any, encoding: str) -> bytes:
    if encoding == wire.MSGPACK:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    return json.dumps(value).encode()


# -- content type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, wire.JSON),
        ({}, wire.JSON),
        ({"Other": "x"}, wire.JSON),
        ({"Content-Type": "application/json"}, wire.JSON),
        ({"Content-Type": "application/json; charset=utf-8"}, wire.JSON),
        ({"Content-Type": "Application/JSON"}, wire.JSON),
        ({"Content-Type": "application/msgpack"}, wire.MSGPACK),
        ({"Content-Type": " application/msgpack ; v=1"}, wire.MSGPACK),
        ({"Content-Type": "application/x-msgpack"}, wire.MSGPACK),
    ],
)
def test_content_type_names_the_body_encoding(
    headers: dict[str, str] | None, expected: str
) -> None:
    """JSON is the default; msgpack when declared; parameters after ';' and case are ignored."""
    assert wire.content_type(headers) == expected


@pytest.mark.parametrize("declared", ["text/plain", "application/xml", "application/cbor"])
def test_unsupported_content_type_is_invalid(declared: str) -> None:
    """A Content-Type other than JSON or msgpack is InvalidRequestError naming it."""
    with pytest.raises(InvalidRequestError, match=rf"unsupported Content-Type '{declared}'"):
        wire.content_type({"Content-Type": declared})


def test_unsupported_content_type_message_is_bounded() -> None:
    """A huge unsupported Content-Type is cut short in the error message."""
    with pytest.raises(InvalidRequestError, match=r"unsupported Content-Type 'x+'$") as raised:
        wire.content_type({"Content-Type": "x" * 10_000})
    assert len(raised.value.message) < 200


# -- decode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_empty_body_is_an_empty_object(encoding: str) -> None:
    """An empty body decodes to {} in either encoding."""
    assert wire.decode(b"", encoding) == {}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("value", [[], [1], 1, "text", None, True, 1.5])
def test_body_that_is_not_an_object_is_invalid(encoding: str, value: Any) -> None:
    """A body that decodes to anything but an object is InvalidRequestError."""
    body = packed(value, encoding)
    with pytest.raises(InvalidRequestError, match=r"^body must be an object$"):
        wire.decode(body, encoding)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{'a': 1}",
        b'{"a": 1}x',
        b"\xff",
        b'{"a": "\xff"}',
        b"\x00",
        b'{"a": 01}',
    ],
)
def test_malformed_json_is_invalid_without_internals(body: bytes) -> None:
    """Invalid JSON or UTF-8 is InvalidRequestError saying only that the body is not JSON."""
    with pytest.raises(InvalidRequestError, match=r"^body is not valid JSON$"):
        wire.decode(body, wire.JSON)


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # a byte msgpack never uses
        b"\x81",  # a map with its entry missing
        b"\x81\xa1a\xa1\xff",  # a string that is not UTF-8
        b"\x81\x01\x02",  # a map with an integer key
        b"\x80\x80",  # extra data after the object
        b"\x81\xa1a",  # truncated
    ],
)
def test_malformed_msgpack_is_invalid_without_internals(body: bytes) -> None:
    """Invalid msgpack is InvalidRequestError saying only that the body is not msgpack."""
    with pytest.raises(InvalidRequestError, match=r"^body is not valid msgpack$"):
        wire.decode(body, wire.MSGPACK)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("nested", [nested_objects, nested_lists])
def test_nesting_up_to_max_depth_is_accepted(encoding: str, nested: Any) -> None:
    """A body nested exactly MAX_DEPTH levels deep decodes."""
    value = nested(wire.MAX_DEPTH)
    assert wire.decode(packed(value, encoding), encoding) == value


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("nested", [nested_objects, nested_lists])
def test_nesting_deeper_than_max_depth_is_invalid(encoding: str, nested: Any) -> None:
    """A body nested MAX_DEPTH + 1 levels deep is InvalidRequestError."""
    body = packed(nested(wire.MAX_DEPTH + 1), encoding)
    with pytest.raises(InvalidRequestError, match=rf"nested more than {wire.MAX_DEPTH} levels"):
        wire.decode(body, encoding)


def test_very_deep_json_is_invalid_not_a_crash() -> None:
    """JSON nested 100,000 levels deep is InvalidRequestError, not a RecursionError."""
    body = b'{"a":' * 100_000 + b"{}" + b"}" * 100_000
    with pytest.raises(InvalidRequestError, match=r"nested too deeply"):
        wire.decode(body, wire.JSON)


def test_very_deep_json_arrays_are_invalid_not_a_crash() -> None:
    """A JSON array nested 100,000 levels deep is InvalidRequestError, not a RecursionError."""
    body = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidRequestError, match=r"nested too deeply"):
        wire.decode(body, wire.JSON)


def test_very_deep_msgpack_is_invalid_not_a_crash() -> None:
    """msgpack nested 100,000 levels deep is InvalidRequestError, not a crash."""
    body = b"\x81\xa1a" * 100_000 + b"\x80"
    with pytest.raises(InvalidRequestError, match=r"^body is"):
        wire.decode(body, wire.MSGPACK)


# -- encode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@given(value=json_objects)
def test_encode_decode_round_trip(encoding: str, value: dict[str, Any]) -> None:
    """Any JSON-like object survives encode then decode unchanged, in either encoding."""
    assert wire.decode(wire.encode(value, encoding), encoding) == value


@pytest.mark.parametrize("encoding", ENCODINGS)
@given(value=json_objects, items=st.lists(json_objects, max_size=4))
def test_encoding_in_pieces_gives_the_same_bytes(
    encoding: str, value: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    """``encode_in_pieces`` (a reply built one value and one list item at a time) gives the
    bytes ``encode`` gives, in either encoding."""
    reply = {**value, "items": items, "page": (1, Colour.RED)}
    assert wire.encode_in_pieces(reply, encoding) == wire.encode(reply, encoding)


def test_json_is_compact_utf8() -> None:
    """JSON bodies are compact and carry non-ASCII text as UTF-8, not escapes."""
    assert wire.encode({"a": [1, "é"]}, wire.JSON) == '{"a":[1,"é"]}'.encode()


class Colour(Enum):
    RED = "red"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_enums_and_tuples_are_sent_as_plain_values(encoding: str) -> None:
    """Enums travel as their values and tuples and sets as lists."""
    body = wire.encode({"c": Colour.RED, "t": (1, 2), "s": {3}}, encoding)
    assert wire.decode(body, encoding) == {"c": "red", "t": [1, 2], "s": [3]}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_values_neither_encoding_has_are_refused(encoding: str) -> None:
    """An arbitrary object cannot be encoded: TypeError naming its type."""
    with pytest.raises(TypeError, match=r"object cannot be sent over NATS"):
        wire.encode({"x": object()}, encoding)


# -- error replies -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_error_reply_carries_status_and_body(encoding: str, code: str) -> None:
    """An error reply has the status string in Nats-Service-Error-Code and the code in the body."""
    error = ERRORS_BY_CODE[code].from_wire("something went wrong")
    body, headers = wire.error_reply(error, encoding)
    assert headers[wire.ERROR_CODE] == STATUS[code]
    assert headers[wire.ERROR] == "something went wrong"
    assert headers[wire.CONTENT_TYPE] == encoding
    assert wire.decode(body, encoding) == {
        "error": {"code": code, "message": "something went wrong"}
    }


@pytest.mark.parametrize(
    "message",
    [
        "line one\nline two\r\nline three",
        "tab\there\x0bvertical\x0cfeed\x1cfile\x85next\u2028line",
        "word " * 2048,  # 10 KB
        "\n".join(["x" * 100] * 100),
    ],
)
def test_error_header_is_one_bounded_line_and_body_keeps_the_message(message: str) -> None:
    """A multi-line or long message is one short line in the header and whole in the body."""
    body, headers = wire.error_reply(InvalidRequestError(message), wire.JSON)
    text = headers[wire.ERROR]
    assert text
    assert len(text) <= 512
    assert len(text.encode()) <= 2048
    assert text.isprintable()
    assert text == text.strip()
    assert wire.decode(body, wire.JSON)["error"]["message"] == message


def test_error_header_keeps_a_short_message_as_is() -> None:
    """A short one-line message is the header value unchanged."""
    _, headers = wire.error_reply(NotFoundError("checkpoint", "x1"), wire.JSON)
    assert headers[wire.ERROR] == "checkpoint 'x1' not found"


# -- raise_for_reply ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("code", sorted(ERRORS_BY_CODE))
def test_raise_for_reply_raises_the_class_by_code(encoding: str, code: str) -> None:
    """An error reply raises exactly the class its code names, with the whole message."""
    message = "first line\nsecond line " + "y" * 1000
    body, headers = wire.error_reply(ERRORS_BY_CODE[code].from_wire(message), encoding)
    with pytest.raises(CheckpointError, match=r"^first line\nsecond line y+$") as raised:
        wire.raise_for_reply(body, headers)
    assert type(raised.value) is ERRORS_BY_CODE[code]
    assert raised.value.message == message


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_only_a_write_the_moving_writer_did_not_apply_is_marked_for_a_retry(encoding: str) -> None:
    """A cluster's "writer moved" 503 carries Checkpointd-Retry and comes back as
    WriterMovedError (which the client sends again); a full disk's 503 does neither."""
    body, headers = wire.error_reply(WriterMovedError("not the writer; retry"), encoding)
    assert headers[wire.ERROR_CODE] == "503"
    assert headers["Checkpointd-Retry"] == "writer"
    with pytest.raises(WriterMovedError):
        wire.raise_for_reply(body, headers)
    body, headers = wire.error_reply(StorageError("storage is full"), encoding)
    assert "Checkpointd-Retry" not in headers
    with pytest.raises(UnavailableError) as raised:
        wire.raise_for_reply(body, headers)
    assert type(raised.value) is UnavailableError


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("400", InvalidRequestError),
        ("404", NotFoundError),
        ("409", ConflictError),
        ("413", TooLargeError),
        ("503", UnavailableError),
        ("500", InternalError),
        ("418", InternalError),
    ],
)
@pytest.mark.parametrize("body", [b"not json {", b"", b"[1, 2]", b'{"other": 1}'])
def test_raise_for_reply_falls_back_to_the_status(
    status: str, expected: type[CheckpointError], body: bytes
) -> None:
    """An unreadable error body raises the class of the status (InternalError if unknown)."""
    headers = {wire.ERROR_CODE: status, wire.ERROR: "from the header"}
    with pytest.raises(CheckpointError, match=r"^from the header$") as raised:
        wire.raise_for_reply(body, headers)
    assert type(raised.value) is expected


def test_raise_for_reply_with_unknown_code_uses_the_status() -> None:
    """A body whose code is unknown raises the class of the status, with the body's message."""
    body = json.dumps({"error": {"code": "teapot", "message": "from the body"}}).encode()
    with pytest.raises(ConflictError, match=r"^from the body$"):
        wire.raise_for_reply(body, {wire.ERROR_CODE: "409"})


@pytest.mark.parametrize(
    "headers", [None, {}, {wire.CONTENT_TYPE: wire.JSON}, {wire.ERROR: "not an error reply"}]
)
def test_raise_for_reply_returns_for_success(headers: dict[str, str] | None) -> None:
    """A reply without Nats-Service-Error-Code is a success: raise_for_reply returns None."""
    assert wire.raise_for_reply(b'{"error": {"code": "conflict"}}', headers) is None


# -- header size -------------------------------------------------------------------------------


async def nats_header_bytes(headers: dict[str, str]) -> int:
    """The size of the header block nats-py writes for ``headers`` (read from its HPUB line).

    An unconnected client queues the command instead of sending it, so nothing is faked.
    """
    client = nats.aio.client.Client()
    await client._send_publish("subject", "", b"", 0, headers)
    command = bytes(client._pending[-1])
    head = command.split(b"\r\n", 1)[0].split()
    assert head[0] == b"HPUB"
    return int(head[-2])


def test_no_headers_take_no_bytes() -> None:
    """A message without headers spends nothing on them."""
    assert wire.header_size(None) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {wire.CONTENT_TYPE: wire.JSON},
        {wire.CONTENT_TYPE: wire.MSGPACK, wire.MSG_ID: "0123456789abcdef"},
        wire.error_reply(InvalidRequestError("é\nmulti-line " * 300), wire.JSON)[1],
        {
            wire.CONTENT_TYPE: wire.JSON,
            wire.DOWNLOAD: "ab" * 16,
            wire.DOWNLOAD_SIZE: "123456789",
            wire.DOWNLOAD_CHUNKS: "12",
            wire.DOWNLOAD_SHA256: "cd" * 32,
        },
        {wire.UPLOAD: "u" * 64, wire.CHUNK: "99999/100000"},
    ],
)
async def test_header_size_matches_nats_py(headers: dict[str, str]) -> None:
    """header_size is the byte count of the header block nats-py puts on the wire."""
    assert wire.header_size(headers) == await nats_header_bytes(headers)


header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True)
header_values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=60
).map(str.strip)


@given(st.dictionaries(header_names, header_values, min_size=1, max_size=6))
async def test_header_size_matches_nats_py_for_any_headers(headers: dict[str, str]) -> None:
    """For any one-line header names and values, header_size agrees with nats-py byte for byte."""
    assert wire.header_size(headers) == await nats_header_bytes(headers)


@pytest.mark.parametrize(
    "body",
    [b'{"name": NaN}', b'{"x": [Infinity]}', b'{"x": -Infinity}'],
)
def test_json_constants_that_are_not_json_are_invalid(body: bytes) -> None:
    """NaN and Infinity, which Python's json accepts, are refused as invalid JSON."""
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        wire.decode(body, wire.JSON)


@pytest.mark.parametrize(
    "body",
    [b'{"name": "a\\ud800b"}', b'{"\\uDC00": 1}', b'{"x": [{"y": "\\udfff"}]}'],
)
def test_json_lone_surrogates_are_invalid(body: bytes) -> None:
    """A lone UTF-16 surrogate escape (which could not be stored or sent back) is refused."""
    with pytest.raises(InvalidRequestError, match="lone UTF-16 surrogate"):
        wire.decode(body, wire.JSON)


def test_json_surrogate_pairs_are_accepted() -> None:
    """A proper surrogate pair escape decodes to its character."""
    assert wire.decode(b'{"x": "\\ud83d\\ude00"}', wire.JSON) == {"x": "\U0001f600"}
