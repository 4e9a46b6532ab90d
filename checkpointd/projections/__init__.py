"""Projections: the views built from the event log, in the projector's transactions.

``Projector.apply`` turns one event into the rows of every view, matching on its typed event
(``checkpointd.events.domain``); ``apply_rows`` does the same for a run of log rows, with a
fast path for creates; ``reset`` empties the views so a rebuild can replay the log from event
0. The rebuilt tables equal the live ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgpack

from checkpointd.events import store
from checkpointd.events.domain import (
    Changes,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointExpired,
    CheckpointUpdated,
    StateRestored,
    WritesPut,
    decode,
)
from checkpointd.events.types import EventRecord, EventType
from checkpointd.projections import checkpoints, fts, lineage, sessions, writes
from checkpointd.projections.checkpoints import Row
from checkpointd.projections.stats import StatsDelta
from checkpointd.projections.stats import reset as reset_stats
from checkpointd.storage.schema import PROJECTION_TABLES

POSITION = "projections"
_CREATED = EventType.CREATED.value
_RESTORED_FROM = checkpoints.COLUMNS.index("restored_from")


class Projector:
    """Applies events to the views; stats changes are buffered and written once per group.

    A command only reaches ``apply`` after it has started writing, and a command that fails
    after writing rolls back its whole group (``discard_group``), so the buffer never holds a
    failed command's changes.
    """

    def __init__(self, *, fts_enabled: bool) -> None:
        self.fts_enabled = fts_enabled
        self.position = 0
        self._group = StatsDelta()
        # Whether some session may be at a restored state. Until one is, a new checkpoint
        # cannot descend from a restore and its lineage lookup is skipped. Starts True (always
        # correct); ``track_restores`` and ``reset`` make it exact, a restore sets it again.
        # Only this process writes the database (the chain head is cached the same way).
        self._restores = True
        # While ``bulk`` (a replay), creates' session rows wait here, newest per session, and
        # are written before any other event and at ``flush``: a replay of many creates then
        # writes each session once per flush instead of once per event.
        self.bulk = False
        self._sessions: dict[str, sessions.Values] = {}

    def track_restores(self, conn: sqlite3.Connection) -> None:
        """Learn whether any session is at a restored state (call after opening)."""
        row = conn.execute(
            "SELECT 1 FROM sessions WHERE restored_from IS NOT NULL LIMIT 1"
        ).fetchone()
        self._restores = row is not None

    def apply(self, conn: sqlite3.Connection, record: EventRecord) -> Row | None:
        """Apply one event; returns the checkpoint's view row after it (None once removed).

        An update or removal of a checkpoint the view does not hold changes nothing.
        """
        event = decode(record)
        if self._sessions and not isinstance(event, CheckpointCreated):
            self._write_sessions(conn)  # what follows may read or write them
        after: Row | None = None
        match event:
            case CheckpointCreated():
                after = self._created(conn, record, event)
            case CheckpointUpdated(changes):
                if (before := checkpoints.load(conn, record.stream)) is not None:
                    after = self._updated(conn, record, changes, before)
            case CheckpointDeleted() | CheckpointExpired():
                if (before := checkpoints.load(conn, record.stream)) is not None:
                    self._removed(conn, record, before)
                writes.removed(conn, record.stream)
            case StateRestored():
                self._restored(conn, record, event)
            case WritesPut():
                writes.put(conn, record, event)
        self.position = record.seq
        return after

    def apply_rows(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Apply events given as log rows (``store.REPLAY_COLUMNS``, in seq order).

        The views end as ``apply`` on each event would leave them, with creates' session rows
        buffered as in bulk mode (``flush`` writes them). Creates, nearly every event of a
        log, make no record, no typed event and no dict row (the replay's hot path): consecutive
        ones are decoded once each straight to view values (arrays as tuples) and written with
        one statement per table. Any other event writes the creates before it, then goes
        through ``apply``.
        """
        created: list[tuple[Any, ...]] = []
        edges: list[lineage.Edge] = []
        restore_edges: list[lineage.RestoreEdge] = []
        buffered = self._sessions
        unpack = msgpack.unpackb
        values_of = checkpoints.created_values
        for row in rows:
            seq, kind, stream, session_id, _, at, data = row
            if kind != _CREATED:
                if created:
                    self._write_created(conn, created, edges, restore_edges)
                    created, edges, restore_edges = [], [], []
                record = store.get(conn, seq)
                assert record is not None  # the row was just read from the log
                self.apply(conn, record)
                continue
            payload = unpack(data, use_list=False)
            values = values_of(row, payload)
            created.append(values)
            parent = payload["metadata"].get("parentCheckpoint")
            if parent is not None:
                edges.append((stream, parent, lineage.PARENT, seq))
            restored_from = values[_RESTORED_FROM]
            if restored_from is not None:
                edges.append((stream, restored_from, lineage.RESTORED_FROM, seq))
            # As in ``_created``: the sessions view is read as it was before this create.
            if self._restores and session_id not in buffered:
                restore_edges.append((stream, lineage.RESTORE, seq, session_id))
            # As ``sessions.created_values`` (built here: no record).
            buffered[session_id] = (session_id, seq, stream, stream, None, seq, at)
        if created:
            self._write_created(conn, created, edges, restore_edges)
        if rows:
            self.position = rows[-1][0]

    def _write_created(
        self,
        conn: sqlite3.Connection,
        created: list[tuple[Any, ...]],
        edges: list[lineage.Edge],
        restore_edges: list[lineage.RestoreEdge],
    ) -> None:
        """Write a run of creates' rows (their session rows stay buffered)."""
        checkpoints.insert_many(conn, created)
        if self.fts_enabled:
            fts.add_many(conn, created)
        self._group.count_added(created)
        if edges:
            lineage.link_many(conn, edges)
        if restore_edges:
            lineage.link_restore_many(conn, restore_edges)

    def _created(
        self, conn: sqlite3.Connection, event: EventRecord, created: CheckpointCreated
    ) -> Row:
        row = checkpoints.created_row(event, created.to_map())
        checkpoints.insert(conn, row)
        if self.fts_enabled:
            fts.add(conn, row)
        self._group.count(row, +1)
        lineage.link(conn, event, created.metadata.get("parentCheckpoint"), lineage.PARENT)
        lineage.link(conn, event, created.restored_from, lineage.RESTORED_FROM)
        # A checkpoint taken from a restored state descends from the checkpoint restored.
        # (A session with a buffered create is at that checkpoint, not at a restored state.)
        if self._restores and event.session_id not in self._sessions:
            lineage.link_restore(conn, event)
        if self.bulk:
            self._sessions[event.session_id] = sessions.created_values(event)
        else:
            sessions.checkpoint_created(conn, event)
        return row

    def _updated(
        self, conn: sqlite3.Connection, event: EventRecord, changes: Changes, before: Row
    ) -> Row:
        after = checkpoints.updated_row(before, event, changes)
        checkpoints.replace(conn, after)
        if self.fts_enabled and fts.changed(before, after):
            fts.drop(conn, before)
            fts.add(conn, after)
        self._group.recount(before, after)
        if "metadata" in changes:
            parent = changes["metadata"].get("parentCheckpoint")
            lineage.relink(conn, event, parent, lineage.PARENT)
        return after

    def _removed(self, conn: sqlite3.Connection, event: EventRecord, before: Row) -> None:
        if self.fts_enabled:
            fts.drop(conn, before)
        checkpoints.remove(conn, before)
        self._group.count(before, -1)
        sessions.checkpoint_removed(conn, event)

    def _restored(
        self, conn: sqlite3.Connection, event: EventRecord, restored: StateRestored
    ) -> None:
        self._restores = True
        sessions.state_restored(
            conn, event, restored.state_id, restored.checkpoint_id, restored.sources
        )

    def _write_sessions(self, conn: sqlite3.Connection) -> None:
        rows = list(self._sessions.values())
        self._sessions.clear()  # in place: ``apply_rows`` holds it
        sessions.write_created(conn, rows)

    def discard_group(self, position: int) -> None:
        """The whole group rolled back."""
        self._group.clear()
        self._sessions.clear()
        self.position = position

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write buffered changes and the projection position; call inside the transaction."""
        if self._sessions:
            self._write_sessions(conn)
        self._group.write(conn)
        conn.execute(
            "INSERT INTO projection_position (name, seq) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            (POSITION, self.position),
        )

    def reset(self, conn: sqlite3.Connection) -> None:
        """Empty every view (for a rebuild from event 0)."""
        for table in PROJECTION_TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("INSERT INTO checkpoints_fts (checkpoints_fts) VALUES ('delete-all')")
        reset_stats(conn)
        self.discard_group(0)
        self._restores = False


def stored_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM projection_position WHERE name = ?", (POSITION,)).fetchone()
    return 0 if row is None else int(row[0])
