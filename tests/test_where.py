"""The ``where`` filter grammar and ``orderBy`` compilation, checked against a real SQLite table."""

from __future__ import annotations

import json
import operator
import sqlite3
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointd.clock import format_timestamp
from checkpointd.errors import InvalidRequestError
from checkpointd.query.where import DEFAULT_ORDER_BY, Compiled, compile_order_by, compile_where

_SCHEMA = """
CREATE TABLE checkpoints (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    session_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_by TEXT,
    size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    compressed INTEGER NOT NULL,
    encrypted INTEGER NOT NULL,
    retention_expires_at TEXT,
    restored_from TEXT,
    version INTEGER NOT NULL,
    metadata TEXT NOT NULL
)
"""


def _day(day: int) -> datetime:
    return datetime(2024, 1, day, 12, 0, tzinfo=UTC)


class _Row(NamedTuple):
    id: str
    name: str
    timestamp: datetime
    size: int
    compressed: int
    encrypted: int
    restored_from: str | None
    retention: datetime | None
    metadata: dict[str, object]


_ROWS = [
    _Row("c1", "login-start", _day(1), 100, 1, 0, None, None, {"feature": "auth", "urgent": True}),
    _Row("c2", "login-done", _day(2), 200, 0, 0, None, None, {"feature": "auth"}),
    _Row(
        "c3", "pay-start", _day(3), 300, 1, 1, "c1", None, {"feature": "billing", "urgent": False}
    ),
    _Row("c4", "pay-done", _day(4), 400, 1, 0, None, _day(30), {"attempt": 2, "due": "2024-01-10"}),
    _Row("c5", "it's quoted", _day(5), 500, 0, 1, None, None, {"a.b": "dotted"}),
]
ALL = {row.id for row in _ROWS}


def _insert(db: sqlite3.Connection, ident: str, name: str, **overrides: object) -> None:
    row: dict[str, object] = {
        "id": ident,
        "name": name,
        "session_id": "s-1",
        "timestamp": format_timestamp(_day(1)),
        "created_at": format_timestamp(_day(1)),
        "updated_at": format_timestamp(_day(1)),
        "created_by": "tester",
        "size": 1,
        "stored_size": 1,
        "compressed": 0,
        "encrypted": 0,
        "retention_expires_at": None,
        "restored_from": None,
        "version": 1,
        "metadata": "{}",
    } | overrides
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    db.execute(f"INSERT INTO checkpoints ({columns}) VALUES ({marks})", tuple(row.values()))


def _database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(_SCHEMA)
    for row in _ROWS:
        _insert(
            db,
            row.id,
            row.name,
            timestamp=format_timestamp(row.timestamp),
            created_at=format_timestamp(row.timestamp),
            updated_at=format_timestamp(row.timestamp + timedelta(hours=row.id == "c2")),
            size=row.size,
            stored_size=row.size // 2,
            compressed=row.compressed,
            encrypted=row.encrypted,
            restored_from=row.restored_from,
            retention_expires_at=format_timestamp(row.retention) if row.retention else None,
            metadata=json.dumps(row.metadata),
        )
    return db


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    with closing(_database()) as connection:
        yield connection


def _select(db: sqlite3.Connection, where: str | None, params: Sequence[object] = ()) -> set[str]:
    return _run(db, compile_where(where, params))


def _run(db: sqlite3.Connection, compiled: Compiled) -> set[str]:
    # Callers AND the filter with their own conditions, so run it that way.
    clause = f" AND {compiled.sql}" if compiled.sql else ""
    sql = f"SELECT id FROM checkpoints WHERE session_id = ?{clause}"
    return {row[0] for row in db.execute(sql, ("s-1", *compiled.params))}


def _table_intact(db: sqlite3.Connection, extra: frozenset[str] = frozenset()) -> bool:
    return {row[0] for row in db.execute("SELECT id FROM checkpoints")} == ALL | extra


# --- selecting rows ------------------------------------------------------------------------------


def test_seed_example_compiles_to_parameterised_sql() -> None:
    """The original API's filter compiles to json_extract, the key path and values as parameters."""
    compiled = compile_where("metadata->>'feature' = ? AND compressed = 1", ["auth"])
    assert compiled == Compiled(
        "(json_extract(metadata, ?) = ? AND compressed = ?)", ('$."feature"', "auth", 1)
    )


@pytest.mark.parametrize(
    ("where", "params", "expected"),
    [
        ("metadata->>'feature' = ? AND compressed = 1", ["auth"], {"c1"}),
        ("metadata->>'feature' = 'billing'", [], {"c3"}),
        ("timestamp < ?", [_day(3)], {"c1", "c2"}),
        ("timestamp >= '2024-01-04T12:00:00Z'", [], {"c4", "c5"}),
        ("timestamp >= '2024-01-04'", [], {"c4", "c5"}),
        ("timestamp >= ?", ["2024-01-04T13:00:00+01:00"], {"c4", "c5"}),
        ("name IN ('login-start', ?, 'nope')", ["pay-done"], {"c1", "c4"}),
        ("name NOT IN ('login-start', 'pay-done')", [], {"c2", "c3", "c5"}),
        ("name LIKE 'login-%'", [], {"c1", "c2"}),
        ("name NOT LIKE ?", ["login-%"], {"c3", "c4", "c5"}),
        ("restoredFrom IS NULL", [], {"c1", "c2", "c4", "c5"}),
        ("restoredFrom IS NOT NULL", [], {"c3"}),
        ("retentionExpiresAt IS NOT NULL", [], {"c4"}),
        ("NOT compressed = TRUE", [], {"c2", "c5"}),
        ("name = 'login-done' OR size > 250 AND encrypted = 1", [], {"c2", "c3", "c5"}),
        ("(name = 'login-done' OR size > 250) AND encrypted = 1", [], {"c3", "c5"}),
        ("NOT compressed = 1 AND size > 150", [], {"c2", "c5"}),
        ("NOT (compressed = 1 AND size > 150)", [], {"c1", "c2", "c5"}),
        ("name like 'pay%' and not encrypted = true", [], {"c4"}),
        ("size <> 300 AND size != 400 AND size <= 300", [], {"c1", "c2"}),
        ("250 < size", [], {"c3", "c4", "c5"}),
        ("name = 'it''s quoted'", [], {"c5"}),
        ("updatedAt > createdAt", [], {"c2"}),
        ("metadata->>'urgent' = TRUE", [], {"c1"}),
        ("metadata->>'urgent' = ?", [False], {"c3"}),
        ("metadata->>'attempt' >= 2", [], {"c4"}),
        ("metadata->>'a.b' = 'dotted'", [], {"c5"}),
        ("metadata->>'feature' IS NULL", [], {"c4", "c5"}),
        ("metadata->>'feature' IN ('auth', 'nope')", [], {"c1", "c2"}),
        ("metadata->>'due' LIKE ?", ["2024-01-10%"], {"c4"}),
        ("storedSize = 50 OR version = 2", [], {"c1"}),
        ("sessionId = 's-1' AND createdBy = 'tester' AND id = 'c3'", [], {"c3"}),
    ],
)
def test_filter_selects_expected_rows(
    db: sqlite3.Connection, where: str, params: list[object], expected: set[str]
) -> None:
    """A compiled filter selects exactly the rows the filter describes."""
    assert _select(db, where, params) == expected


@pytest.mark.parametrize(
    ("where", "params"),
    [
        ("encrypted = TRUE", []),
        ("encrypted = 1", []),
        ("encrypted = ?", [True]),
        ("encrypted = ?", [1]),
    ],
)
def test_bool_column_takes_true_or_one(
    db: sqlite3.Connection, where: str, params: list[object]
) -> None:
    """A bool column compares equal to TRUE, True and 1 alike."""
    assert _select(db, where, params) == {"c3", "c5"}


def test_datetime_compared_with_metadata_is_formatted_text(db: sqlite3.Connection) -> None:
    """A datetime compared with a metadata value is bound as format_timestamp text."""
    compiled = compile_where("metadata->>'due' < ?", [datetime(2024, 1, 10)])
    assert compiled.params == ('$."due"', "2024-01-10T00:00:00.000000Z")
    assert _run(db, compiled) == {"c4"}  # "2024-01-10" sorts before "2024-01-10T..."


def test_aware_datetime_param_is_converted_to_utc(db: sqlite3.Connection) -> None:
    """A datetime in another zone is compared by its UTC instant, not its wall-clock text."""
    plus_two = timezone(timedelta(hours=2))
    assert _select(db, "timestamp < ?", [datetime(2024, 1, 3, 13, 0, tzinfo=plus_two)]) == {
        "c1",
        "c2",
    }


def test_naive_datetime_param_is_taken_as_utc(db: sqlite3.Connection) -> None:
    """A naive datetime parameter is read as UTC."""
    assert _select(db, "timestamp <= ?", [datetime(2024, 1, 2, 12, 0)]) == {"c1", "c2"}


def test_null_value_never_matches_a_comparison(db: sqlite3.Connection) -> None:
    """Comparing with NULL (literal or None parameter) matches nothing, as in SQL."""
    assert _select(db, "restoredFrom = ? OR restoredFrom = NULL", [None]) == set()


@pytest.mark.parametrize("where", [None, "", "  \n\t "])
def test_empty_filter_compiles_to_nothing(where: str | None) -> None:
    """No filter text gives empty SQL and no parameters."""
    assert compile_where(where) == Compiled("", ())


# --- rejected filters ----------------------------------------------------------------------------


_BEFORE_YEAR_ONE = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # no UTC form


@pytest.mark.parametrize(
    ("where", "params", "message", "position"),
    [
        ("1=1; DROP TABLE checkpoints", [], "';' is not allowed", 3),
        ("name = 'a' UNION SELECT * FROM sqlite_master", [], "unexpected 'UNION'", 11),
        ("name = 'x' -- c", [], "comments are not allowed", 11),
        ("name = 'x' /* */", [], "comments are not allowed", 11),
        ("sqlite_version() = ?", ["3"], "function calls are not allowed", 0),
        ("nosuch = 1", [], "unknown column 'nosuch'", 0),
        ("sessionid = 'x'", [], "did you mean 'sessionId'", 0),
        ("metadata->>'a\"b' = 1", [], "metadata key is 1-128 characters", 11),
        ("metadata->>'' = 1", [], "metadata key is 1-128 characters", 11),
        ("metadata->>'" + "k" * 129 + "' = 1", [], "metadata key is 1-128 characters", 11),
        ("metadata = 1", [], "expected '->>' after metadata", 9),
        ("metadata->>feature = 1", [], "expected a quoted key", 11),
        ("(name = 'a'", [], "expected '\\)' to close the '\\(' at position 0", 11),
        ("name = 'a')", [], "unexpected '\\)' after a complete expression", 10),
        ("name = 'a' name = 'b'", [], "unexpected 'name' after a complete expression", 11),
        ("name = 'abc", [], "unterminated string", 7),
        ('name = "x"', [], "strings use single quotes", 7),
        ("size - 1 = 0", [], "unexpected character '-'", 5),
        ("name == 'a'", [], "expected a column or a value, found '='", 6),
        ("name = ", [], "found the end of the filter", 7),
        ("name = AND", [], "found keyword AND", 7),
        ("name NOT = 'a'", [], "expected LIKE or IN", 9),
        ("name", [], "expected a comparison operator", 4),
        ("1 = 1", [], "needs a column or metadata->>'key' on one side", 0),
        ("? IS NULL", ["a"], "IS NULL needs a column", 0),
        ("? IN (1)", [1], "IN needs a column", 0),
        ("size IN ()", [], "expected a column or a value, found '\\)'", 9),
        ("size IN (version)", [], "an IN list holds values", 9),
        ("size IN (1 2)", [], "expected ',' or '\\)' in the IN list", 11),
        ("name = ? AND size = ?", ["a"], "parameter 2 has no value \\(1 given\\)", 20),
        ("name = ?", ["a", "b"], "2 parameters given but the filter has 1", 8),
        ("", ["a"], "1 parameter given but the filter has 0", 0),
        ("timestamp < 'yesterday'", [], "'yesterday' is not an ISO-8601 timestamp", 12),
        ("timestamp < ?", [1700000000], "takes an ISO-8601 string or a datetime", 12),
        ("timestamp = '0001-01-01T00:00:00+01:00'", [], "is not an ISO-8601 timestamp", 12),
        ("timestamp = ?", [_BEFORE_YEAR_ONE], "outside the years 1-9999 in UTC", 12),
        ("metadata->>'due' < ?", [_BEFORE_YEAR_ONE], "outside the years 1-9999 in UTC", 19),
        ("compressed = 2", [], "takes TRUE, FALSE, 1 or 0, not 2", 13),
        ("size = 'big'", [], "size is a int column and takes a number", 7),
        ("name = 5", [], "name is a text column and takes a string", 7),
        ("name LIKE 5", [], "LIKE pattern must be a string", 10),
        ("size > 99999999999999999999", [], "out of range", 7),
        ("size > 1e999", [], "out of range", 7),
        ("size = ?", [2**63], "parameter 1 is out of range", 7),
        ("name = ?", [[1]], "parameter 1 has unsupported type list", 7),
        ("name = ?", [b"x"], "parameter 1 has unsupported type bytes", 7),
        ("name = ?", ["\ud800"], "parameter 1 is not valid Unicode", 7),
        ("name = '\ud800'", [], "not valid Unicode", 8),
    ],
)
def test_rejected_filter_names_the_problem_and_its_position(
    db: sqlite3.Connection, where: str, params: list[object], message: str, position: int
) -> None:
    """A filter outside the grammar raises InvalidRequestError at the offending position."""
    with pytest.raises(InvalidRequestError, match=message) as caught:
        compile_where(where, params)
    assert caught.value.position == position
    assert caught.value.code == "invalid"
    assert _table_intact(db)


@pytest.mark.parametrize("params", ["abc", 5, {"a": 1}])
def test_params_must_be_a_list(params: object) -> None:
    """Parameters given as a string, number or mapping are rejected, not iterated."""
    with pytest.raises(InvalidRequestError, match="params: must be a list"):
        compile_where("name = ?", params)  # type: ignore[arg-type]


# --- limits --------------------------------------------------------------------------------------


def test_text_up_to_the_length_limit_compiles() -> None:
    """A filter of exactly 4096 characters is accepted."""
    assert compile_where("name = 'x'".ljust(4096)).sql == "name = ?"


def test_text_over_the_length_limit_is_rejected() -> None:
    """A filter of 4097 characters is rejected at position 4096."""
    with pytest.raises(InvalidRequestError, match="longer than 4096 characters") as caught:
        compile_where("name = 'x'".ljust(4097))
    assert caught.value.position == 4096


@pytest.mark.parametrize("opener", ["(", "NOT "])
def test_sixty_four_nesting_levels_compile(db: sqlite3.Connection, opener: str) -> None:
    """Sixty-four levels of parentheses or NOT are accepted and run in SQLite."""
    closer = ")" if opener == "(" else ""
    where = opener * 64 + "size = 100" + closer * 64
    assert _select(db, where) == {"c1"}  # an even number of NOTs cancels out


@pytest.mark.parametrize("opener", ["(", "NOT "])
def test_sixty_five_nesting_levels_are_rejected(opener: str) -> None:
    """A sixty-fifth level of nesting is rejected where it opens."""
    where = opener * 65 + "size = 100" + (")" * 65 if opener == "(" else "")
    with pytest.raises(InvalidRequestError, match="nested more than 64 levels") as caught:
        compile_where(where)
    assert caught.value.position == 64 * len(opener)


def test_two_hundred_fifty_six_terms_compile() -> None:
    """A filter with 256 terms is accepted."""
    assert len(compile_where(" OR ".join(["size = 1"] * 256)).params) == 256


def test_two_hundred_fifty_seven_terms_are_rejected() -> None:
    """The 257th term is rejected at its position."""
    with pytest.raises(InvalidRequestError, match="more than 256 terms") as caught:
        compile_where(" OR ".join(["size = 1"] * 257))
    assert caught.value.position == 256 * len("size = 1 OR ")


def test_in_list_of_a_thousand_items_compiles(db: sqlite3.Connection) -> None:
    """An IN list of 1000 items is accepted and runs in SQLite."""
    assert _select(db, "size IN (100" + ", 1" * 999 + ")") == {"c1"}


def test_in_list_over_a_thousand_items_is_rejected() -> None:
    """The 1001st item of an IN list is rejected at its position."""
    with pytest.raises(InvalidRequestError, match="more than 1000 items") as caught:
        compile_where("size IN (" + ",".join(["1"] * 1001) + ")")
    assert caught.value.position == len("size IN (") + 2 * 1000


# --- timestamps ----------------------------------------------------------------------------------

_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES
)


_COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}


@given(_DATETIMES, st.sampled_from(sorted(_COMPARISONS)))
def test_timestamp_comparison_matches_instant_order(stamp: datetime, op: str) -> None:
    """Comparing the timestamp column with any datetime orders rows by instant."""
    compare = _COMPARISONS[op]
    expected = {row.id for row in _ROWS if compare(row.timestamp, stamp)}
    with closing(_database()) as db:
        assert _select(db, f"timestamp {op} ?", [stamp]) == expected


# --- injection properties ------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
_TRICKY = st.sampled_from(
    ["'", "''", "' OR '1'='1", "x'; DROP TABLE checkpoints; --", "?", "name", "\\", '"', "%", "_"]
)


@given(st.one_of(_TEXT, _TRICKY))
def test_parameter_value_never_reaches_sql(value: str) -> None:
    """Any text bound to `name = ?` selects exactly the rows of that name and stays a parameter."""
    compiled = compile_where("name = ?", [value])
    assert compiled == Compiled("name = ?", (value,))
    with closing(_database()) as db:
        _insert(db, "target", value)
        _insert(db, "near", value + "x")
        expected = {"target"} | {row.id for row in _ROWS if row.name == value}
        assert _select(db, "name = ?", [value]) == expected
        assert _table_intact(db, extra=frozenset({"target", "near"}))


@given(st.one_of(_TEXT, _TRICKY))
def test_string_literal_never_reaches_sql(value: str) -> None:
    """Any quoted literal compiles to a parameter holding exactly the unescaped text."""
    where = "name = '" + value.replace("'", "''") + "'"
    assert compile_where(where) == Compiled("name = ?", (value,))


_FRAGMENTS = st.sampled_from(
    [
        *("name", "size", "timestamp", "compressed", "restoredFrom", "metadata->>'feature'"),
        *("metadata", "->>", "=", "!=", "<>", "<", "<=", ">", ">=", "(", ")", ",", "?"),
        *("LIKE", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "AND", "OR", "not", "in"),
        *("'a'", "'login-%'", "'2024-01-02'", "1", "2.5", "-3", "'", ";", "--", "/*"),
        *("sqlite_version", "SELECT", "UNION", "nosuch", '"x"', "1e999"),
    ]
)
_FILTERS = st.one_of(
    st.text(string.printable, max_size=80),
    st.lists(_FRAGMENTS, max_size=25).map(" ".join),
)
_PARAM_VALUES = st.one_of(
    _TEXT, st.integers(), st.floats(), st.booleans(), st.none(), _DATETIMES, st.binary()
)


@settings(max_examples=300)
@given(_FILTERS, st.data())
def test_any_text_compiles_to_runnable_sql_or_is_rejected(where: str, data: st.DataObject) -> None:
    """Random text either compiles to SQL that SQLite runs, or raises InvalidRequestError."""
    params = data.draw(
        st.lists(_PARAM_VALUES, min_size=where.count("?"), max_size=where.count("?"))
    )
    try:
        compiled = compile_where(where, params)
    except InvalidRequestError as error:
        rejected_at = error.position
    else:
        with closing(_database()) as db:
            _run(db, compiled)  # raises if SQLite cannot run the SQL
            assert _table_intact(db)
        return
    assert rejected_at is not None
    assert 0 <= rejected_at <= len(where)


# --- precedence against an oracle ----------------------------------------------------------------


Truth = bool | None  # SQL's three-valued logic: None is UNKNOWN


@dataclass(frozen=True)
class _Expr:
    """A generated filter, its truth for a row, and how tightly it binds (3 atom, 2 AND, 1 OR)."""

    text: str
    truth: Callable[[_Row], Truth]
    binding: int

    def operand(self, binding: int) -> str:
        return self.text if self.binding >= binding else f"({self.text})"


def _size_is(op: str, value: int) -> _Expr:
    return _Expr(f"size {op} {value}", lambda row: _COMPARISONS[op](row.size, value), 3)


def _name_in(names: list[str]) -> _Expr:
    quoted = ", ".join("'" + name.replace("'", "''") + "'" for name in names)
    return _Expr(f"name IN ({quoted})", lambda row: row.name in names, 3)


def _compressed_is(value: bool) -> _Expr:
    return _Expr(f"compressed = {value}", lambda row: row.compressed == value, 3)


def _feature_is(value: str) -> _Expr:
    def truth(row: _Row) -> Truth:
        feature = row.metadata.get("feature")
        return None if feature is None else feature == value

    return _Expr(f"metadata->>'feature' = '{value}'", truth, 3)


def _and(left: _Expr, right: _Expr) -> _Expr:
    def truth(row: _Row) -> Truth:
        both = (left.truth(row), right.truth(row))
        return False if False in both else None if None in both else True

    return _Expr(f"{left.operand(2)} AND {right.operand(2)}", truth, 2)


def _or(left: _Expr, right: _Expr) -> _Expr:
    def truth(row: _Row) -> Truth:
        either = (left.truth(row), right.truth(row))
        return True if True in either else None if None in either else False

    return _Expr(f"{left.text} OR {right.text}", truth, 1)


def _not(inner: _Expr) -> _Expr:
    def truth(row: _Row) -> Truth:
        value = inner.truth(row)
        return None if value is None else not value

    return _Expr(f"NOT {inner.operand(3)}", truth, 3)


def _grouped(inner: _Expr) -> _Expr:
    return _Expr(f"({inner.text})", inner.truth, 3)


_LEAVES = st.one_of(
    st.builds(_size_is, st.sampled_from(sorted(_COMPARISONS)), st.sampled_from([0, 100, 250, 500])),
    st.builds(_name_in, st.lists(st.sampled_from([row.name for row in _ROWS]), min_size=1)),
    st.builds(_compressed_is, st.booleans()),
    st.builds(_feature_is, st.sampled_from(["auth", "billing"])),
)
_EXPRS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.builds(_and, inner, inner),
        st.builds(_or, inner, inner),
        st.builds(_not, inner),
        st.builds(_grouped, inner),
    ),
    max_leaves=24,
)


@settings(max_examples=200)
@given(_EXPRS)
def test_filter_selects_what_the_oracle_selects(expr: _Expr) -> None:
    """Random AND/OR/NOT/parenthesised filters select the rows a three-valued-logic oracle does."""
    with closing(_database()) as db:
        assert _select(db, expr.text) == {row.id for row in _ROWS if expr.truth(row) is True}


def _chain(depth: int, leaf: str = "size = 100") -> str:
    """``(size = 2 OR (size = 2 AND (... leaf)))``: one nesting level per group."""
    where = leaf
    for level in range(depth):
        where = f"(size = 2 {'AND' if level % 2 else 'OR'} {where})"
    return where


def _twins(depth: int) -> str:
    """Every level holds two deep operands, the worst case for SQLite's parser stack."""
    if depth == 0:
        return "size = 100"
    return f"({_twins(depth - 1)} AND {_chain(depth - 1)})"


@pytest.mark.parametrize(
    "where",
    [
        _chain(64),
        "(" * 63 + "(size = 100 OR size = 2)" + " AND size = 2)" * 63,
        "NOT (size = 2 OR " * 32 + "size = 100" + ")" * 32,
        "NOT (" * 32 + "size = 100" + ")" * 32,
        _chain(44, leaf=_twins(20)),
    ],
    ids=["right-nested", "left-nested", "not-groups", "not-chain", "deep-siblings"],
)
def test_maximally_nested_filters_run_in_sqlite(db: sqlite3.Connection, where: str) -> None:
    """Filters at the 64-level nesting limit fit SQLite's parser stack."""
    _select(db, where)  # SQLite raises "parser stack overflow" if they do not


# --- orderBy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, DEFAULT_ORDER_BY),
        ([], DEFAULT_ORDER_BY),
        ([("timestamp", "desc")], "timestamp DESC, seq DESC"),
        ([{"field": "timestamp", "direction": "DESC"}], "timestamp DESC, seq DESC"),
        ([{"field": "size"}], "size ASC, seq ASC"),
        (
            [("sessionId", "Asc"), ("storedSize", "desc")],
            "session_id ASC, stored_size DESC, seq DESC",
        ),
        ([("id", "desc"), ("name", "asc")], "id DESC, name ASC"),
    ],
)
def test_order_by_compiles_to_mapped_columns_with_seq_tie_breaker(
    order_by: list[object] | None, expected: str
) -> None:
    """Sort keys map to SQL columns, and creation order breaks ties in the last key's direction."""
    assert compile_order_by(order_by) == expected  # type: ignore[arg-type]


def test_order_by_runs_in_sqlite(db: sqlite3.Connection) -> None:
    """The compiled ordering sorts real rows as asked."""
    order = compile_order_by([{"field": "compressed", "direction": "desc"}, {"field": "size"}])
    rows = db.execute(f"SELECT id FROM checkpoints ORDER BY {order}").fetchall()
    assert [row[0] for row in rows] == ["c1", "c3", "c4", "c2", "c5"]


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        ([("nosuch", "asc")], "orderBy\\[0\\]: unknown field 'nosuch'"),
        ([("metadata", "asc")], "unknown field 'metadata'"),
        ([("name", "up")], "direction must be asc or desc, not 'up'"),
        ([{"field": "name", "direction": None}], "direction must be asc or desc"),
        ([{"field": "name", "dir": "asc"}], "only 'field' and 'direction' are allowed"),
        ([("name",)], "must be \\{field, direction\\} or \\(field, direction\\)"),
        ([("name", "asc"), ("name", "desc")], "sorted on twice"),
        ([("name", "asc")] * 9, "more than 8 sort keys"),
        ("timestamp", "orderBy: must be a list"),
        ({"field": "name"}, "orderBy: must be a list"),
    ],
)
def test_bad_order_by_is_rejected(order_by: object, message: str) -> None:
    """An unknown field, a bad direction or a malformed key raises InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match=message):
        compile_order_by(order_by)  # type: ignore[arg-type]
