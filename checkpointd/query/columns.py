"""What a list query may name and how big it may be: the filterable columns and the input limits.

``COLUMNS`` is the whitelist shared by the ``where`` filter and ``orderBy``: the only identifiers
either may name, and the only column names that reach the SQL text. It holds the fields the field
table (``checkpointd.fields``) marks filterable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from checkpointd.fields import FIELDS, FILTER, Kind

__all__ = [
    "COLUMNS",
    "DEFAULT_ORDER_BY",
    "LIST_COLUMNS",
    "MAX_DEPTH",
    "MAX_IN_ITEMS",
    "MAX_LENGTH",
    "MAX_ORDER_KEYS",
    "MAX_TERMS",
    "Column",
    "Kind",
]

MAX_LENGTH = 4096
"""Characters in a filter."""
MAX_DEPTH = 64
"""Nesting levels of ``NOT`` and parentheses in a filter."""
MAX_TERMS = 256
"""Predicates in a filter."""
MAX_IN_ITEMS = 1000
"""Values in one ``IN`` list."""
MAX_ORDER_KEYS = 8
"""Sort keys in an ``orderBy``."""


@dataclass(frozen=True, slots=True)
class Column:
    """A filterable column: its SQL name in table ``checkpoints`` and its kind."""

    sql: str
    kind: Kind


COLUMNS: Mapping[str, Column] = MappingProxyType(
    {
        f.wire: Column(f.name, f.codec.kind)
        for f in FIELDS
        if f.wire is not None and FILTER in f.traits and f.codec.kind is not Kind.JSON
    }
)
"""Wire name -> column. The only identifiers a filter or an ``orderBy`` may name."""

LIST_COLUMNS: Mapping[str, Column] = MappingProxyType(
    {
        f.wire: Column(f.name, f.codec.kind)
        for f in FIELDS
        if f.wire is not None and FILTER in f.traits and f.codec.kind is Kind.JSON
    }
)
"""Wire name -> column holding a JSON array of strings: only ``value [NOT] IN <name>`` tests it."""

DEFAULT_ORDER_BY = "timestamp DESC, seq DESC"
