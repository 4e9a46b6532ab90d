"""Bodies and headers on NATS: JSON or msgpack, error replies, and the size of a message.

Shared by the service and ``CheckpointClient``; imports no NATS code.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

import msgpack

from checkpointd.errors import (
    ERRORS_BY_CODE,
    CheckpointError,
    InternalError,
    InvalidRequestError,
    UnavailableError,
    WriterMovedError,
)

JSON = "application/json"
MSGPACK = "application/msgpack"
CONTENT_TYPE = "Content-Type"
MSG_ID = "Nats-Msg-Id"
ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"
UPLOAD = "Checkpointd-Upload"
CHUNK = "Checkpointd-Chunk"
DOWNLOAD = "Checkpointd-Download"
DOWNLOAD_SIZE = "Checkpointd-Download-Size"
DOWNLOAD_CHUNKS = "Checkpointd-Download-Chunks"
DOWNLOAD_SHA256 = "Checkpointd-Download-Sha256"
SEQ = "Checkpointd-Seq"
"""On every reply to a request: the log position the request was answered at."""
MIN_SEQ = "Checkpointd-Min-Seq"
"""On a request: the log position its reads must reflect at least (0, or absent: no floor)."""
RETRY = "Checkpointd-Retry"
"""On a 503: ``writer`` when the write was not applied because a cluster's writer moved."""

MAX_DEPTH = 64  # nesting of objects and arrays in a request body
_SNAPSHOT_FIELDS = frozenset({"snapshot", "currentState"})
_ERROR_TEXT = 512  # characters of an error message that go into the header
# A log position is an integer up to 2^53 - 1, as positions in bodies are (exact everywhere).
_MAX_POSITION = 2**53 - 1
_SEQ_DIGITS = len(str(_MAX_POSITION))


def content_type(headers: Mapping[str, str] | None) -> str:
    """The body encoding a message declares (JSON when absent). Raises InvalidRequestError."""
    declared = (headers or {}).get(CONTENT_TYPE, JSON).split(";", 1)[0].strip().lower()
    if declared in {JSON, "", "text/json"}:
        return JSON
    if declared in {MSGPACK, "application/x-msgpack"}:
        return MSGPACK
    raise InvalidRequestError(f"unsupported Content-Type {declared[:64]!r}")


def decode(body: bytes, encoding: str, *, trusted: bool = False) -> dict[str, Any]:
    """A request body as an object. Raises InvalidRequestError for anything malformed.

    The nesting check skips ``snapshot`` and ``currentState`` (the snapshot codec bounds their
    depth anyway, and they are most of the body); ``trusted`` (replies from checkpointd) skips
    it altogether.
    """
    if not body:
        return {}
    try:
        if encoding == MSGPACK:
            value = msgpack.unpackb(body, raw=False, strict_map_key=True)
            _check_keys(body, value)
        else:
            # Decoded strictly first: json.loads on bytes would let UTF-8-encoded surrogates in.
            text = body.decode("utf-8")
            value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
            if "\\ud" in text.lower():  # only an escape can smuggle in a lone surrogate
                _check_surrogates(value)
    except RecursionError:
        raise InvalidRequestError("body is nested too deeply") from None
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        kind = "msgpack" if encoding == MSGPACK else "JSON"
        raise InvalidRequestError(f"body is not valid {kind}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("body must be an object")
    if not trusted:
        _check_depth(value)
    return value


def encode(value: Any, encoding: str) -> bytes:
    """A reply or request body in ``encoding`` (enums as their values).

    Raises TypeError for a value neither encoding has (a datetime, bytes in JSON, an object).
    """
    if encoding == MSGPACK:
        return msgpack.packb(value, default=_plain, use_bin_type=True)  # type: ignore[no-any-return]
    return json.dumps(value, default=_plain, separators=(",", ":"), ensure_ascii=False).encode()


def encode_in_pieces(value: Mapping[str, Any], encoding: str) -> bytes:
    """The bytes of ``encode(value, encoding)``, encoded one top-level value at a time (and a
    top-level list one item at a time), for a worker thread.

    An encoder call holds the interpreter lock throughout; between pieces the event loop's
    thread gets it back, so a page of big snapshots never holds it up for longer than one.
    """
    if any(type(key) is not str for key in value):
        return encode(value, encoding)
    one = functools.partial(encode, encoding=encoding)
    if encoding == MSGPACK:
        packer = msgpack.Packer(use_bin_type=True)
        parts = [packer.pack_map_header(len(value))]
        for key, item in value.items():
            parts.append(one(key))
            if isinstance(item, list | tuple):
                parts.append(packer.pack_array_header(len(item)))
                parts.extend(one(element) for element in item)
            else:
                parts.append(one(item))
        return b"".join(parts)  # one join: bytes.join lets go of the lock while it copies
    parts = [b"{"]
    for key, item in value.items():
        parts += [b"," if len(parts) > 1 else b"", one(key), b":"]
        if isinstance(item, list | tuple):
            parts.append(b"[")
            for n, element in enumerate(item):
                parts += [b"," if n else b"", one(element)]
            parts.append(b"]")
        else:
            parts.append(one(item))
    parts.append(b"}")
    return b"".join(parts)


def error_reply(error: CheckpointError, encoding: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an error reply (status code and message in the headers too).

    Messages may quote the request, so their text is made encodable first: an error reply must
    never fail to go out.
    """
    headers = {
        ERROR: _header_text(_valid_text(error.message)),
        ERROR_CODE: str(error.status),
        CONTENT_TYPE: encoding,
    }
    if isinstance(error, WriterMovedError):
        headers[RETRY] = "writer"
    return encode(_valid_text(error.to_wire()), encoding), headers


def min_seq(headers: Mapping[str, str] | None) -> int:
    """The ``Checkpointd-Min-Seq`` a request carries (0 when absent). Raises InvalidRequestError.

    Only plain decimal digits are taken: no sign, no spaces, no more than a log position can
    hold. A junk value is refused rather than ignored, since reading without the floor its
    sender asked for could answer from before that sender's own writes.
    """
    text = (headers or {}).get(MIN_SEQ)
    if text is None:
        return 0
    value = position(text)
    if value is None:
        raise InvalidRequestError(
            f"must be a log position: an integer from 0 to {_MAX_POSITION}, in decimal digits",
            field=MIN_SEQ,
        )
    return value


def position(text: str | None) -> int | None:
    """A log position written as decimal digits (a ``Checkpointd-Seq`` or ``-Min-Seq`` value);
    None for anything else."""
    if text is None or not 0 < len(text) <= _SEQ_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= _MAX_POSITION else None


def raise_for_reply(body: bytes, headers: Mapping[str, str] | None) -> None:
    """Raise the CheckpointError an error reply carries; return for a successful reply."""
    if not headers or ERROR_CODE not in headers:
        return
    message = headers.get(ERROR, "error")
    code = None
    try:
        detail = decode(body, content_type(headers)).get("error")
        if isinstance(detail, Mapping):
            code, message = detail.get("code"), str(detail.get("message", message))
    except InvalidRequestError:
        pass
    cls = ERRORS_BY_CODE.get(str(code)) or _BY_STATUS.get(headers[ERROR_CODE], InternalError)
    if cls is UnavailableError and headers.get(RETRY) == "writer":
        cls = WriterMovedError
    raise cls.from_wire(message)


_BY_STATUS = {str(cls.status): cls for cls in reversed(ERRORS_BY_CODE.values())}


_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def session_token(session_id: str) -> str:
    """A session's token in notification subjects.

    The id itself if it is ``[A-Za-z0-9_-]+``, else ``~`` and the unpadded base64url of its
    UTF-8, so ``.``, ``*``, ``>`` and spaces never reach a subject.
    """
    if _PLAIN_TOKEN.fullmatch(session_id):
        return session_id
    encoded = base64.urlsafe_b64encode(session_id.encode("utf-8", "surrogatepass"))
    return "~" + encoded.decode("ascii").rstrip("=")


def header_size(headers: Mapping[str, str] | None) -> int:
    """Bytes the headers take in a NATS message (``NATS/1.0`` line, one line each, blank line).

    The server counts headers against ``max_payload``; nats-py checks only the payload.
    """
    if headers is None:
        return 0
    size = len(b"NATS/1.0\r\n") + 2
    for key, value in headers.items():
        size += len(key.encode()) + 2 + len(value.encode()) + 2
    return size


def _header_text(message: str) -> str:
    # Header values are one line of text.
    flat = " ".join(message.split())
    return flat if len(flat) <= _ERROR_TEXT else flat[: _ERROR_TEXT - 3] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: JSON has no infinities
        raise ValueError("number out of range")
    return number


def _valid_text(value: Any) -> Any:
    """``value`` with every string made encodable (a lone surrogate becomes ``?``)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(item) for item in value]
    return value


def _check_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequestError("body holds a lone UTF-16 surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_BIN_MARKERS = (b"\xc4", b"\xc5", b"\xc6")  # msgpack's bin 8, bin 16 and bin 32 formats


def _check_keys(body: bytes, value: Any) -> None:
    """Refuse an object key that is not a string, at any depth of a msgpack body.

    With ``strict_map_key`` msgpack yields str or bytes keys, and only its bin formats make
    bytes: a body without their marker bytes is not walked.
    """
    if not any(marker in body for marker in _BIN_MARKERS):
        return
    stack: list[Any] = [value] if type(value) is dict else []  # a non-object is refused anyway
    while stack:
        item = stack.pop()
        children: Iterable[Any] = item
        if type(item) is dict:
            if any(type(key) is not str for key in item):
                raise InvalidRequestError("body holds an object key that is not a string")
            children = item.values()
        stack.extend(child for child in children if type(child) is dict or type(child) is list)


def _check_depth(body: dict[str, Any]) -> None:
    """Refuse nesting deeper than MAX_DEPTH without recursing (bodies come from anyone).

    The snapshot fields of the body are skipped (see ``decode``). Decoded bodies hold plain
    dicts and lists only, so exact type tests suffice.
    """
    stack: list[tuple[Any, int]] = [
        (child, 2)
        for key, child in body.items()
        if (type(child) is dict or type(child) is list) and key not in _SNAPSHOT_FIELDS
    ]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequestError(f"body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend(
                (child, depth + 1) for child in item.values() if isinstance(child, dict | list)
            )
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, dict | list))


def _plain(value: Any) -> Any:
    # Datetimes are not converted here: only fields that take one may carry one (the client
    # converts those), anywhere else (a snapshot) it is refused as in-process.
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be sent over NATS")
