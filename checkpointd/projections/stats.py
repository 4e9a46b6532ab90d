"""Stats counters: totals and counts by feature, priority and session.

Changes accumulate in memory per command and are written once per group commit (one upsert per
touched key instead of several per event). A command that rolls back discards its own changes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from checkpointd.projections.checkpoints import COLUMNS, Row

DIMENSIONS = ("feature", "priority", "session_id")
DIMENSION_NAMES = {"feature": "feature", "priority": "priority", "session_id": "session"}
_SIZE = itemgetter(COLUMNS.index("size"))
_STORED_SIZE = itemgetter(COLUMNS.index("stored_size"))
_DIMENSION_VALUES = tuple(
    (DIMENSION_NAMES[column], itemgetter(COLUMNS.index(column))) for column in DIMENSIONS
)


@dataclass(slots=True)
class StatsDelta:
    """Pending changes to the counters; ``+1`` for a row added, ``-1`` for a row removed."""

    totals: Counter[str] = field(default_factory=Counter)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def count(self, row: Row, sign: int) -> None:
        self.totals["checkpoints"] += sign
        self.totals["total_size"] += sign * row["size"]
        self.totals["stored_size"] += sign * row["stored_size"]
        for column in DIMENSIONS:
            if row[column] is not None:
                self.counts[(DIMENSION_NAMES[column], row[column])] += sign

    def count_added(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """``count(row, +1)`` for view rows given as tuples in ``COLUMNS`` order (C loops)."""
        self.totals["checkpoints"] += len(rows)
        self.totals["total_size"] += sum(map(_SIZE, rows))
        self.totals["stored_size"] += sum(map(_STORED_SIZE, rows))
        counts = self.counts
        for name, value in _DIMENSION_VALUES:
            for key, n in Counter(map(value, rows)).items():
                if key is not None:
                    counts[(name, key)] += n

    def recount(self, before: Row, after: Row) -> None:
        for column in DIMENSIONS:
            if before[column] != after[column]:
                name = DIMENSION_NAMES[column]
                if before[column] is not None:
                    self.counts[(name, before[column])] -= 1
                if after[column] is not None:
                    self.counts[(name, after[column])] += 1

    def clear(self) -> None:
        self.totals.clear()
        self.counts.clear()

    def write(self, conn: sqlite3.Connection) -> None:
        """Apply the pending changes and clear them."""
        if self.totals:
            conn.execute(
                "UPDATE stats_totals SET checkpoints = checkpoints + ?,"
                " total_size = total_size + ?, stored_size = stored_size + ? WHERE id = 1",
                (self.totals["checkpoints"], self.totals["total_size"], self.totals["stored_size"]),
            )
        touched = [(dim, key, n) for (dim, key), n in self.counts.items() if n]
        if touched:
            conn.executemany(
                "INSERT INTO stats_counts (dimension, key, n) VALUES (?, ?, ?)"
                " ON CONFLICT (dimension, key) DO UPDATE SET n = n + excluded.n",
                touched,
            )
            conn.executemany(
                "DELETE FROM stats_counts WHERE dimension = ? AND key = ? AND n <= 0",
                [(dim, key) for dim, key, n in touched if n < 0],
            )
        self.clear()


def reset(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM stats_counts")
    conn.execute(
        "INSERT OR REPLACE INTO stats_totals (id, checkpoints, total_size, stored_size)"
        " VALUES (1, 0, 0, 0)"
    )
