"""Numbered schema migrations, applied in order and recorded in ``schema_migrations``.

A migration is never edited once released; a change is a new, higher-numbered migration.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import msgpack

from checkpointd.clock import SystemClock, format_timestamp
from checkpointd.events.types import EventType

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "event log, blobs, projections",
        """
        CREATE TABLE events (
            seq        INTEGER PRIMARY KEY,
            id         TEXT NOT NULL,
            type       TEXT NOT NULL,
            stream     TEXT NOT NULL,
            session_id TEXT NOT NULL,
            version    INTEGER NOT NULL,
            at         TEXT NOT NULL,
            actor      TEXT,
            causation  TEXT,
            data       BLOB NOT NULL,
            prev_hash  BLOB NOT NULL,
            hash       BLOB NOT NULL,
            UNIQUE (stream, version)
        );
        CREATE INDEX events_session ON events (session_id, seq);
        -- Append-only by construction. Someone with the file can drop these; the hash chain
        -- is what proves tampering, these keep honest mistakes out.
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;

        -- Snapshot bytes live apart from the events so delete and expiry can remove them.
        -- Keyed by the seq of the event that stored them (a checkpoint's create event).
        CREATE TABLE blobs (
            seq  INTEGER PRIMARY KEY,
            data BLOB NOT NULL
        );

        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;

        CREATE TABLE projection_position (
            name TEXT PRIMARY KEY,
            seq  INTEGER NOT NULL
        ) WITHOUT ROWID;

        -- The checkpoints view: rowid is the seq of the create event (also the FTS rowid).
        CREATE TABLE checkpoints (
            seq                  INTEGER PRIMARY KEY,
            id                   TEXT NOT NULL UNIQUE,
            name                 TEXT NOT NULL,
            session_id           TEXT NOT NULL,
            timestamp            TEXT NOT NULL,
            branches             TEXT NOT NULL,
            metadata             TEXT NOT NULL,
            feature              TEXT,
            priority             TEXT NOT NULL,
            author               TEXT,
            description          TEXT,
            tags                 TEXT,
            workflow_id          TEXT,
            step_id              TEXT,
            created_by           TEXT,
            size                 INTEGER NOT NULL,
            stored_size          INTEGER NOT NULL,
            checksum             TEXT NOT NULL,
            compressed           INTEGER NOT NULL,
            encrypted            INTEGER NOT NULL,
            retention_expires_at TEXT,
            restored_from        TEXT,
            version              INTEGER NOT NULL,
            created_at           TEXT NOT NULL,
            updated_at           TEXT NOT NULL
        );
        CREATE INDEX checkpoints_session ON checkpoints (session_id, timestamp);
        CREATE INDEX checkpoints_feature ON checkpoints (feature, timestamp)
            WHERE feature IS NOT NULL;
        CREATE INDEX checkpoints_timestamp ON checkpoints (timestamp);
        CREATE INDEX checkpoints_retention ON checkpoints (retention_expires_at)
            WHERE retention_expires_at IS NOT NULL;

        CREATE VIRTUAL TABLE checkpoints_fts USING fts5 (
            name, description, tags, feature, author, workflow_id, step_id,
            content = 'checkpoints', content_rowid = 'seq',
            tokenize = 'unicode61 remove_diacritics 2'
        );

        -- Lineage edges survive the deletion of either end, so chains stay traversable.
        CREATE TABLE lineage (
            child  TEXT NOT NULL,
            parent TEXT NOT NULL,
            kind   TEXT NOT NULL,
            seq    INTEGER NOT NULL,
            PRIMARY KEY (child, parent, kind)
        ) WITHOUT ROWID;
        CREATE INDEX lineage_parent ON lineage (parent);

        CREATE TABLE stats_totals (
            id          INTEGER PRIMARY KEY CHECK (id = 1),
            checkpoints INTEGER NOT NULL,
            total_size  INTEGER NOT NULL,
            stored_size INTEGER NOT NULL
        );
        INSERT INTO stats_totals (id, checkpoints, total_size, stored_size) VALUES (1, 0, 0, 0);
        CREATE TABLE stats_counts (
            dimension TEXT NOT NULL,
            key       TEXT NOT NULL,
            n         INTEGER NOT NULL,
            PRIMARY KEY (dimension, key)
        ) WITHOUT ROWID;

        -- Per-session current state: the blob of its newest checkpoint or of its last restore.
        CREATE TABLE sessions (
            session_id    TEXT PRIMARY KEY,
            state_ref     INTEGER,
            state_key     TEXT,
            checkpoint_id TEXT,
            restored_from TEXT,
            last_seq      INTEGER NOT NULL,
            updated_at    TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "idempotency keys (Nats-Msg-Id) with their stored replies",
        """
        -- Written in the transaction of the events the keyed command appended, so a key is
        -- recorded if and only if its effect is. ``seq`` is the last of those events (0: none).
        -- A rowid table: rows arrive in rowid order and only the small key index takes random
        -- inserts (a WITHOUT ROWID table keyed by random ids measured twice as slow).
        CREATE TABLE idempotency (
            id     INTEGER PRIMARY KEY,
            key    TEXT NOT NULL UNIQUE,
            digest BLOB NOT NULL,
            seq    INTEGER NOT NULL,
            at     TEXT NOT NULL,
            reply  BLOB NOT NULL
        );
        CREATE INDEX idempotency_at ON idempotency (at);
        """,
    ),
    (
        3,
        "restore details in the state's blob row; restore states' source checkpoints",
        """
        -- A restore's conflicts and warnings quote values of both states: they are stored
        -- encoded like the state (encrypted whenever a key is set), in the row that delete and
        -- expiry remove, and the event keeps only their paths.
        ALTER TABLE blobs ADD COLUMN details BLOB;

        -- Every checkpoint whose values a restored state holds (the one restored, and those
        -- behind the session's state it was merged with). Removing any of them removes the
        -- state's blob row; ``session_id`` is the session the state was restored into.
        CREATE TABLE restore_sources (
            checkpoint_id TEXT NOT NULL,
            seq           INTEGER NOT NULL,
            session_id    TEXT NOT NULL,
            PRIMARY KEY (checkpoint_id, seq)
        ) WITHOUT ROWID;
        CREATE INDEX restore_sources_seq ON restore_sources (seq);

        -- A new view: empty them all, so that opening replays the log into every one of them.
        DELETE FROM checkpoints;
        DELETE FROM lineage;
        DELETE FROM stats_counts;
        UPDATE stats_totals SET checkpoints = 0, total_size = 0, stored_size = 0;
        DELETE FROM sessions;
        INSERT INTO checkpoints_fts (checkpoints_fts) VALUES ('delete-all');
        DELETE FROM projection_position;
        """,
    ),
    (
        4,
        "signed chain heads",
        """
        -- The head of the hash chain, signed with a key derived from the encryption key
        -- (checkpointd.events.signing): ``hash`` is event ``seq``'s, ``mac`` authenticates
        -- the row. Append-only like the events.
        CREATE TABLE chain_heads (
            seq    INTEGER PRIMARY KEY,
            hash   BLOB NOT NULL,
            key_id TEXT NOT NULL,
            at     TEXT NOT NULL,
            mac    BLOB NOT NULL
        );
        CREATE TRIGGER chain_heads_no_update BEFORE UPDATE ON chain_heads
        BEGIN SELECT RAISE(ABORT, 'signed chain heads are append-only'); END;
        CREATE TRIGGER chain_heads_no_delete BEFORE DELETE ON chain_heads
        BEGIN SELECT RAISE(ABORT, 'signed chain heads are append-only'); END;
        """,
    ),
    (
        5,
        "the store's id",
        """
        -- Written once, when the log is created (or first opened by a version that has it),
        -- and never changed: the service advertises it, so two different stores served on
        -- one subject prefix are told apart. A copy of the file keeps it.
        INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
        """,
    ),
    (
        6,
        "the views move to their own file",
        """
        -- The log keeps only what a write needs: events, blobs, idempotency keys, signed heads
        -- and the restore_sources index (delete and expiry remove the restored states that hold
        -- a checkpoint's values). The views are built by the projector in their own file
        -- (checkpointd.views) from event 0, so they go from here.
        DROP TABLE IF EXISTS checkpoints_fts;
        DROP TABLE IF EXISTS checkpoints;
        DROP TABLE IF EXISTS lineage;
        DROP TABLE IF EXISTS stats_totals;
        DROP TABLE IF EXISTS stats_counts;
        DROP TABLE IF EXISTS sessions;
        DROP TABLE IF EXISTS projection_position;
        DELETE FROM meta WHERE key = 'fts_stale';
        """,
    ),
)

VIEWS_VERSION = 2
"""The views file's layout; a file of another version is rebuilt from the log (2: the writes
view)."""

VIEWS_SCHEMA = """
CREATE TABLE views_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;

CREATE TABLE projection_position (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
) WITHOUT ROWID;

-- The checkpoints view: rowid is the seq of the create event (also the FTS rowid, and the key
-- of the checkpoint's blob in the log). Its columns are the field table's (checkpointd.fields),
-- in order, typed by their codecs, NOT NULL unless the field may be null: a test holds them so.
CREATE TABLE checkpoints (
    seq                  INTEGER PRIMARY KEY,
    id                   TEXT NOT NULL UNIQUE,
    name                 TEXT NOT NULL,
    session_id           TEXT NOT NULL,
    timestamp            TEXT NOT NULL,
    branches             TEXT NOT NULL,
    metadata             TEXT NOT NULL,
    feature              TEXT,
    priority             TEXT NOT NULL,
    author               TEXT,
    description          TEXT,
    tags                 TEXT,
    workflow_id          TEXT,
    step_id              TEXT,
    created_by           TEXT,
    size                 INTEGER NOT NULL,
    stored_size          INTEGER NOT NULL,
    checksum             TEXT NOT NULL,
    compressed           INTEGER NOT NULL,
    encrypted            INTEGER NOT NULL,
    retention_expires_at TEXT,
    restored_from        TEXT,
    version              INTEGER NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX checkpoints_session ON checkpoints (session_id, timestamp);
-- A session's checkpoints by name: the LangGraph saver's latest-checkpoint and by-id lookups.
CREATE INDEX checkpoints_session_name ON checkpoints (session_id, name);
CREATE INDEX checkpoints_feature ON checkpoints (feature, timestamp)
    WHERE feature IS NOT NULL;
CREATE INDEX checkpoints_timestamp ON checkpoints (timestamp);
CREATE INDEX checkpoints_retention ON checkpoints (retention_expires_at)
    WHERE retention_expires_at IS NOT NULL;

CREATE VIRTUAL TABLE checkpoints_fts USING fts5 (
    name, description, tags, feature, author, workflow_id, step_id,
    content = 'checkpoints', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Lineage edges survive the deletion of either end, so chains stay traversable.
CREATE TABLE lineage (
    child  TEXT NOT NULL,
    parent TEXT NOT NULL,
    kind   TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (child, parent, kind)
) WITHOUT ROWID;
CREATE INDEX lineage_parent ON lineage (parent);

CREATE TABLE stats_totals (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    checkpoints INTEGER NOT NULL,
    total_size  INTEGER NOT NULL,
    stored_size INTEGER NOT NULL
);
INSERT INTO stats_totals (id, checkpoints, total_size, stored_size) VALUES (1, 0, 0, 0);
CREATE TABLE stats_counts (
    dimension TEXT NOT NULL,
    key       TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (dimension, key)
) WITHOUT ROWID;

-- Per-session current state: the blob of its newest checkpoint or of its last restore.
CREATE TABLE sessions (
    session_id    TEXT PRIMARY KEY,
    state_ref     INTEGER,
    state_key     TEXT,
    checkpoint_id TEXT,
    restored_from TEXT,
    last_seq      INTEGER NOT NULL,
    updated_at    TEXT NOT NULL
) WITHOUT ROWID;

-- The checkpoints whose values each live restored state holds (see projections.sessions).
CREATE TABLE restore_sources (
    checkpoint_id TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    session_id    TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, seq)
) WITHOUT ROWID;
CREATE INDEX restore_sources_seq ON restore_sources (seq);

-- The pending writes of each live checkpoint (see projections.writes): the value is at
-- ``position`` in the blob of the ``checkpoint.writes`` event ``seq``.
CREATE TABLE writes (
    checkpoint_id TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    task_path     TEXT NOT NULL,
    channel       TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    PRIMARY KEY (checkpoint_id, task_id, idx)
) WITHOUT ROWID;
"""

PROJECTION_TABLES = (
    "checkpoints",
    "lineage",
    "stats_totals",
    "stats_counts",
    "sessions",
    "restore_sources",
    "writes",
)
"""The views' tables that hold rows (the FTS index aside)."""


def _index_restore_sources(conn: sqlite3.Connection) -> None:
    """Index the sources of every restore already in the log in ``restore_sources``.

    From here the table is the log's own index, written with each restore, and delete and
    expiry remove the restored states it lists. A log from before it was kept (the table is
    new and empty) would otherwise keep the states restored earlier when their sources go.
    """
    restores = conn.execute(
        "SELECT seq, session_id, data FROM events WHERE type = ?", (EventType.RESTORED.value,)
    )
    for seq, session_id, data in restores.fetchall():
        payload = msgpack.unpackb(data, raw=False)
        # A restore logged before its sources were recorded holds the restored checkpoint's.
        sources = payload.get("sources") or (payload["checkpointId"],)
        conn.executemany(
            "INSERT OR IGNORE INTO restore_sources (checkpoint_id, seq, session_id)"
            " VALUES (?, ?, ?)",
            [(source, seq, session_id) for source in sources],
        )


_THEN: dict[int, Callable[[sqlite3.Connection], None]] = {6: _index_restore_sources}
"""Steps that finish a migration, in its transaction: what SQL alone cannot do."""


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration not yet recorded, each in its own transaction; the schema version."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, description, sql in MIGRATIONS:
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            if version in _THEN:
                _THEN[version](conn)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (version, description, format_timestamp(SystemClock().now())),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return MIGRATIONS[-1][0]


def create_views(conn: sqlite3.Connection) -> None:
    """Create the views' tables in an empty views file (inside the caller's transaction)."""
    for statement in _statements(VIEWS_SCHEMA):
        conn.execute(statement)
    conn.execute("INSERT INTO views_meta (key, value) VALUES ('version', ?)", (VIEWS_VERSION,))


def _statements(sql: str) -> list[str]:
    # executescript() would commit the open transaction, so split the script into complete
    # statements (a trigger body holds ';' of its own).
    statements: list[str] = []
    pending = ""
    for part in sql.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements
