"""The compiler of the ``where`` filter grammar: a syntax tree and parameters in, SQL out.

The SQL text is assembled only from column names in ``COLUMNS``, operator and keyword constants
and ``?`` placeholders; every literal, parameter and metadata path is bound as a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from checkpointd.clock import format_timestamp, parse_timestamp
from checkpointd.errors import InvalidRequestError
from checkpointd.query.columns import Kind
from checkpointd.query.diagnostics import filter_error, shown
from checkpointd.query.syntax import (
    And,
    ColumnRef,
    Comparison,
    Contains,
    InList,
    IsNull,
    Literal,
    MetadataRef,
    Node,
    Not,
    Op,
    Operand,
    Or,
    Param,
    Reference,
    Value,
)
from checkpointd.query.tokens import Scalar, in_range

__all__ = ["Compiled", "Compiler"]

ParamValue: TypeAlias = Scalar | datetime


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled filter: SQL for a ``WHERE`` clause and the values for its ``?`` placeholders.

    ``sql`` is ``""`` for an empty filter; otherwise it can be joined to other conditions with
    ``AND`` without extra parentheses.
    """

    sql: str
    params: tuple[object, ...]


class Compiler:
    """Walks the AST left to right, so ``bound`` is in the order of the ``?`` in the SQL."""

    def __init__(self, params: Sequence[object]) -> None:
        """``params`` holds one value per ``Param`` index of the tree to compile."""
        self._params = params
        self.bound: list[Scalar] = []

    def node(self, node: Node) -> str:
        """The SQL of ``node``; appends the values of its placeholders to ``bound``.

        Raises:
            InvalidRequestError: with the position of a value or parameter the compared column
                cannot take.
        """
        match node:
            case And(operands):
                return self._group(" AND ", operands)
            case Or(operands):
                return self._group(" OR ", operands)
            case Not(operand):
                inner = self.node(operand)  # And/Or come parenthesised already
                return f"NOT {inner}" if isinstance(operand, And | Or) else f"NOT ({inner})"
            case IsNull(ref, negated):
                return f"{self._reference(ref)} IS {'NOT ' if negated else ''}NULL"
            case InList(ref, values, negated):
                ref_sql = self._reference(ref)  # binds first: its '?' comes first
                sql = ", ".join(self._value(value, ref, None) for value in values)
                return f"{ref_sql} {'NOT ' if negated else ''}IN ({sql})"
            case Contains(value, ref, negated):
                member = self._member(value, ref)
                rows = f"SELECT 1 FROM json_each({ref.column.sql}) WHERE value = {member}"
                return f"{'NOT ' if negated else ''}EXISTS ({rows})"
            case Comparison(left, op, right, anchor):
                left_sql = self._operand(left, anchor, op)
                return f"{left_sql} {op.value} {self._operand(right, anchor, op)}"

    def _group(self, joiner: str, operands: tuple[Node, ...]) -> str:
        # SQLite's LALR parser has a fixed stack (100 entries by default) and each operand
        # left of an open group costs entries; putting the deepest operand first keeps
        # MAX_DEPTH levels of nesting within that stack. AND and OR are commutative.
        ordered = sorted(operands, key=_height, reverse=True)
        return "(" + joiner.join(self.node(operand) for operand in ordered) + ")"

    def _operand(self, operand: Operand, anchor: Reference, op: Op) -> str:
        if isinstance(operand, ColumnRef | MetadataRef):
            return self._reference(operand)
        return self._value(operand, anchor, op)

    def _reference(self, ref: Reference) -> str:
        if isinstance(ref, ColumnRef):
            return ref.column.sql
        path = self._bind(f'$."{ref.key}"')  # the key's characters exclude '"' (checked)
        return f"json_extract(metadata, {path})"

    def _value(self, value: Value, against: Reference, op: Op | None) -> str:
        raw = self._resolve(value)
        if op in (Op.LIKE, Op.NOT_LIKE):
            if not isinstance(raw, str):
                raise filter_error("a LIKE pattern must be a string", value.position)
            return self._bind(raw)
        return self._bind(_normalise(raw, against, value.position))

    def _member(self, value: Value, ref: ColumnRef) -> str:
        raw = self._resolve(value)
        if not isinstance(raw, str):
            message = f"{ref.name} holds strings; test it with a string, not {shown(raw)}"
            raise filter_error(message, value.position)
        return self._bind(raw)

    def _resolve(self, value: Value) -> ParamValue:
        if isinstance(value, Literal):
            return value.value
        return _check_param(self._params[value.index], value)

    def _bind(self, value: Scalar) -> str:
        self.bound.append(value)
        return "?"


def _height(node: Node) -> int:
    match node:
        case And(operands) | Or(operands):
            return 1 + max(_height(operand) for operand in operands)
        case Not(operand):
            return 1 + _height(operand)
    return 0


def _check_param(raw: object, param: Param) -> ParamValue:
    number = param.index + 1
    if isinstance(raw, int | float) and not in_range(raw):
        raise filter_error(f"parameter {number} is out of range", param.position)
    if isinstance(raw, str) and not _is_utf8(raw):
        raise filter_error(f"parameter {number} is not valid Unicode text", param.position)
    if raw is None or isinstance(raw, str | int | float | datetime):
        return raw
    message = f"parameter {number} has unsupported type {type(raw).__name__}"
    raise filter_error(message, param.position)


def _normalise(raw: ParamValue, against: Reference, position: int) -> Scalar:
    """The stored form of ``raw`` for comparing with ``against``."""
    if raw is None:
        return None
    if isinstance(against, MetadataRef):
        return _json_value(raw, position)
    return _column_value(raw, against, position)


def _column_value(raw: str | float | datetime, ref: ColumnRef, position: int) -> Scalar:
    kind = ref.column.kind
    if kind is Kind.DATETIME and isinstance(raw, str | datetime):
        return _stored_timestamp(raw, position)
    if kind is Kind.BOOL and isinstance(raw, int) and raw in (0, 1):
        return int(raw)
    if kind is Kind.INT and isinstance(raw, int | float) and not isinstance(raw, bool):
        return raw
    if kind is Kind.TEXT and isinstance(raw, str):
        return raw
    message = f"{ref.name} is a {kind.value} column and takes {_TAKES[kind]}, not {shown(raw)}"
    raise filter_error(message, position)


_TAKES = {
    Kind.TEXT: "a string",
    Kind.DATETIME: "an ISO-8601 string or a datetime",
    Kind.INT: "a number",
    Kind.BOOL: "TRUE, FALSE, 1 or 0",
}


def _json_value(raw: ParamValue, position: int) -> Scalar:
    # SQLite's json_extract yields 1/0 for JSON true/false, and timestamps are stored as text.
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, datetime):
        return _stored_timestamp(raw, position)
    return raw


def _stored_timestamp(raw: str | datetime, position: int) -> str:
    # Parsing first also turns a datetime whose UTC instant is outside years 1-9999 into an
    # InvalidRequestError instead of an OverflowError from formatting it.
    try:
        return format_timestamp(parse_timestamp(raw))
    except InvalidRequestError as exc:
        raise filter_error(exc.message, position) from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
