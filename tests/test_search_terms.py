"""Search text to FTS5 MATCH expressions, run against a real FTS5 table like the store's."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.errors import InvalidRequestError
from checkpointd.search.terms import MAX_QUERY_CHARS, MAX_TERMS, MatchQuery, build_match

# The columns and tokenizer of the store's checkpoints_fts (storage/schema.py); an ordinary
# table here, since the MATCH grammar and tokenizing do not depend on where the content lives.
_FTS = """
CREATE VIRTUAL TABLE checkpoints_fts USING fts5 (
    name, description, tags, feature, author, workflow_id, step_id,
    tokenize = 'unicode61 remove_diacritics 2'
)
"""
_ROWS = [
    (
        "milestone-v1.0",
        "Milestone checkpoint with user authentication feature",
        "stable milestone production-ready",
        "auth",
        "developer-1",
        "wf-auth-flow",
        "step-auth-implementation",
    ),
    ("quick-backup", "backup and restore or rollback", "", "storage", "ops", None, None),
    ("cafe-launch", "Opening of the cafe", "food", "venue", "barista", None, None),
]
_SHAPE = re.compile(r'"(?:[^"]|"")+"(?: "(?:[^"]|"")+")*\*?')
_HOSTILE = [
    '"',
    '""',
    "NEAR(",
    "NEAR(a b)",
    "NEAR(auth milestone, 2)",
    "*",
    "a*b",
    "AND OR",
    "auth AND",
    "OR milestone",
    "NOT",
    "-",
    "a - b",
    "-milestone",
    "+auth",
    "col:val",
    "name:x",
    "{name}:auth",
    "^start",
    "\x00",
    "auth\x00milestone",
    "((((",
    "))))",
    "'; DROP TABLE checkpoints_fts; --",
    '"unterminated',
    'he said ""hi""',
    "\ud800auth",
    "x" * 10_000,
    "a " * 50_000,
    "é" * 100_000,
]


@pytest.fixture(scope="module")
def fts() -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(_FTS)
        conn.executemany("INSERT INTO checkpoints_fts VALUES (?, ?, ?, ?, ?, ?, ?)", _ROWS)
        yield conn


def _search(conn: sqlite3.Connection, match: MatchQuery) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM checkpoints_fts WHERE checkpoints_fts MATCH ? ORDER BY rank",
        (match.expression,),
    )
    return {name for (name,) in rows}


def _found(conn: sqlite3.Connection, text: str) -> set[str]:
    match = build_match(text)
    assert match is not None
    return _search(conn, match)


def _run_or_refuse(conn: sqlite3.Connection, text: str) -> None:
    """Build and run a search; only InvalidRequestError may escape, and it is swallowed."""
    try:
        match = build_match(text)
    except InvalidRequestError:
        return
    if match is not None:
        assert _SHAPE.fullmatch(match.expression), match.expression
        _search(conn, match)


def test_whole_term_finds_its_row(fts: sqlite3.Connection) -> None:
    """A whole word finds the row that holds it, in any column."""
    assert _found(fts, "milestone") == {"milestone-v1.0"}
    assert _found(fts, "barista") == {"cafe-launch"}


def test_last_term_is_a_prefix(fts: sqlite3.Connection) -> None:
    """The last term matches as a prefix while the text does not end with whitespace."""
    assert _found(fts, "mile") == {"milestone-v1.0"}
    assert _found(fts, "auth mile") == {"milestone-v1.0"}


def test_trailing_whitespace_ends_the_prefix(fts: sqlite3.Connection) -> None:
    """After a trailing space the last term must match whole."""
    assert _found(fts, "mile ") == set()
    assert _found(fts, "milestone\t") == {"milestone-v1.0"}


def test_every_term_must_match(fts: sqlite3.Connection) -> None:
    """Terms are ANDed: a row must hold all of them."""
    assert _found(fts, "auth milestone") == {"milestone-v1.0"}
    assert _found(fts, "auth backup") == set()
    assert _found(fts, "backup rollback") == {"quick-backup"}


def test_fts5_keywords_are_plain_terms(fts: sqlite3.Connection) -> None:
    """AND, OR, NOT and NEAR typed by the user are words to find, not operators."""
    assert _found(fts, "AND OR") == {"quick-backup"}
    assert _found(fts, "NOT milestone") == set()
    assert _found(fts, "NEAR(auth milestone)") == set()


def test_column_filter_syntax_is_plain_terms(fts: sqlite3.Connection) -> None:
    """``name:backup`` searches for both words rather than restricting to a column."""
    assert _found(fts, "name:backup") == set()
    assert _found(fts, "feature:auth") == {"milestone-v1.0"}


def test_diacritics_and_case_are_ignored(fts: sqlite3.Connection) -> None:
    """``café`` (composed or decomposed, any case) finds ``cafe``."""
    assert _found(fts, "café") == {"cafe-launch"}
    assert _found(fts, "CAFÉ ") == {"cafe-launch"}
    assert _found(fts, "cafe\u0301") == {"cafe-launch"}


@pytest.mark.parametrize(
    ("text", "expression", "terms"),
    [
        ("auth milest", '"auth" "milest"*', ("auth", "milest")),
        ("auth milest ", '"auth" "milest"', ("auth", "milest")),
        ("mile*", '"mile"*', ("mile",)),
        ('"milestone"', '"milestone"*', ("milestone",)),
        ("NEAR(a b)", '"NEAR" "a" "b"*', ("NEAR", "a", "b")),
        ("name:x", '"name" "x"*', ("name", "x")),
        ("a - b", '"a" "b"*', ("a", "b")),
        ("auth\x00milestone", '"auth" "milestone"*', ("auth", "milestone")),
        ("snake_case", '"snake" "case"*', ("snake", "case")),
        ("auth Auth milestone", '"auth" "milestone"*', ("auth", "milestone")),
        ("mile Mile", '"mile"', ("mile",)),
        ("x \u0301", '"x"*', ("x",)),
    ],
)
def test_expression_shape(text: str, expression: str, terms: tuple[str, ...]) -> None:
    """Terms are split at separators, quoted, deduplicated, and only a new last term is a prefix."""
    assert build_match(text) == MatchQuery(expression=expression, terms=terms)


@pytest.mark.parametrize(
    "text", ["", "   ", "***", "-", '"', '""', "\x00", "((((", ":^+", "\u0301"]
)
def test_text_without_terms_gives_none(text: str) -> None:
    """Text with no terms builds no expression, so the caller lists without matching."""
    assert build_match(text) is None


@pytest.mark.parametrize("text", _HOSTILE, ids=lambda text: repr(text[:20]))
def test_hostile_text_matches_or_is_refused(fts: sqlite3.Connection, text: str) -> None:
    """FTS5 syntax, NUL, surrogates and huge text give a result or InvalidRequestError."""
    _run_or_refuse(fts, text)


@pytest.mark.parametrize("size", [MAX_QUERY_CHARS + 1, 10_000, 100_000])
def test_long_text_is_refused(size: int) -> None:
    """Text over the character limit is refused."""
    with pytest.raises(InvalidRequestError, match=f"query: is {size} characters, over the limit"):
        build_match("a " * (size // 2) + "b" * (size % 2))


class _Unsplittable(str):
    """Search text that fails the test if anything iterates over its characters."""

    __slots__ = ()

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the text was split before its length was checked")


def test_long_text_is_refused_before_splitting() -> None:
    """A 10-million-character text is refused by its length alone, before any character is read.

    (How long splitting such a text would take is measured in ``bench``, not here.)
    """
    text = _Unsplittable("milestone " * 1_000_000)
    with pytest.raises(InvalidRequestError, match="over the limit"):
        build_match(text)


def test_text_at_the_limit_is_accepted(fts: sqlite3.Connection) -> None:
    """Text of exactly MAX_QUERY_CHARS characters builds and runs."""
    match = build_match("m" * MAX_QUERY_CHARS)
    assert match is not None
    assert _search(fts, match) == set()


def test_too_many_terms_are_refused() -> None:
    """More than MAX_TERMS distinct terms is refused, naming the count."""
    text = " ".join(f"t{i}" for i in range(MAX_TERMS + 1))
    with pytest.raises(InvalidRequestError, match=f"has {MAX_TERMS + 1} distinct terms"):
        build_match(text)


def test_term_limit_counts_distinct_terms(fts: sqlite3.Connection) -> None:
    """MAX_TERMS distinct terms pass, and repeats do not count against the limit."""
    match = build_match(" ".join(f"t{i}" for i in range(MAX_TERMS)) + " t0" * 100)
    assert match is not None
    assert len(match.terms) == MAX_TERMS
    assert _search(fts, match) == set()


@pytest.mark.parametrize("query", [None, 42, b"auth", ["auth"]])
def test_non_string_is_refused(query: object) -> None:
    """A query that is not a string is refused, naming the type."""
    with pytest.raises(InvalidRequestError, match="query: must be a string, got"):
        build_match(query)  # type: ignore[arg-type]


_SEPARATORS = ['"', "*", "(", ")", ":", "^", "-", "+", "{", "}", ",", " ", "\t", "\x00", "\ud800"]
_SYNTAX = st.sampled_from(
    [*_SEPARATORS, "\u0301", "é", "AND", "OR", "NOT", "NEAR", "NEAR(", "name", "mile"]
)


@given(st.one_of(st.text(), st.lists(_SYNTAX).map("".join)))
def test_any_text_matches_or_is_refused(fts: sqlite3.Connection, text: str) -> None:
    """Whatever the text, build_match gives None, InvalidRequestError, or a runnable expression."""
    _run_or_refuse(fts, text)


@given(st.lists(st.sampled_from(_SEPARATORS), max_size=50).map("".join), st.sampled_from(' *"-'))
def test_separators_do_not_change_what_is_found(
    fts: sqlite3.Connection, before: str, after: str
) -> None:
    """Syntax characters around a word are separators: the word's row is still found."""
    assert _found(fts, before + "milestone" + after) == {"milestone-v1.0"}
