"""What a list query may name and how big it may be: the filterable columns and the input limits.

``COLUMNS`` is the whitelist shared by the ``where`` filter and ``orderBy``: the only identifiers
either may name, and the only column names that reach the SQL text.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

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

LIST_COLUMNS: Mapping[str, Column] = MappingProxyType({"branches": Column("branches", Kind.JSON)})
"""Wire name -> column holding a JSON array of strings: only ``value [NOT] IN <name>`` tests it."""

DEFAULT_ORDER_BY = "timestamp DESC, seq DESC"
