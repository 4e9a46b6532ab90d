"""The ``where`` filter grammar: user filter text in, parameterised SQLite SQL out.

Users filter list queries with a small SQL-like language and positional parameters::

    metadata->>'feature' = ? AND compressed = 1
    timestamp < ? OR (name LIKE 'deploy-%' AND restoredFrom IS NOT NULL)

The grammar (keywords are case-insensitive, column names are the wire names, case-sensitive)::

    filter     = or_expr
    or_expr    = and_expr { "OR" and_expr }
    and_expr   = unary { "AND" unary }
    unary      = "NOT" unary | "(" or_expr ")" | predicate
    predicate  = operand compare_op operand
               | operand [ "NOT" ] "LIKE" operand
               | reference [ "NOT" ] "IN" "(" value { "," value } ")"
               | reference "IS" [ "NOT" ] "NULL"
    operand    = reference | value
    reference  = column | "metadata" "->>" string
    value      = string | integer | float | "TRUE" | "FALSE" | "NULL" | "?"
    compare_op = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="

A comparison needs a reference on at least one side. The text goes through a tokenizer, a
recursive-descent parser that builds a small frozen AST, and a compiler. The guarantee: no
character of the filter text or of a parameter reaches the SQL text. The SQL is assembled only
from this module's constants (column names, operators, keywords) and ``?`` placeholders; every
literal, parameter and metadata path is bound as a parameter.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TypeAlias

from checkpointd.errors import InvalidRequestError

__all__ = [
    "COLUMNS",
    "DEFAULT_ORDER_BY",
    "Column",
    "Compiled",
    "Kind",
    "compile_order_by",
    "compile_where",
    "format_timestamp",
    "parse_timestamp",
]

MAX_LENGTH = 4096
MAX_DEPTH = 64
MAX_TERMS = 256
MAX_IN_ITEMS = 1000
MAX_ORDER_KEYS = 8
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

Scalar: TypeAlias = str | int | float | bool | None
ParamValue: TypeAlias = Scalar | datetime


class Kind(enum.Enum):
    """How a column's values are stored, which decides how a compared value is normalised."""

    TEXT = "text"
    DATETIME = "datetime"
    INT = "int"
    BOOL = "bool"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Column:
    """A filterable column: its SQL name in table ``checkpoints`` and its kind."""

    sql: str
    kind: Kind


COLUMNS: Mapping[str, Column] = MappingProxyType(
    {
        "id": Column("id", Kind.TEXT),
        "name": Column("name", Kind.TEXT),
        "sessionId": Column("session_id", Kind.TEXT),
        "timestamp": Column("timestamp", Kind.DATETIME),
        "createdAt": Column("created_at", Kind.DATETIME),
        "updatedAt": Column("updated_at", Kind.DATETIME),
        "createdBy": Column("created_by", Kind.TEXT),
        "size": Column("size", Kind.INT),
        "storedSize": Column("stored_size", Kind.INT),
        "compressed": Column("compressed", Kind.BOOL),
        "encrypted": Column("encrypted", Kind.BOOL),
        "retentionExpiresAt": Column("retention_expires_at", Kind.DATETIME),
        "restoredFrom": Column("restored_from", Kind.TEXT),
        "version": Column("version", Kind.INT),
    }
)
"""Wire name -> column. The only identifiers a filter or an ``orderBy`` may name."""

DEFAULT_ORDER_BY = "timestamp DESC, id DESC"


# --- timestamps ----------------------------------------------------------------------------------


def format_timestamp(dt: datetime) -> str:
    """The one stored form of a datetime: ISO-8601 UTC text, e.g. ``2024-05-01T12:00:00.000000Z``.

    Naive datetimes are taken as UTC. Same output as ``strftime('%Y-%m-%dT%H:%M:%S.%fZ')`` on
    the UTC time, except that years before 1000 keep four digits (glibc's ``%Y`` drops the
    padding), so the text always sorts in time order.
    """
    d = _as_utc(dt)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
        f"T{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}Z"
    )


def parse_timestamp(value: str | datetime) -> datetime:
    """An aware UTC datetime from a datetime or an ISO-8601 string (a trailing ``Z`` is accepted).

    Naive input is taken as UTC. Raises InvalidRequestError for anything that is not a datetime
    or a parseable ISO-8601 string.
    """
    if isinstance(value, datetime):
        return _as_utc(value)
    if not isinstance(value, str):
        raise InvalidRequestError(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        return _as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise InvalidRequestError(f"{_shown(value)} is not an ISO-8601 timestamp") from None


def _as_utc(dt: datetime) -> datetime:
    if dt.utcoffset() is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# --- tokens --------------------------------------------------------------------------------------


class TokenKind(enum.Enum):
    WORD = "word"
    STRING = "string"
    NUMBER = "number"
    PARAM = "'?'"
    OP = "operator"
    ARROW = "'->>'"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    END = "end of the filter"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    position: int
    value: Scalar = None  # the decoded literal of a STRING or NUMBER


_TOKEN_RE = re.compile(
    r"""
      (?P<space>[\ \t\r\n]+)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
    | (?P<string>'(?:[^']|'')*')
    | (?P<arrow>->>)
    | (?P<op><=|>=|<>|!=|=|<|>)
    | (?P<punct>[(),?])
    """,
    re.VERBOSE | re.ASCII,
)
_PUNCT = {"(": TokenKind.LPAREN, ")": TokenKind.RPAREN, ",": TokenKind.COMMA, "?": TokenKind.PARAM}


def _tokenize(text: str) -> Iterator[Token]:
    """Tokens on demand, so that errors are reported in reading order; ends with one END."""
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise _error(_bad_character(text, position), position)
        if match.lastgroup != "space":
            yield _token(match.lastgroup or "", match.group(), position)
        position = match.end()
    yield Token(TokenKind.END, "", len(text))


def _token(group: str, text: str, position: int) -> Token:
    if group == "string":
        return Token(TokenKind.STRING, text, position, text[1:-1].replace("''", "'"))
    if group == "number":
        return Token(TokenKind.NUMBER, text, position, _number(text, position))
    if group == "punct":
        return Token(_PUNCT[text], text, position)
    return Token(TokenKind[group.upper()], text, position)


def _number(text: str, position: int) -> int | float:
    value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
    if not _in_range(value):
        raise _error(f"number {_shown(text)} is out of range", position)
    return value


def _bad_character(text: str, position: int) -> str:
    char = text[position]
    if text.startswith(("--", "/*"), position):
        return "SQL comments are not allowed"
    if char == ";":
        return "';' is not allowed: a filter is a single expression"
    if char == "'":
        return "unterminated string"
    if char == '"':
        return "unexpected '\"': strings use single quotes"
    return f"unexpected character {char!r}"


# --- syntax tree ---------------------------------------------------------------------------------


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


_OPS = {"=": Op.EQ, "!=": Op.NE, "<>": Op.NE, "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE}


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


Node: TypeAlias = Comparison | InList | IsNull | Not | And | Or


# --- parser --------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"AND", "OR", "NOT", "LIKE", "IN", "IS", "NULL", "TRUE", "FALSE"})
_WORD_VALUES: dict[str, Scalar] = {"TRUE": True, "FALSE": False, "NULL": None}
_METADATA_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}", re.ASCII)


class _Parser:
    """Recursive descent over the token stream; bounds nesting depth and the number of terms."""

    def __init__(self, tokens: Iterator[Token]) -> None:
        self._tokens = tokens
        self._current = next(tokens)
        self._depth = 0
        self._terms = 0
        self.param_positions: list[int] = []

    def parse(self) -> Node:
        node = self._or()
        token = self._peek()
        if token.kind is not TokenKind.END:
            raise _error(f"unexpected {_describe(token)} after a complete expression", token)
        return node

    def _or(self) -> Node:
        operands = [self._and()]
        while self._accept("OR"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self) -> Node:
        operands = [self._unary()]
        while self._accept("AND"):
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _unary(self) -> Node:
        token = self._peek()
        if self._accept("NOT"):
            with self._nested(token):
                return _negate(self._unary())
        if token.kind is TokenKind.LPAREN:
            self._next()
            with self._nested(token):
                node = self._or()
            self._expect(TokenKind.RPAREN, f"')' to close the '(' at position {token.position}")
            return node
        return self._predicate()

    def _predicate(self) -> Node:
        start = self._peek()
        self._terms += 1
        if self._terms > MAX_TERMS:
            raise _error(f"more than {MAX_TERMS} terms", start)
        left = self._operand()
        if self._accept("IS"):
            negated = self._accept("NOT")
            self._expect_keyword("NULL")
            return IsNull(_reference(left, "IS NULL"), negated)
        if self._accept("NOT"):
            return self._negated_predicate(left)
        if self._accept("IN"):
            return InList(_reference(left, "IN"), self._in_values(), negated=False)
        if self._accept("LIKE"):
            return _comparison(left, Op.LIKE, self._operand())
        return _comparison(left, self._compare_op(), self._operand())

    def _negated_predicate(self, left: Operand) -> Node:
        if self._accept("IN"):
            return InList(_reference(left, "NOT IN"), self._in_values(), negated=True)
        self._expect_keyword("LIKE", "IN")
        return _comparison(left, Op.NOT_LIKE, self._operand())

    def _compare_op(self) -> Op:
        token = self._expect(TokenKind.OP, "a comparison operator, LIKE, IN or IS")
        return _OPS[token.text]

    def _in_values(self) -> tuple[Value, ...]:
        self._expect(TokenKind.LPAREN, "'(' to start the IN list")
        values = [self._value()]
        while self._peek().kind is TokenKind.COMMA:
            self._next()
            if len(values) == MAX_IN_ITEMS:
                raise _error(f"an IN list has more than {MAX_IN_ITEMS} items", self._peek())
            values.append(self._value())
        self._expect(TokenKind.RPAREN, "',' or ')' in the IN list")
        return tuple(values)

    def _value(self) -> Value:
        token = self._peek()
        operand = self._operand()
        if isinstance(operand, ColumnRef | MetadataRef):
            raise _error("an IN list holds values, not columns", token)
        return operand

    def _operand(self) -> Operand:
        token = self._next()
        if token.kind in (TokenKind.STRING, TokenKind.NUMBER):
            return Literal(token.value, token.position)
        if token.kind is TokenKind.PARAM:
            self.param_positions.append(token.position)
            return Param(len(self.param_positions) - 1, token.position)
        if token.kind is TokenKind.WORD:
            return self._word_operand(token)
        raise _error(f"expected a column or a value, found {_describe(token)}", token)

    def _word_operand(self, token: Token) -> Operand:
        upper = token.text.upper()
        if upper in _WORD_VALUES:
            return Literal(_WORD_VALUES[upper], token.position)
        if self._peek().kind is TokenKind.LPAREN:
            raise _error(f"function calls are not allowed: {token.text!r}", token)
        if upper in _KEYWORDS:
            raise _error(f"expected a column or a value, found keyword {upper}", token)
        if token.text == "metadata":
            return self._metadata_ref(token)
        return ColumnRef(token.text, _column(token), token.position)

    def _metadata_ref(self, token: Token) -> MetadataRef:
        self._expect(TokenKind.ARROW, "'->>' after metadata (metadata->>'key')")
        key = self._expect(TokenKind.STRING, "a quoted key after '->>'")
        if not isinstance(key.value, str) or not _METADATA_KEY_RE.fullmatch(key.value):
            raise _error("a metadata key is 1-128 characters of A-Z a-z 0-9 _ . -", key)
        return MetadataRef(key.value, token.position)

    @contextmanager
    def _nested(self, token: Token) -> Iterator[None]:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _error(f"nested more than {MAX_DEPTH} levels deep", token)
        yield
        self._depth -= 1

    def at_end(self) -> bool:
        return self._current.kind is TokenKind.END

    def _peek(self) -> Token:
        return self._current

    def _next(self) -> Token:
        token = self._current
        if token.kind is not TokenKind.END:
            self._current = next(self._tokens)
        return token

    def _accept(self, keyword: str) -> bool:
        token = self._current
        if token.kind is TokenKind.WORD and token.text.upper() == keyword:
            self._next()
            return True
        return False

    def _expect_keyword(self, *keywords: str) -> None:
        if not any(self._accept(keyword) for keyword in keywords):
            wanted = " or ".join(keywords)
            raise _error(f"expected {wanted}, found {_describe(self._peek())}", self._peek())

    def _expect(self, kind: TokenKind, wanted: str) -> Token:
        token = self._peek()
        if token.kind is not kind:
            raise _error(f"expected {wanted}, found {_describe(token)}", token)
        return self._next()


def _column(token: Token) -> Column:
    column = COLUMNS.get(token.text)
    if column is not None:
        return column
    hint = next((name for name in COLUMNS if name.lower() == token.text.lower()), None)
    suffix = f"; did you mean {hint!r}?" if hint else ""
    raise _error(f"unknown column {_shown(token.text)}{suffix}", token)


def _reference(operand: Operand, what: str) -> Reference:
    if isinstance(operand, ColumnRef | MetadataRef):
        return operand
    raise _error(f"{what} needs a column or metadata->>'key' on its left", operand.position)


def _negate(node: Node) -> Node:
    # NOT NOT x is x, also under SQL's three-valued logic; folding it keeps SQL nesting shallow.
    return node.operand if isinstance(node, Not) else Not(node)


def _comparison(left: Operand, op: Op, right: Operand) -> Comparison:
    if isinstance(left, ColumnRef | MetadataRef):
        return Comparison(left, op, right, anchor=left)
    if isinstance(right, ColumnRef | MetadataRef):
        return Comparison(left, op, right, anchor=right)
    raise _error("a comparison needs a column or metadata->>'key' on one side", left.position)


# --- compiler ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled filter: SQL for a ``WHERE`` clause and the values for its ``?`` placeholders.

    ``sql`` is ``""`` for an empty filter; otherwise it can be joined to other conditions with
    ``AND`` without extra parentheses.
    """

    sql: str
    params: tuple[object, ...]


class _Compiler:
    """Walks the AST left to right, so ``bound`` is in the order of the ``?`` in the SQL."""

    def __init__(self, params: Sequence[object]) -> None:
        self._params = params
        self.bound: list[Scalar] = []

    def node(self, node: Node) -> str:
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
                raise _error("a LIKE pattern must be a string", value.position)
            return self._bind(raw)
        return self._bind(_normalise(raw, against, value.position))

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
    if isinstance(raw, int | float) and not _in_range(raw):
        raise _error(f"parameter {number} is out of range", param.position)
    if isinstance(raw, str) and not _is_utf8(raw):
        raise _error(f"parameter {number} is not valid Unicode text", param.position)
    if raw is None or isinstance(raw, str | int | float | datetime):
        return raw
    message = f"parameter {number} has unsupported type {type(raw).__name__}"
    raise _error(message, param.position)


def _normalise(raw: ParamValue, against: Reference, position: int) -> Scalar:
    """The stored form of ``raw`` for comparing with ``against``."""
    if raw is None:
        return None
    if isinstance(against, MetadataRef):
        return _json_value(raw)
    return _column_value(raw, against, position)


def _column_value(raw: str | float | datetime, ref: ColumnRef, position: int) -> Scalar:
    kind = ref.column.kind
    if kind is Kind.DATETIME and isinstance(raw, str | datetime):
        try:
            return format_timestamp(parse_timestamp(raw))
        except InvalidRequestError as exc:
            raise _error(exc.message, position) from None
    if kind is Kind.BOOL and isinstance(raw, int) and raw in (0, 1):
        return int(raw)
    if kind is Kind.INT and isinstance(raw, int | float) and not isinstance(raw, bool):
        return raw
    if kind is Kind.TEXT and isinstance(raw, str):
        return raw
    message = f"{ref.name} is a {kind.value} column and takes {_TAKES[kind]}, not {_shown(raw)}"
    raise _error(message, position)


_TAKES = {
    Kind.TEXT: "a string",
    Kind.DATETIME: "an ISO-8601 string or a datetime",
    Kind.INT: "a number",
    Kind.BOOL: "TRUE, FALSE, 1 or 0",
}


def _json_value(raw: ParamValue) -> Scalar:
    # SQLite's json_extract yields 1/0 for JSON true/false, and timestamps are stored as text.
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, datetime):
        return format_timestamp(raw)
    return raw


def compile_where(where: str | None, params: Sequence[object] = ()) -> Compiled:
    """Compile a user filter and its positional parameters to SQL for a ``WHERE`` clause.

    Args:
        where: the filter text (see the module docstring for the grammar); None or blank
            means no filter.
        params: one value per ``?`` in textual order: str, int, float, bool, None or datetime.

    Returns:
        The SQL and its parameters. Values compared with a datetime column are normalised to
        ``format_timestamp`` text, values compared with a bool column to 1/0.

    Raises:
        InvalidRequestError: with ``position`` (0-based offset in ``where``) for any syntax
            error, unknown column, over-limit input, wrong parameter count or unusable value.
    """
    if isinstance(params, str | bytes) or not isinstance(params, Sequence):
        raise InvalidRequestError("must be a list of values", field="params")
    if where is None:
        where = ""
    if not isinstance(where, str):
        raise InvalidRequestError("must be a string", field="where")
    parser = _Parser(_tokenize(_checked_text(where)))
    if parser.at_end():
        _check_param_count([], params, len(where))
        return Compiled("", ())
    node = parser.parse()
    _check_param_count(parser.param_positions, params, len(where))
    compiler = _Compiler(params)
    sql = compiler.node(node)
    return Compiled(sql, tuple(compiler.bound))


def _checked_text(where: str) -> str:
    if len(where) > MAX_LENGTH:
        raise _error(f"the filter is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    try:
        where.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _error("the filter is not valid Unicode text", exc.start) from None
    return where


def _check_param_count(positions: list[int], params: Sequence[object], end: int) -> None:
    if len(params) < len(positions):
        missing = positions[len(params)]
        message = f"parameter {len(params) + 1} has no value ({len(params)} given)"
        raise _error(message, missing)
    if len(params) > len(positions):
        given = f"{len(params)} parameter{'' if len(params) == 1 else 's'}"
        message = f"{given} given but the filter has {len(positions)} '?'"
        raise _error(message, end)


# --- orderBy -------------------------------------------------------------------------------------

_DIRECTIONS = {"asc": "ASC", "desc": "DESC"}


def compile_order_by(
    order_by: Sequence[tuple[str, str]] | Sequence[Mapping[str, str]] | None,
) -> str:
    """Compile sort keys to the SQL of an ``ORDER BY`` clause (without the keywords).

    Accepts ``[("timestamp", "desc")]`` or the wire form ``[{"field": "timestamp",
    "direction": "DESC"}]`` (direction defaults to ascending). Fields are wire column names.
    ``id`` is appended with the last key's direction as a tie-breaker, so the order is total.
    None or empty gives ``DEFAULT_ORDER_BY``.

    Raises:
        InvalidRequestError: an unknown field, a bad direction, a repeated field or more than
            ``MAX_ORDER_KEYS`` keys.
    """
    if order_by is None:
        return DEFAULT_ORDER_BY
    if isinstance(order_by, str | bytes | Mapping) or not isinstance(order_by, Sequence):
        raise InvalidRequestError("must be a list of sort keys", field="orderBy")
    if not order_by:
        return DEFAULT_ORDER_BY
    if len(order_by) > MAX_ORDER_KEYS:
        raise InvalidRequestError(f"more than {MAX_ORDER_KEYS} sort keys", field="orderBy")
    keys = [_order_key(item, index) for index, item in enumerate(order_by)]
    names = [name for name, _ in keys]
    if len(set(names)) != len(names):
        raise InvalidRequestError("a field is sorted on twice", field="orderBy")
    if "id" not in names:
        keys.append(("id", keys[-1][1]))
    return ", ".join(f"{COLUMNS[name].sql} {direction}" for name, direction in keys)


def _order_key(item: object, index: int) -> tuple[str, str]:
    where = f"orderBy[{index}]"
    if isinstance(item, Mapping):
        if set(item) - {"field", "direction"}:
            raise InvalidRequestError("only 'field' and 'direction' are allowed", field=where)
        name, direction = item.get("field"), item.get("direction", "asc")
    elif isinstance(item, Sequence) and not isinstance(item, str | bytes) and len(item) == 2:
        name, direction = item
    else:
        raise InvalidRequestError("must be {field, direction} or (field, direction)", field=where)
    if not isinstance(name, str) or name not in COLUMNS:
        raise InvalidRequestError(f"unknown field {_shown(name)}", field=where)
    if not isinstance(direction, str) or direction.lower() not in _DIRECTIONS:
        raise InvalidRequestError(
            f"direction must be asc or desc, not {_shown(direction)}", field=where
        )
    return name, _DIRECTIONS[direction.lower()]


# --- helpers -------------------------------------------------------------------------------------


def _error(message: str, at: Token | int) -> InvalidRequestError:
    position = at.position if isinstance(at, Token) else at
    return InvalidRequestError(message, field="where", position=position)


def _describe(token: Token) -> str:
    if token.kind is TokenKind.END:
        return "the end of the filter"
    if token.kind is TokenKind.STRING:
        return f"string {_shown(token.text)}"
    return _shown(token.text)


def _shown(value: object, limit: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text) if isinstance(value, str) else text


def _in_range(value: int | float) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _INT64_MIN <= value <= _INT64_MAX


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
