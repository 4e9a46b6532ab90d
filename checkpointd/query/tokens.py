"""The tokenizer of the ``where`` filter grammar, and the literal values it decodes."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

from checkpointd.query.diagnostics import filter_error, shown

__all__ = ["Scalar", "Token", "TokenKind", "describe", "in_range", "tokenize"]

Scalar: TypeAlias = str | int | float | bool | None
"""A literal's value, and a value bound to a ``?`` of the SQL."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class TokenKind(enum.Enum):
    """What a token is; the value names it in error messages."""

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
    """One token and its 0-based offset in the filter text."""

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


def tokenize(text: str) -> Iterator[Token]:
    """Tokens on demand, so that errors are reported in reading order; ends with one END.

    Raises:
        InvalidRequestError: at the first character that starts no token, or a number literal
            out of range.
    """
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise filter_error(_bad_character(text, position), position)
        if match.lastgroup != "space":
            yield _token(match.lastgroup or "", match.group(), position)
        position = match.end()
    yield Token(TokenKind.END, "", len(text))


def describe(token: Token) -> str:
    """The token as an error message names it."""
    if token.kind is TokenKind.END:
        return "the end of the filter"
    if token.kind is TokenKind.STRING:
        return f"string {shown(token.text)}"
    return shown(token.text)


def in_range(value: int | float) -> bool:
    """Whether SQLite can store ``value`` as it is: a 64-bit integer or a finite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _INT64_MIN <= value <= _INT64_MAX


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
    if not in_range(value):
        raise filter_error(f"number {shown(text)} is out of range", position)
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
