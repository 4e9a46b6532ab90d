"""The conversions derived from the field table (``checkpointd.fields``), generated at import.

Each function here returns a function whose source is generated from ``FIELDS``: the
straight-line code one would write by hand for the table as it stands (one dict or tuple
display, one expression per field), compiled once. No call loops over the table, so the hot
paths (``to_wire`` on every reply, ``created_values`` on every create the projector applies,
live or in a rebuild) cost what hand-kept code did. This is how ``dataclasses`` and ``cattrs``
build their methods.

The generated source is registered with ``linecache``, so tracebacks show its lines and
``inspect.getsource`` returns it.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from checkpointd.fields import FIELDS, LIFTED_FROM, UPDATE, Data, Field, Header, Lifted

__all__ = [
    "created_values",
    "created_wire",
    "metadata_columns",
    "row_reader",
    "updated_row",
    "wire_decoder",
    "wire_encoder",
]

# The names generated code refers to: the codecs' and sources' functions, under their own names
# (and this module's, which the generated functions report as theirs).
_GLOBALS: dict[str, Any] = {"__name__": __name__}


def _ref(value: Any) -> str:
    """The name generated code calls ``value`` by."""
    name: str = value.__name__
    if _GLOBALS.setdefault(name, value) is not value:
        raise ValueError(f"two functions of the field table are named {name!r}")
    return name


def _convert(convert: Callable[[Any], Any] | None, value: str, field: Field) -> str:
    """The expression converting ``value`` (an expression) with ``convert``; a null stays null."""
    if convert is None:
        return value
    if not field.nullable:
        return f"{_ref(convert)}({value})"
    local = f"_{field.name}"
    return f"(None if ({local} := {value}) is None else {_ref(convert)}({local}))"


def _lookup(mapping: str, key: str, nullable: bool) -> str:
    return f"{mapping}.get({key!r})" if nullable else f"{mapping}[{key!r}]"


def _event_value(field: Field, header: Callable[[str], str]) -> str:
    """The field's wire value as a create event holds it; ``header(attr)`` reads the header."""
    source = field.source
    if isinstance(source, Header):
        return header(source.attr)
    assert isinstance(source, Data), field  # a view-only column has no wire value
    value = _lookup("data", source.key or str(field.wire), field.nullable)
    return value if source.derive is None else f"{_ref(source.derive)}({value})"


def _lifted_value(source: Lifted) -> str:
    if source.default is None:
        value = f"{LIFTED_FROM}.get({source.key!r})"
    else:
        value = f"{LIFTED_FROM}.get({source.key!r}, {source.default!r})"
    return value if source.derive is None else f"{_ref(source.derive)}({value})"


def _column_value(field: Field, header: Callable[[str], str]) -> str:
    """The field's view column value from a create event (data in local ``data``)."""
    if isinstance(field.source, Lifted):
        return _lifted_value(field.source)
    if field.name == LIFTED_FROM:  # read once into a local, for the lifted columns too
        return _convert(field.codec.to_column, LIFTED_FROM, field)
    return _convert(field.codec.to_column, _event_value(field, header), field)


def _compile(name: str, qualname: str, lines: list[str], doc: str) -> Callable[..., Any]:
    source = "\n".join(lines) + "\n"
    filename = f"<checkpointd.derived {qualname}>"
    scope: dict[str, Any] = {}
    # The source is built from the field table alone (names and constants), never from input.
    exec(compile(source, filename, "exec"), _GLOBALS, scope)  # noqa: S102
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    function: Callable[..., Any] = scope[name]
    function.__qualname__ = qualname
    function.__doc__ = doc
    return function


def _entries(pairs: Sequence[tuple[str, str]], indent: str) -> list[str]:
    return [f"{indent}{key!r}: {value}," for key, value in pairs]


def wire_encoder() -> Callable[[Any], dict[str, Any]]:
    """``Checkpoint.to_wire``: the wire form, with a field the view does not hold (the
    snapshot) only when it is set."""
    always = [f for f in FIELDS if f.wire is not None and f.source is not None]
    when_set = [f for f in FIELDS if f.wire is not None and f.source is None]
    pairs = [(str(f.wire), _convert(f.codec.to_wire, f"self.{f.name}", f)) for f in always]
    lines = ["def to_wire(self):", "    wire = {", *_entries(pairs, "        "), "    }"]
    for f in when_set:
        value = _convert(f.codec.to_wire, f"self.{f.name}", f)
        lines += [f"    if self.{f.name} is not None:", f"        wire[{f.wire!r}] = {value}"]
    lines.append("    return wire")
    doc = "The wire form: camelCase keys, ISO-8601 UTC times; ``snapshot`` only when set."
    return _compile("to_wire", "Checkpoint.to_wire", lines, doc)


def wire_decoder() -> Callable[[type[Any], Mapping[str, Any]], Any]:
    """``(cls, wire) -> cls(...)``: the checkpoint a wire form describes."""
    args = []
    for f in FIELDS:
        if f.wire is not None:
            value = _lookup("wire", f.wire, f.nullable)
            args.append(f"        {f.name}={_convert(f.codec.from_wire, value, f)},")
    lines = ["def from_wire(cls, wire):", "    return cls(", *args, "    )"]
    return _compile(
        "from_wire", "Checkpoint.from_wire", lines, "The checkpoint ``wire`` describes."
    )


def row_reader(cls: type[Any]) -> Callable[..., Any]:
    """``(row, *, snapshot) -> cls(...)``: the checkpoint a view row (a dict) describes, with
    each field the view does not hold given as a keyword argument."""
    args, given = [], []
    for f in FIELDS:
        if f.wire is None:
            continue
        if f.source is None:
            given.append(f.name)
            args.append(f"        {f.name}={f.name},")
        else:
            value = _convert(f.codec.from_column, f"row[{f.name!r}]", f)
            args.append(f"        {f.name}={value},")
    signature = ", ".join(["row", "*", *given])
    lines = [f"def checkpoint_from_row({signature}):", f"    return {_ref(cls)}(", *args, "    )"]
    doc = "The Checkpoint a view row describes, with ``snapshot`` attached as given."
    return _compile("checkpoint_from_row", "checkpoint_from_row", lines, doc)


def created_wire() -> Callable[[Any], dict[str, Any]]:
    """``(event) -> dict``: the wire form (without snapshot) of the checkpoint a
    ``checkpoint.created`` event (an ``EventRecord``) made."""
    pairs = [
        (str(f.wire), _event_value(f, lambda attr: f"event.{attr}"))
        for f in FIELDS
        if f.wire is not None and f.source is not None
    ]
    lines = [
        "def created_wire(event):",
        "    data = event.payload()",
        "    return {",
        *_entries(pairs, "        "),
        "    }",
    ]
    doc = "The wire form (without snapshot) of the checkpoint a ``checkpoint.created`` event made."
    return _compile("created_wire", "created_wire", lines, doc)


def created_values(header_columns: Sequence[str]) -> Callable[..., tuple[Any, ...]]:
    """``(header, data) -> tuple``: the view row of a create, in ``fields.COLUMNS`` order.

    ``header`` is a log row whose first columns are ``header_columns`` (the event's header);
    ``data`` the event's decoded data.
    """
    used = sorted(
        {f.source.attr for f in FIELDS if isinstance(f.source, Header)}, key=header_columns.index
    )
    values = [_column_value(f, lambda attr: attr) for f in FIELDS if f.source is not None]
    lines = [
        "def created_values(header, data):",
        # One index each: cheaper than unpacking a slice, which builds a tuple.
        *(f"    {attr} = header[{header_columns.index(attr)}]" for attr in used),
        f"    {LIFTED_FROM} = data[{LIFTED_FROM!r}]",
        "    return (",
        *(f"        {value}," for value in values),
        "    )",
    ]
    doc = "The view row a ``checkpoint.created`` event produces, as a tuple in ``COLUMNS`` order."
    return _compile("created_values", "created_values", lines, doc)


def _metadata_lines(indent: str, target: str) -> list[str]:
    """Statements setting the metadata's column and the columns lifted from it."""
    (field,) = (f for f in FIELDS if f.name == LIFTED_FROM)
    pairs = [(field.name, _convert(field.codec.to_column, LIFTED_FROM, field))]
    pairs += [(f.name, _lifted_value(f.source)) for f in FIELDS if isinstance(f.source, Lifted)]
    return [f"{indent}{target}[{column!r}] = {value}" for column, value in pairs]


def metadata_columns() -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """``(metadata) -> dict``: the metadata's column and the columns lifted from it."""
    lines = ["def metadata_columns(metadata):", "    row = {}", *_metadata_lines("    ", "row")]
    lines.append("    return row")
    doc = "The metadata fields the view keeps in their own columns, for indexes and FTS."
    return _compile("metadata_columns", "metadata_columns", lines, doc)


def updated_row() -> Callable[[Mapping[str, Any], Any, Mapping[str, Any]], dict[str, Any]]:
    """``(before, event, changes) -> dict``: the view row after a ``checkpoint.updated`` event
    (an ``EventRecord``) whose ``changes`` are wire values under wire keys."""
    lines = ["def updated_row(before, event, changes):", "    row = dict(before)"]
    for f in FIELDS:
        if f.wire is None or UPDATE not in f.traits:
            continue
        lines.append(f"    if {f.wire!r} in changes:")
        if f.name == LIFTED_FROM:
            lines.append(f"        {LIFTED_FROM} = changes[{f.wire!r}]")
            lines += _metadata_lines("        ", "row")
        else:
            value = _convert(f.codec.to_column, f"changes[{f.wire!r}]", f)
            lines.append(f"        row[{f.name!r}] = {value}")
    for f in FIELDS:
        if isinstance(f.source, Header) and f.source.every_event:
            lines.append(f"    row[{f.name!r}] = event.{f.source.attr}")
    lines.append("    return row")
    doc = "The view row after a ``checkpoint.updated`` event with ``changes`` (wire keys)."
    return _compile("updated_row", "updated_row", lines, doc)
