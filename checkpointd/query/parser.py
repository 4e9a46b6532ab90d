"""The parser of the ``where`` filter grammar: recursive descent from tokens to a syntax tree."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from checkpointd.query.columns import (
    COLUMNS,
    LIST_COLUMNS,
    MAX_DEPTH,
    MAX_IN_ITEMS,
    MAX_TERMS,
    Column,
)
from checkpointd.query.diagnostics import filter_error, shown
from checkpointd.query.syntax import (
    OPS,
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
from checkpointd.query.tokens import Scalar, Token, TokenKind, describe

__all__ = ["Parser"]

_KEYWORDS = frozenset({"AND", "OR", "NOT", "LIKE", "IN", "IS", "NULL", "TRUE", "FALSE"})
_WORD_VALUES: dict[str, Scalar] = {"TRUE": True, "FALSE": False, "NULL": None}
_METADATA_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}", re.ASCII)


class Parser:
    """Recursive descent over the token stream; bounds nesting depth and the number of terms."""

    def __init__(self, tokens: Iterator[Token]) -> None:
        """Reads the first token, so a tokenizer error there is raised here."""
        self._tokens = tokens
        self._current = next(tokens)
        self._depth = 0
        self._terms = 0
        self.param_positions: list[int] = []  # of each '?' parsed so far, in textual order

    def at_end(self) -> bool:
        """Whether no tokens are left: true before ``parse`` for an empty filter."""
        return self._current.kind is TokenKind.END

    def parse(self) -> Node:
        """The syntax tree of the whole filter.

        Raises:
            InvalidRequestError: with the position of the first syntax error, unknown column or
                exceeded limit.
        """
        node = self._or()
        token = self._peek()
        if token.kind is not TokenKind.END:
            raise filter_error(f"unexpected {describe(token)} after a complete expression", token)
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
            raise filter_error(f"more than {MAX_TERMS} terms", start)
        left = self._operand()
        if self._accept("IS"):
            negated = self._accept("NOT")
            self._expect_keyword("NULL")
            return IsNull(_reference(left, "IS NULL"), negated)
        if self._accept("NOT"):
            return self._negated_predicate(left)
        if self._accept("IN"):
            return self._in(left, negated=False)
        if self._accept("LIKE"):
            return _comparison(left, Op.LIKE, self._operand())
        return _comparison(left, self._compare_op(), self._operand())

    def _negated_predicate(self, left: Operand) -> Node:
        if self._accept("IN"):
            return self._in(left, negated=True)
        self._expect_keyword("LIKE", "IN")
        return _comparison(left, Op.NOT_LIKE, self._operand())

    def _in(self, left: Operand, *, negated: bool) -> Node:
        """``reference [NOT] IN (values)``, or ``value [NOT] IN branches`` (list membership)."""
        if isinstance(left, Literal | Param) and self._peek().kind is TokenKind.WORD:
            return Contains(left, self._list_column(), negated)
        what = "NOT IN" if negated else "IN"
        return InList(_reference(left, what), self._in_values(), negated=negated)

    def _list_column(self) -> ColumnRef:
        token = self._next()
        column = LIST_COLUMNS.get(token.text)
        if column is None:
            names = ", ".join(LIST_COLUMNS)
            raise filter_error(f"after a value, IN takes a list column ({names})", token)
        return ColumnRef(token.text, column, token.position)

    def _compare_op(self) -> Op:
        token = self._expect(TokenKind.OP, "a comparison operator, LIKE, IN or IS")
        return OPS[token.text]

    def _in_values(self) -> tuple[Value, ...]:
        self._expect(TokenKind.LPAREN, "'(' to start the IN list")
        values = [self._value()]
        while self._peek().kind is TokenKind.COMMA:
            self._next()
            if len(values) == MAX_IN_ITEMS:
                raise filter_error(f"an IN list has more than {MAX_IN_ITEMS} items", self._peek())
            values.append(self._value())
        self._expect(TokenKind.RPAREN, "',' or ')' in the IN list")
        return tuple(values)

    def _value(self) -> Value:
        token = self._peek()
        operand = self._operand()
        if isinstance(operand, ColumnRef | MetadataRef):
            raise filter_error("an IN list holds values, not columns", token)
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
        raise filter_error(f"expected a column or a value, found {describe(token)}", token)

    def _word_operand(self, token: Token) -> Operand:
        upper = token.text.upper()
        if upper in _WORD_VALUES:
            return Literal(_WORD_VALUES[upper], token.position)
        if self._peek().kind is TokenKind.LPAREN:
            raise filter_error(f"function calls are not allowed: {token.text!r}", token)
        if upper in _KEYWORDS:
            raise filter_error(f"expected a column or a value, found keyword {upper}", token)
        if token.text == "metadata":
            return self._metadata_ref(token)
        return ColumnRef(token.text, _column(token), token.position)

    def _metadata_ref(self, token: Token) -> MetadataRef:
        self._expect(TokenKind.ARROW, "'->>' after metadata (metadata->>'key')")
        key = self._expect(TokenKind.STRING, "a quoted key after '->>'")
        if not isinstance(key.value, str) or not _METADATA_KEY_RE.fullmatch(key.value):
            raise filter_error("a metadata key is 1-128 characters of A-Z a-z 0-9 _ . -", key)
        return MetadataRef(key.value, token.position)

    @contextmanager
    def _nested(self, token: Token) -> Iterator[None]:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise filter_error(f"nested more than {MAX_DEPTH} levels deep", token)
        yield
        self._depth -= 1

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
            raise filter_error(f"expected {wanted}, found {describe(self._peek())}", self._peek())

    def _expect(self, kind: TokenKind, wanted: str) -> Token:
        token = self._peek()
        if token.kind is not kind:
            raise filter_error(f"expected {wanted}, found {describe(token)}", token)
        return self._next()


def _column(token: Token) -> Column:
    column = COLUMNS.get(token.text)
    if column is not None:
        return column
    if token.text in LIST_COLUMNS:
        message = f"{token.text} is a list: test it with ? IN {token.text} or ? NOT IN {token.text}"
        raise filter_error(message, token)
    hint = next((name for name in COLUMNS if name.lower() == token.text.lower()), None)
    suffix = f"; did you mean {hint!r}?" if hint else ""
    raise filter_error(f"unknown column {shown(token.text)}{suffix}", token)


def _reference(operand: Operand, what: str) -> Reference:
    if isinstance(operand, ColumnRef | MetadataRef):
        return operand
    message = f"{what} needs a column or metadata->>'key' on its left (or, after a value, a list"
    raise filter_error(f"{message} column: ? IN branches)", operand.position)


def _negate(node: Node) -> Node:
    # NOT NOT x is x, also under SQL's three-valued logic; folding it keeps SQL nesting shallow.
    return node.operand if isinstance(node, Not) else Not(node)


def _comparison(left: Operand, op: Op, right: Operand) -> Comparison:
    if isinstance(left, ColumnRef | MetadataRef):
        return Comparison(left, op, right, anchor=left)
    if isinstance(right, ColumnRef | MetadataRef):
        return Comparison(left, op, right, anchor=right)
    raise filter_error("a comparison needs a column or metadata->>'key' on one side", left.position)
