"""The ``where`` filter grammar: user filter text in, parameterised SQLite SQL out.

Users filter list queries with a small SQL-like language and positional parameters::

    metadata->>'feature' = ? AND compressed = 1
    timestamp < ? OR (name LIKE 'deploy-%' AND restoredFrom IS NOT NULL)
    'main' IN branches AND ? NOT IN branches

The grammar (keywords are case-insensitive, column names are the wire names, case-sensitive)::

    filter     = or_expr
    or_expr    = and_expr { "OR" and_expr }
    and_expr   = unary { "AND" unary }
    unary      = "NOT" unary | "(" or_expr ")" | predicate
    predicate  = operand compare_op operand
               | operand [ "NOT" ] "LIKE" operand
               | reference [ "NOT" ] "IN" "(" value { "," value } ")"
               | value [ "NOT" ] "IN" list_column
               | reference "IS" [ "NOT" ] "NULL"
    operand    = reference | value
    reference  = column | "metadata" "->>" string
    list_column = "branches"
    value      = string | integer | float | "TRUE" | "FALSE" | "NULL" | "?"
    compare_op = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="

A comparison needs a reference on at least one side. ``value IN branches`` holds when the
checkpoint's ``branches`` list contains the value (a string); ``branches`` can be named nowhere
else. The text goes through a tokenizer (``tokens``), a recursive-descent parser that builds a
small frozen AST (``parser``, ``syntax``) and a compiler (``compiler``). The guarantee: no
character of the filter text or of a parameter reaches the SQL text. The SQL is assembled only
from the package's constants (column names from ``columns.COLUMNS`` and ``LIST_COLUMNS``,
operators, keywords) and ``?`` placeholders; every literal, parameter and metadata path is bound
as a parameter.

This module is the entry point: it also re-exports ``compile_order_by`` and the column table.
"""

from __future__ import annotations

from collections.abc import Sequence

from checkpointd.errors import InvalidRequestError
from checkpointd.query.columns import COLUMNS, DEFAULT_ORDER_BY, MAX_LENGTH, Column, Kind
from checkpointd.query.compiler import Compiled, Compiler
from checkpointd.query.diagnostics import filter_error
from checkpointd.query.order import compile_order_by
from checkpointd.query.parser import Parser
from checkpointd.query.tokens import tokenize

__all__ = [
    "COLUMNS",
    "DEFAULT_ORDER_BY",
    "Column",
    "Compiled",
    "Kind",
    "compile_order_by",
    "compile_where",
]


def compile_where(where: str | None, params: Sequence[object] = ()) -> Compiled:
    """Compile a user filter and its positional parameters to SQL for a ``WHERE`` clause.

    Args:
        where: the filter text (see the module docstring for the grammar); None or blank
            means no filter.
        params: one value per ``?`` in textual order: str, int, float, bool, None or datetime.

    Returns:
        The SQL and its parameters. Values compared with a datetime column are normalised to
        ``clock.format_timestamp`` text, values compared with a bool column to 1/0.

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
    parser = Parser(tokenize(_checked_text(where)))
    if parser.at_end():
        _check_param_count([], params, len(where))
        return Compiled("", ())
    node = parser.parse()
    _check_param_count(parser.param_positions, params, len(where))
    compiler = Compiler(params)
    sql = compiler.node(node)
    return Compiled(sql, tuple(compiler.bound))


def _checked_text(where: str) -> str:
    if len(where) > MAX_LENGTH:
        raise filter_error(f"the filter is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    try:
        where.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise filter_error("the filter is not valid Unicode text", exc.start) from None
    return where


def _check_param_count(positions: list[int], params: Sequence[object], end: int) -> None:
    if len(params) < len(positions):
        missing = positions[len(params)]
        message = f"parameter {len(params) + 1} has no value ({len(params)} given)"
        raise filter_error(message, missing)
    if len(params) > len(positions):
        given = f"{len(params)} parameter{'' if len(params) == 1 else 's'}"
        message = f"{given} given but the filter has {len(positions)} '?'"
        raise filter_error(message, end)
