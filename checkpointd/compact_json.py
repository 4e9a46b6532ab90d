"""Compact JSON text (no spaces, UTF-8 as is) from one encoder built once.

``json.dumps`` with options, and ``JSONEncoder.encode``, build a new C encoder on every call;
this costs more than encoding the small objects the write path and notifications encode. The
C encoder is built once here and reused (it holds no state between calls when circular checks
are off). Values with reference cycles are not passed in: the view's JSON comes from data that
went through the canonical encoding (which bounds nesting), notifications from decoded events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any

Dumps = Callable[[Any], str]


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def compact_dumps(*, sort_keys: bool) -> Dumps:
    """A function returning the text ``json.dumps(value, separators=(",", ":"),
    ensure_ascii=False, sort_keys=sort_keys)`` would, without building an encoder per call."""
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder, built once
        fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
        return fallback.encode
    encode = make(None, _refuse, _encoder.encode_basestring, None, ":", ",", sort_keys, False, True)

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps
