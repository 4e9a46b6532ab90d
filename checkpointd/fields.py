"""The checkpoint's fields, in one table: every form of a checkpoint is derived from it.

A field has up to three forms, and ``FIELDS`` lists each field once with all of them:

- the Python attribute of ``Checkpoint`` (snake_case), which is also the name of its view column;
- the wire value under a camelCase key, in replies and requests. A ``checkpoint.created`` event's
  data holds wire values too, so the view is built from wire values;
- the view column of table ``checkpoints`` (SQLite text, integers, JSON text).

Its ``Codec`` converts between them (datetime and ISO-8601 text, list and JSON text, bool and
0/1), its ``source`` says where a create event carries it (the event's header or its data), and
its traits whether it may be null, filtered and ordered by (``where``, ``orderBy``), or changed
by an update.

``Checkpoint.to_wire``/``from_wire``, ``rows.checkpoint_from_row`` and ``created_wire``, the
projection's ``COLUMNS``, ``created_values`` and ``updated_row``, and the filterable columns of
``query.columns`` are all derived from this table (``checkpointd.derived``), and a test holds
the views schema's ``checkpoints`` table to it. Adding a field is one line here, one attribute
of ``Checkpoint`` and, for a stored field, a views schema change.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checkpointd.clock import format_timestamp, parse_timestamp
from checkpointd.compact_json import compact_dumps

__all__ = [
    "ATTRIBUTES",
    "COLUMNS",
    "DATA",
    "FIELDS",
    "FILTER",
    "LIFTED_FROM",
    "NULL",
    "UPDATE",
    "Codec",
    "Data",
    "Field",
    "Header",
    "Kind",
    "Lifted",
    "Trait",
    "branches_text",
    "dumps",
]


class Kind(enum.Enum):
    """How a column's values are stored, which decides how a compared value is normalised."""

    TEXT = "text"
    DATETIME = "datetime"
    INT = "int"
    BOOL = "bool"
    JSON = "json"


Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Codec:
    """How a field's value converts between its forms; None: the value is kept as it is.

    ``to_wire``: attribute -> wire; ``from_wire``: wire -> attribute; ``to_column``: wire (or
    create event data) -> column; ``from_column``: column -> attribute. A None value is never
    converted: it is None in every form.
    """

    kind: Kind
    sql_type: str
    to_wire: Convert | None = None
    from_wire: Convert | None = None
    to_column: Convert | None = None
    from_column: Convert | None = None


# Keys sorted as in the canonical event data, so a rebuild writes the very same text.
dumps = compact_dumps(sort_keys=True)

# The text of recently seen branch lists (most checkpoints have the same few), keyed by tuples
# of strings only: no other value equals one of those, so a hit is always the right text.
_BRANCHES: dict[tuple[str, ...], str] = {}


def branches_text(branches: Any) -> str:
    """``dumps(branches)``, remembered for tuples of strings (a replay decodes arrays so)."""
    try:
        return _BRANCHES[branches]
    except (KeyError, TypeError):  # not seen, or a list (not hashable)
        pass
    text = dumps(branches)
    if type(branches) is tuple and all(type(name) is str for name in branches):
        if len(_BRANCHES) >= 1024:
            _BRANCHES.clear()
        _BRANCHES[branches] = text
    return text


TEXT = Codec(Kind.TEXT, "TEXT")
INTEGER = Codec(Kind.INT, "INTEGER")
BOOLEAN = Codec(Kind.BOOL, "INTEGER", to_column=int, from_column=bool)
DATETIME = Codec(
    Kind.DATETIME, "TEXT", to_wire=format_timestamp, from_wire=parse_timestamp,
    from_column=parse_timestamp,
)  # fmt: skip
STRINGS = Codec(
    Kind.JSON, "TEXT", to_wire=list, from_wire=list, to_column=branches_text,
    from_column=json.loads,
)  # fmt: skip
OBJECT = Codec(Kind.JSON, "TEXT", to_wire=dict, to_column=dumps, from_column=json.loads)
VALUE = Codec(Kind.JSON, "")
"""A JSON value passed on as it is, never stored in the view (the snapshot)."""


@dataclass(frozen=True, slots=True)
class Header:
    """From the event's header: ``attr`` of ``EventRecord`` (a column of the log).

    ``every_event``: set again by each event of the checkpoint's stream (an update), not only
    by its create.
    """

    attr: str
    every_event: bool = False


@dataclass(frozen=True, slots=True)
class Data:
    """From the create event's data, under ``key`` (None: the field's wire name), passed
    through ``derive`` when the data holds something else than the wire value."""

    key: str | None = None
    derive: Convert | None = None


DATA = Data()
"""From the create event's data, under the field's wire name: the usual case."""


@dataclass(frozen=True, slots=True)
class Lifted:
    """A view-only column lifted out of the metadata (``metadata[key]``, for indexes and FTS):
    ``default`` when the key is absent, passed through ``derive`` when given."""

    key: str
    default: Any = None
    derive: Convert | None = None


LIFTED_FROM = "metadata"
"""The field whose value ``Lifted`` columns are read from."""


class Trait(enum.Flag):
    """What else a field allows."""

    NONE = 0
    NULL = enum.auto()
    """It may be null (and absent from the wire); its column is nullable."""
    FILTER = enum.auto()
    """``where`` may test it and ``orderBy`` sort by it (a list field: ``value IN field``)."""
    UPDATE = enum.auto()
    """An update may change it."""


NULL, FILTER, UPDATE = Trait.NULL, Trait.FILTER, Trait.UPDATE


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a checkpoint (see the module docstring).

    ``name``: the ``Checkpoint`` attribute and the view column. ``wire``: the camelCase key;
    None for a view-only column, which is no attribute of ``Checkpoint``. ``source``: where a
    create event carries it; None for a field the view does not hold (the snapshot, kept in the
    log's blobs), which is on the wire only when set.
    """

    name: str
    wire: str | None
    codec: Codec
    source: Header | Data | Lifted | None
    traits: Trait = Trait.NONE

    @property
    def attribute(self) -> str | None:
        return None if self.wire is None else self.name

    @property
    def column(self) -> str | None:
        return None if self.source is None else self.name

    @property
    def nullable(self) -> bool:
        return Trait.NULL in self.traits


def compression_used(compression: str) -> bool:
    """``compressed`` from the create event's ``compression`` (the codec's name)."""
    return compression != "none"


def tags_text(tags: Any) -> str | None:
    """The tags as one space-separated text (for FTS), None when there are none."""
    return " ".join(tags) if tags else None


# In wire order (the snapshot last: it is on the wire only when asked for), which is also the
# view's column order. The view-only columns are the create event's seq and the metadata
# fields lifted out for indexes and full-text search.
FIELDS: tuple[Field, ...] = (
    Field("seq", None, INTEGER, Header("seq")),
    Field("id", "id", TEXT, Header("stream"), FILTER),
    Field("name", "name", TEXT, DATA, FILTER | UPDATE),
    Field("session_id", "sessionId", TEXT, Header("session_id"), FILTER),
    Field("timestamp", "timestamp", DATETIME, DATA, FILTER),
    Field("branches", "branches", STRINGS, DATA, FILTER | UPDATE),
    Field("metadata", "metadata", OBJECT, DATA, UPDATE),
    Field("feature", None, TEXT, Lifted("feature"), NULL),
    Field("priority", None, TEXT, Lifted("priority", default="normal")),
    Field("author", None, TEXT, Lifted("author"), NULL),
    Field("description", None, TEXT, Lifted("description"), NULL),
    Field("tags", None, TEXT, Lifted("tags", derive=tags_text), NULL),
    Field("workflow_id", None, TEXT, Lifted("workflowId"), NULL),
    Field("step_id", None, TEXT, Lifted("stepId"), NULL),
    Field("created_by", "createdBy", TEXT, DATA, NULL | FILTER),
    Field("size", "size", INTEGER, DATA, FILTER),
    Field("stored_size", "storedSize", INTEGER, DATA, FILTER),
    Field("checksum", "checksum", TEXT, DATA),
    Field("compressed", "compressed", BOOLEAN, Data("compression", compression_used), FILTER),
    Field("encrypted", "encrypted", BOOLEAN, DATA, FILTER),
    Field("retention_expires_at", "retentionExpiresAt", DATETIME, DATA, NULL | FILTER | UPDATE),
    Field("restored_from", "restoredFrom", TEXT, DATA, NULL | FILTER),
    Field("version", "version", INTEGER, Header("version", every_event=True), FILTER),
    Field("created_at", "createdAt", DATETIME, Header("at"), FILTER),
    Field("updated_at", "updatedAt", DATETIME, Header("at", every_event=True), FILTER),
    Field("snapshot", "snapshot", VALUE, None, NULL),
)

COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.source is not None)
"""The checkpoints view's columns, in the schema's order."""

ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in FIELDS if f.wire is not None)
"""The attributes of ``Checkpoint``."""
