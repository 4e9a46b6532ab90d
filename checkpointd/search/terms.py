"""User search text to a safe FTS5 MATCH expression.

User text is never FTS5 syntax. It is split into terms the way the index's ``unicode61``
tokenizer splits text, and every term is written as a double-quoted FTS5 string, so quotes,
``*``, ``(``, ``:``, ``^``, ``-``, ``+`` and the keywords ``AND``, ``OR``, ``NOT`` and ``NEAR``
are either separators or plain words. Terms are joined by whitespace, which FTS5 reads as AND:
every term must match.

Decisions:

- A term is a run of characters of Unicode categories L* (letters), N* (numbers), Co (private
  use) and Mn (combining marks). The first three are ``unicode61``'s default token characters;
  it also keeps combining marks inside a token, and ``remove_diacritics`` then drops them
  (``"cafe\\u0301"`` indexes as ``cafe``; checked against SQLite 3.40). Everything else, NUL
  and lone surrogates included, separates terms and never reaches the expression. A run of
  combining marks alone is no term: the tokenizer strips it to nothing.
- Terms keep their case as typed: FTS5 folds case itself, the same way for the query as for the
  indexed text, while Python's ``str.lower`` differs from it at the edges (a final sigma).
  Duplicates are compared case-insensitively and the first spelling is kept.
- The last term is a prefix match (``"mile"*`` finds ``milestone``) unless the text ends with
  whitespace: a trailing space means the user finished the word. A trailing ``*`` or quote is
  not whitespace, so ``mile*`` is a prefix search too. When the last term repeats an earlier
  one it adds nothing (the exact term already implies the prefix) and no ``*`` is written.
- The length limit is on characters and checked before any work, so a huge text is refused in
  constant time; the term limit counts distinct terms.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from checkpointd.errors import InvalidRequestError

__all__ = ["MAX_QUERY_CHARS", "MAX_TERMS", "MatchQuery", "build_match"]

MAX_QUERY_CHARS = 1000
"""The longest search text accepted, in characters; longer is refused."""

MAX_TERMS = 32
"""The most distinct terms a search may have; more is refused."""

_TOKEN_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Co", "Mn"})


@dataclass(frozen=True, slots=True)
class MatchQuery:
    """A search ready for ``... WHERE checkpoints_fts MATCH ?``.

    ``expression`` is bound as a parameter, never pasted into SQL; ``terms`` are the distinct
    terms in the order typed, the last of them the prefix term when the text did not end with
    whitespace.
    """

    expression: str
    terms: tuple[str, ...]


def build_match(query: str) -> MatchQuery | None:
    """Turn user search text into an FTS5 MATCH expression that cannot be FTS5 syntax.

    Args:
        query: the text as the user typed it.

    Returns:
        The expression and its terms, e.g. ``'"auth" "milest"*'`` for ``"auth milest"``; or
        ``None`` when the text has no terms (``""``, ``"*"``, ``":"``, ``"🙂"``). The search
        then lists by its filters for an empty text or ``*``, and matches nothing otherwise.

    Raises:
        InvalidRequestError: ``query`` is not a string, is longer than ``MAX_QUERY_CHARS``
            characters, or has more than ``MAX_TERMS`` distinct terms. ``field`` is ``query``.

    Guarantees: pure; the expression holds only double-quoted terms (internal ``"`` doubled),
    single spaces and at most one trailing ``*``, so MATCH never fails on it.
    """
    if not isinstance(query, str):
        raise InvalidRequestError(f"must be a string, got {type(query).__name__}", field="query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidRequestError(
            f"is {len(query)} characters, over the limit of {MAX_QUERY_CHARS}", field="query"
        )
    typed = _split(query)
    if not typed:
        return None
    terms = _distinct(typed)
    if len(terms) > MAX_TERMS:
        raise InvalidRequestError(
            f"has {len(terms)} distinct terms, over the limit of {MAX_TERMS}", field="query"
        )
    last_is_new = typed[-1].lower() not in {term.lower() for term in typed[:-1]}
    prefix = last_is_new and not query[-1].isspace()
    expression = " ".join(_quote(term) for term in terms) + ("*" if prefix else "")
    return MatchQuery(expression=expression, terms=terms)


def _split(text: str) -> list[str]:
    """Split text into terms as the ``unicode61`` tokenizer would, keeping case and order."""
    terms: list[str] = []
    current: list[str] = []
    for char in text:
        if unicodedata.category(char) in _TOKEN_CATEGORIES:
            current.append(char)
        elif current:
            _keep(terms, current)
            current = []
    _keep(terms, current)
    return terms


def _keep(terms: list[str], chars: list[str]) -> None:
    # Combining marks alone make no token: the tokenizer strips them and is left with nothing.
    if any(unicodedata.category(char) != "Mn" for char in chars):
        terms.append("".join(chars))


def _distinct(terms: list[str]) -> tuple[str, ...]:
    # Case-insensitive, as FTS5 matches; the first spelling typed is kept.
    first: dict[str, str] = {}
    for term in terms:
        first.setdefault(term.lower(), term)
    return tuple(first.values())


def _quote(term: str) -> str:
    # Terms hold no '"' by construction; doubling it anyway keeps the quoting correct on its own.
    return '"' + term.replace('"', '""') + '"'
