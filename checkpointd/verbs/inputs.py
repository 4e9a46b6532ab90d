"""Command-line values in: JSON arguments, ``--param`` values and the checked option types.

A JSON argument is text, ``@FILE`` or ``-`` (stdin); whatever is wrong with it (an unreadable
file, bytes that are not UTF-8, text that is not JSON, nesting too deep to parse) is an
``InvalidRequestError`` naming the flag, which the command reports as exit 65. The option types
raise ``argparse.ArgumentTypeError``: argparse names the option and exits 2 (usage).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from checkpointd.errors import InvalidRequestError

NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def json_arg(value: str, flag: str) -> Any:
    """The JSON value of ``value``: JSON text, ``@FILE`` or ``-`` (stdin)."""
    if value == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        raw: bytes | str = sys.stdin.read() if stdin is None else stdin.read()
        where = "stdin"
    elif value.startswith("@"):
        try:
            raw = Path(value[1:]).read_bytes()
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read {value[1:]}: {exc.strerror}", field=flag
            ) from None
        where = value[1:]
    else:
        raw, where = value, "the value"
    text = _utf8(raw, where, flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"not valid JSON ({exc.msg} at {exc.pos})", field=flag) from None
    except RecursionError:
        raise InvalidRequestError("nested too deeply to read", field=flag) from None


def json_object(value: str, flag: str) -> dict[str, Any]:
    """``json_arg`` that must be an object (``[]``, ``0``, ``""`` or ``false`` are refused)."""
    found = json_arg(value, flag)
    if not isinstance(found, dict):
        raise InvalidRequestError(f"expected a JSON object, not {_kind(found)}", field=flag)
    return found


def param(value: str) -> Any:
    """A ``--param`` value: its JSON value when it is JSON (``137``, ``true``, ``null``,
    ``"text"``), else the text itself (``main``, ``2024-05-01``)."""
    try:
        return json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return value


def text_param(value: str) -> str:
    """A ``--param-str`` value: always the text as typed."""
    return value


def positive_seconds(value: str) -> float:
    """``--timeout``: a number of seconds above 0."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {value}")
    return seconds


def nats_urls(value: str) -> str:
    """``--nats-url``: one or more comma-separated ``nats://HOST:PORT`` URLs."""
    for url in value.split(","):
        try:
            parts = urlsplit(url.strip())
            good = parts.scheme in NATS_SCHEMES and bool(parts.hostname)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            good = False
        if not good:
            # A URL may carry a password: show it only when it has none.
            shown = "" if "@" in url else f" {url.strip()!r}"
            schemes = "|".join(NATS_SCHEMES)
            raise argparse.ArgumentTypeError(
                f"not a NATS URL{shown} (expected {schemes}://HOST:PORT)"
            )
    return value


def _utf8(raw: bytes | str, where: str, flag: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"{where} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})"
        raise InvalidRequestError(reason, field=flag) from None


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity stay text


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    return "a number"
