"""The syntax tree of a ``where`` filter: small frozen nodes the parser builds.

Every operand keeps the position of its text, so the compiler can point at a value it rejects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from checkpointd.query.columns import Column
from checkpointd.query.tokens import Scalar

__all__ = [
    "OPS",
    "And",
    "ColumnRef",
    "Comparison",
    "Contains",
    "InList",
    "IsNull",
    "Literal",
    "MetadataRef",
    "Node",
    "Not",
    "Op",
    "Operand",
    "Or",
    "Param",
    "Reference",
    "Value",
]


class Op(enum.Enum):
    """Comparison operators; the value is the SQL text emitted (``<>`` is emitted as ``!=``)."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    LIKE = "LIKE"
    NOT_LIKE = "NOT LIKE"


OPS = {"=": Op.EQ, "!=": Op.NE, "<>": Op.NE, "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE}
"""Operator token text -> operator."""


@dataclass(frozen=True, slots=True)
class ColumnRef:
    name: str  # the wire name
    column: Column
    position: int


@dataclass(frozen=True, slots=True)
class MetadataRef:
    key: str
    position: int


@dataclass(frozen=True, slots=True)
class Literal:
    value: Scalar
    position: int


@dataclass(frozen=True, slots=True)
class Param:
    index: int
    position: int


Reference: TypeAlias = ColumnRef | MetadataRef
Value: TypeAlias = Literal | Param
Operand: TypeAlias = Reference | Value


@dataclass(frozen=True, slots=True)
class Comparison:
    left: Operand
    op: Op
    right: Operand
    anchor: Reference  # the reference side; values are normalised to its kind


@dataclass(frozen=True, slots=True)
class InList:
    ref: Reference
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Contains:
    """``value [NOT] IN branches``: whether a list column holds the value."""

    value: Value
    ref: ColumnRef  # a column of LIST_COLUMNS
    negated: bool


@dataclass(frozen=True, slots=True)
class IsNull:
    ref: Reference
    negated: bool


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


Node: TypeAlias = Comparison | InList | Contains | IsNull | Not | And | Or
