"""The snapshot schema check that ``validate`` and restore's ``validateSchema`` run.

The original API's snapshot shape::

    sessions: string[]
    state: {progress: number 0-100, completed: any[], pending: any[], config: object,
            resources: {memory: string, cpu: string, disk: string}}
    metadata: {version: string, environment: string, labels: string[]}

Decisions:

- Every key is optional and unknown keys (at any level) are allowed and produce nothing.
- A known key present with the wrong type or out of range is an error, and makes the snapshot
  invalid. ``null`` is a value, not absence: ``"progress": null`` is an error. A boolean is not a
  number. Every known key is checked alike, including the original API's finer
  fields (``resources``'
  strings, ``metadata``), so one rule covers them all.
- A missing ``sessions`` or ``state`` is a warning: the original API's snapshots always have them,
  but
  a snapshot without them still restores.
- One error per wrong key: an array of strings with bad items names the first one and counts
  the rest, so the report stays small whatever the snapshot's size.
- Messages name the JSON Pointer of the value (``/state/progress``) and show scalars cut to a
  few dozen characters; objects and arrays are named, never shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SchemaReport", "check_snapshot_schema"]

_SHOWN_CHARS = 40

_Check = Callable[[str, object, list[str]], None]
"""Checks the value at a JSON Pointer, appending one message per problem."""


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """The outcome of a schema check; ``valid`` is false exactly when there are errors."""

    valid: bool
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def check_snapshot_schema(snapshot: Mapping[str, Any]) -> SchemaReport:
    """Check a decoded snapshot against the original API's snapshot schema.

    Args:
        snapshot: the decoded snapshot; anything else than a mapping is reported, not raised.

    Returns:
        The report: errors for known keys with a wrong type or range (e.g.
        ``"/state/progress: must be a number from 0 to 100, got 150"``), warnings for a missing
        ``sessions`` or ``state``. Unknown keys produce nothing.

    Guarantees: pure; never raises; at most one error per known key.
    """
    errors: list[str] = []
    _SNAPSHOT("", snapshot, errors)
    warnings = [
        f"/{key}: missing ({reason})"
        for key, reason in _RECOMMENDED.items()
        if isinstance(snapshot, Mapping) and key not in snapshot
    ]
    return SchemaReport(valid=not errors, errors=tuple(errors), warnings=tuple(warnings))


def _string(pointer: str, value: object, errors: list[str]) -> None:
    if not isinstance(value, str):
        errors.append(_wrong(pointer, "a string", value))


def _array(pointer: str, value: object, errors: list[str]) -> None:
    if not isinstance(value, list | tuple):
        errors.append(_wrong(pointer, "an array", value))


def _strings(pointer: str, value: object, errors: list[str]) -> None:
    if not isinstance(value, list | tuple):
        errors.append(_wrong(pointer, "an array of strings", value))
        return
    bad = [index for index, item in enumerate(value) if not isinstance(item, str)]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        errors.append(_wrong(f"{pointer}/{bad[0]}", "a string", value[bad[0]]) + more)


def _percent(pointer: str, value: object, errors: list[str]) -> None:
    in_range = (
        isinstance(value, int | float)
        # bool is an int subclass in Python, but true is not a progress of 1.
        and not isinstance(value, bool)
        # NaN and the infinities fail this too; math.isfinite would overflow on a huge int.
        and 0 <= value <= 100
    )
    if not in_range:
        errors.append(_wrong(pointer, "a number from 0 to 100", value))


def _object(fields: Mapping[str, _Check]) -> _Check:
    def check(pointer: str, value: object, errors: list[str]) -> None:
        if not isinstance(value, Mapping):
            errors.append(_wrong(pointer, "an object", value))
            return
        for key, check_field in fields.items():
            if key in value:
                check_field(f"{pointer}/{key}", value[key], errors)

    return check


_SNAPSHOT = _object(
    {
        "sessions": _strings,
        "state": _object(
            {
                "progress": _percent,
                "completed": _array,
                "pending": _array,
                "config": _object({}),
                "resources": _object({"memory": _string, "cpu": _string, "disk": _string}),
            }
        ),
        "metadata": _object({"version": _string, "environment": _string, "labels": _strings}),
    }
)

_RECOMMENDED = {
    "sessions": "a snapshot usually lists its sessions",
    "state": "a snapshot usually has a state object",
}


def _wrong(pointer: str, expected: str, value: object) -> str:
    return f"{pointer or '(root)'}: must be {expected}, got {_describe(value)}"


def _describe(value: object) -> str:
    """Name a value's JSON type, showing scalars cut short and never a whole container."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        # str() of a huge int is slow, and refused past 4300 digits.
        if value.bit_length() > 64:
            return f"an integer of {value.bit_length()} bits"
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return f"string {_cut(value)}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _cut(text: str) -> str:
    shown = text[:_SHOWN_CHARS] + ("..." if len(text) > _SHOWN_CHARS else "")
    # backslashreplace: a lone surrogate must not make the message itself unencodable.
    return json.dumps(shown, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()
