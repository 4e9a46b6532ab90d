"""What a transaction changed in the log's tables, as data; and the same change made elsewhere.

A replica of the log (``checkpointd.storage.jetstream``) ships each committed group as the rows
it wrote and removed, not as the commands that wrote them: a follower applies them with no
knowledge of event types, so a new event type, table or removal rule needs no follower code,
and a follower's copy is the leader's row for row (rowids included).

``install`` puts TEMP triggers on the writing connection (only there: other connections and
the SQLite-only path never see them) that note the key of every row inserted, updated or
deleted in a log table into ``temp.log_changes``. ``collect`` turns the notes of the open
transaction into ``Change``s — the final values of the rows still present, the keys of those
removed — and clears them; ``apply`` makes the same changes on another copy of the log.

Tables that are not part of the replicated log: ``meta`` (each copy's own bookkeeping; the
store's id and KDF salt travel in the stream's first segment), ``schema_migrations``, and
``chain_heads`` (each daemon signs the heads of its own copy).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

LOCAL_TABLES = frozenset({"meta", "schema_migrations", "chain_heads"})
_NOTES = "temp.log_changes"
INSERT, DELETE = "i", "d"


@dataclass(frozen=True, slots=True)
class Table:
    """A log table's shape: the columns a row is shipped with, and those that key it."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # ("rowid",) for a rowid table without an INTEGER PRIMARY KEY

    def to_wire(self) -> list[Any]:
        return [list(self.columns), list(self.key)]

    @classmethod
    def from_wire(cls, name: str, wire: Sequence[Any]) -> Table:
        return cls(name, tuple(wire[0]), tuple(wire[1]))


@dataclass(frozen=True, slots=True)
class Change:
    """One row of ``table`` to write (``values``, in its columns' order) or remove (its key)."""

    table: str
    op: str  # INSERT (insert or replace) or DELETE
    values: tuple[Any, ...]


def log_tables(conn: sqlite3.Connection) -> dict[str, Table]:
    """The replicated tables of the log on ``conn`` and their shapes."""
    rows = conn.execute(
        "SELECT name, sql FROM main.sqlite_master WHERE type = 'table'"
        " AND name NOT LIKE 'sqlite%' ORDER BY name"
    ).fetchall()
    tables: dict[str, Table] = {}
    for name, sql in rows:
        if name in LOCAL_TABLES or str(sql).upper().startswith("CREATE VIRTUAL"):
            continue
        tables[name] = _shape(conn, name)
    return tables


def _shape(conn: sqlite3.Connection, name: str) -> Table:
    info = conn.execute(f'PRAGMA main.table_info("{name}")').fetchall()
    columns = tuple(row[1] for row in info)
    pk = [(row[5], row[1], str(row[2]).upper()) for row in info if row[5] > 0]
    pk.sort()
    try:
        conn.execute(f'SELECT rowid FROM main."{name}" LIMIT 0')
    except sqlite3.OperationalError:  # WITHOUT ROWID: its primary key is the key
        return Table(name, columns, tuple(column for _, column, _ in pk))
    if len(pk) == 1 and pk[0][2] == "INTEGER":  # an alias of the rowid
        return Table(name, columns, (pk[0][1],))
    return Table(name, ("rowid", *columns), ("rowid",))


def install(conn: sqlite3.Connection) -> dict[str, Table]:
    """Note every change to the log's tables made on ``conn`` (TEMP triggers). Idempotent.

    Returns the tables watched.
    """
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_NOTES}"
        " (n INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL)"
    )
    tables = log_tables(conn)
    for table in tables.values():
        new, old = _key_json(table, "NEW"), _key_json(table, "OLD")
        notes = {
            "i": ("INSERT", f"('{table.name}', 'i', {new})"),
            # An update is noted as the old key removed and the new row written: a key that
            # changed leaves no row behind, an unchanged one is simply written again.
            "u": ("UPDATE", f"('{table.name}', 'd', {old}), ('{table.name}', 'i', {new})"),
            "d": ("DELETE", f"('{table.name}', 'd', {old})"),
        }
        for suffix, (event, values) in notes.items():
            conn.execute(
                f'CREATE TEMP TRIGGER IF NOT EXISTS "capture_{table.name}_{suffix}"'
                f' AFTER {event} ON main."{table.name}"'
                # Unqualified: a trigger may not name a schema; the temp one is searched first.
                f" BEGIN INSERT INTO log_changes (tbl, op, key) VALUES {values}; END"
            )
    return tables


def _key_json(table: Table, ref: str) -> str:
    return "json_array(" + ", ".join(f'{ref}."{column}"' for column in table.key) + ")"


def collect(conn: sqlite3.Connection, tables: dict[str, Table]) -> list[Change]:
    """The changes noted in the open transaction, in order, and forget the notes.

    Each row appears once, at the place of its last change: a row still present is shipped
    with its values at this moment, one removed by its key.
    """
    notes = conn.execute(f"SELECT tbl, op, key FROM {_NOTES} ORDER BY n").fetchall()
    conn.execute(f"DELETE FROM {_NOTES}")
    last: dict[tuple[str, str], str] = {}
    for table, op, key in notes:
        last.pop((table, key), None)  # re-inserted: it moves to the place of its last change
        last[(table, key)] = op
    changes: list[Change] = []
    for (name, key), op in last.items():
        table = tables[name]
        values = tuple(json.loads(key))
        if op == DELETE:
            changes.append(Change(name, DELETE, values))
            continue
        row = conn.execute(
            f'SELECT {_columns(table.columns)} FROM main."{name}" WHERE {_where(table.key)}',
            values,
        ).fetchone()
        if row is not None:  # removed later by a statement the triggers did not see: skip
            changes.append(Change(name, INSERT, tuple(row)))
    return changes


def forget(conn: sqlite3.Connection) -> None:
    """Drop the notes of changes made on ``conn`` that are not to be shipped (a replica's own
    application of a segment)."""
    conn.execute(f"DELETE FROM {_NOTES}")


def apply(conn: sqlite3.Connection, tables: dict[str, Table], changes: Iterable[Change]) -> None:
    """Make ``changes`` on ``conn``, in the caller's transaction."""
    for change in changes:
        table = tables[change.table]
        if change.op == DELETE:
            conn.execute(
                f'DELETE FROM main."{table.name}" WHERE {_where(table.key)}', change.values
            )
        else:
            marks = ", ".join("?" * len(table.columns))
            conn.execute(
                f'INSERT OR REPLACE INTO main."{table.name}" ({_columns(table.columns)})'
                f" VALUES ({marks})",
                change.values,
            )


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def _where(key: Sequence[str]) -> str:
    return " AND ".join(f'"{column}" = ?' for column in key)
