"""The canonical encoding of a snapshot, and its checksum.

A snapshot is JSON-like: objects with string keys, arrays, strings, integers that fit in 64 bits,
finite floats, booleans and null. Its canonical encoding is msgpack with every object's keys
sorted (by code point, which is also UTF-8 byte order), so equal snapshots give equal bytes
whatever the order their dicts were built in. Integers take msgpack's smallest form and floats are
always float64. The checksum of a snapshot is the sha256 of these bytes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

import msgpack

from checkpointd.errors import IntegrityError, InvalidRequestError

CHECKSUM_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_ALLOWED = "use an object, array, string, number, boolean or null"


def canonical_encode(
    value: Mapping[str, Any], *, max_depth: int = 64, binary: bool = False
) -> bytes:
    """Encode a snapshot as canonical msgpack.

    Args:
        value: the snapshot; a mapping with string keys whose values are JSON-like.
        max_depth: how many objects and arrays may be nested, the top-level object included.
        binary: also accept bytes values (msgpack's bin format), as pending writes' values may
            hold; a snapshot never does.

    Returns:
        The canonical bytes: equal snapshots give equal bytes, regardless of dict order.

    Raises:
        InvalidRequestError: the snapshot is not a mapping, or holds a value that is not
            JSON-like (bytes, a set, a datetime, a non-string key, NaN or infinity, an integer
            outside 64 bits, a lone surrogate) or is nested deeper than ``max_depth``. ``field``
            is ``snapshot`` followed by the JSON Pointer of the bad value, e.g.
            ``snapshot/state/config/x``.
    """
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"must be an object, got {_type_name(value)}", field="snapshot")
    fast = _fast_encode(value, max_depth)
    if fast is not None:
        return fast
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    # An explicit stack instead of recursion: nesting is bounded by max_depth, never by the
    # Python stack. Entries are (JSON Pointer, depth, value); object keys are pushed as plain
    # strings right above their values so they pop, and pack, first.
    stack: list[tuple[str, int, object]] = [("", 1, value)]
    while stack:
        pointer, depth, item = stack.pop()
        if isinstance(item, Mapping):
            _check_depth(pointer, depth, max_depth)
            keys = _sorted_keys(pointer, item)
            packer.pack_map_header(len(keys))
            for key in reversed(keys):
                child = f"{pointer}/{_escape(key)}"
                stack.append((child, depth + 1, item[key]))
                stack.append((child, depth + 1, key))
        elif isinstance(item, list | tuple):
            _check_depth(pointer, depth, max_depth)
            packer.pack_array_header(len(item))
            stack.extend((f"{pointer}/{i}", depth + 1, item[i]) for i in reversed(range(len(item))))
        elif binary and isinstance(item, bytes | bytearray):
            packer.pack(bytes(item))
        else:
            _pack_scalar(packer, pointer, item)
    encoded: bytes = packer.bytes()
    return encoded


class _SlowPathError(Exception):
    """The fast path met something it does not handle; the checked path decides."""


def _fast_encode(value: Mapping[str, Any], max_depth: int) -> bytes | None:
    """The common case in a few microseconds: plain dicts, lists and scalars, sorted and packed.

    Returns None for anything unusual (tuples, other Mapping types, bad values, too deep); the
    checked path then encodes it or raises the precise error with its JSON Pointer.
    """
    try:
        encoded: bytes = msgpack.packb(_sorted_copy(value, max_depth), use_bin_type=True)
    except (_SlowPathError, UnicodeEncodeError, OverflowError, ValueError, TypeError):
        return None
    return encoded


def _sorted_copy(item: Any, depth: int) -> Any:
    kind = type(item)
    if kind is dict:
        if depth <= 0:
            raise _SlowPathError
        out = {}
        for key in sorted(item):
            if type(key) is not str:
                raise _SlowPathError
            child = item[key]
            k = type(child)
            plain = k is str or k is int or k is bool or child is None
            out[key] = child if plain else _sorted_copy(child, depth - 1)
        return out
    if kind is list:
        if depth <= 0:
            raise _SlowPathError
        # Strings, ints, bools and None are taken as they are (msgpack itself refuses an int
        # over 64 bits), saving a call per element of the long lists snapshots tend to hold.
        return [
            child
            if (k := type(child)) is str or k is int or k is bool or child is None
            else _sorted_copy(child, depth - 1)
            for child in item
        ]
    if kind is str or kind is bool or item is None:
        return item
    if kind is int and _INT_MIN <= item <= _INT_MAX:
        return item
    if kind is float and item - item == 0:  # finite: inf - inf and nan - nan are nan
        return item
    raise _SlowPathError


def canonical_decode(data: bytes) -> dict[str, Any]:
    """Decode canonical snapshot bytes back into a snapshot.

    Raises:
        IntegrityError: the bytes are not msgpack, or do not hold an object.
    """
    try:
        # unpackb bounds every string, array and map length by len(data), so a forged length
        # cannot make it allocate more than the input justifies.
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise IntegrityError("snapshot bytes are not valid msgpack") from None
    if not isinstance(value, dict):
        raise IntegrityError("snapshot bytes do not hold an object")
    return value


def checksum(data: bytes) -> str:
    """The checksum of canonical snapshot bytes: ``sha256:`` and 64 lowercase hex digits."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_checksum_format(value: str) -> None:
    """Check that ``value`` looks like a checksum; whether it matches is a separate question.

    Raises:
        InvalidRequestError: ``value`` is not ``sha256:`` followed by 64 lowercase hex digits.
    """
    # fullmatch, because "$" alone would accept a trailing newline.
    if not CHECKSUM_PATTERN.fullmatch(value):
        raise InvalidRequestError(
            f"{value[:80]!r} is not sha256: followed by 64 lowercase hex digits", field="checksum"
        )


def _pack_scalar(packer: Any, pointer: str, item: object) -> None:
    if item is None or isinstance(item, bool):
        pass
    elif isinstance(item, int):
        if not _INT_MIN <= item <= _INT_MAX:
            raise _invalid(pointer, "integer does not fit in 64 bits")
    elif isinstance(item, float):
        if not math.isfinite(item):
            raise _invalid(pointer, f"{item} is not a finite number")
    elif not isinstance(item, str):
        raise _invalid(pointer, f"{_type_name(item)} is not JSON-like ({_ALLOWED})")
    try:
        packer.pack(item)
    except UnicodeEncodeError:
        raise _invalid(pointer, "string is not valid Unicode (it holds a lone surrogate)") from None


def _sorted_keys(pointer: str, item: Mapping[Any, object]) -> list[str]:
    for key in item:
        if not isinstance(key, str):
            shown = repr(key)[:40]
            raise _invalid(pointer, f"object key {shown} is {_type_name(key)}, not a string")
    return sorted(item)


def _check_depth(pointer: str, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise _invalid(pointer, f"nested deeper than {max_depth} levels")


def _invalid(pointer: str, reason: str) -> InvalidRequestError:
    return InvalidRequestError(reason, field=f"snapshot{pointer}")


def _escape(key: str) -> str:
    """A key as a JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _type_name(value: object) -> str:
    return type(value).__name__
