"""Stats read from the maintained counters: no scan, whatever the number of checkpoints."""

from __future__ import annotations

from typing import Any

from checkpointd.clock import parse_timestamp
from checkpointd.results import CheckpointRef, Stats
from checkpointd.storage.readers import ReaderPool

# One statement, so totals, counts and edges come from the same snapshot of the database.
# Oldest and newest are one step each on the timestamp index.
_STATS = """
SELECT 'totals', NULL, checkpoints, total_size, stored_size FROM stats_totals WHERE id = 1
UNION ALL
SELECT dimension, key, n, NULL, NULL FROM stats_counts WHERE n > 0
UNION ALL
SELECT * FROM (SELECT 'oldest', id, name, timestamp, NULL FROM checkpoints
               ORDER BY timestamp ASC, seq ASC LIMIT 1)
UNION ALL
SELECT * FROM (SELECT 'newest', id, name, timestamp, NULL FROM checkpoints
               ORDER BY timestamp DESC, seq DESC LIMIT 1)
"""


async def read_stats(readers: ReaderPool) -> Stats:
    """Totals, counts by feature/priority/session, and the oldest and newest checkpoint."""
    count, total_size, stored_size = 0, 0, 0
    by: dict[str, dict[str, int]] = {"feature": {}, "priority": {}, "session": {}}
    edges: dict[str, CheckpointRef] = {}
    for kind, key, a, b, c in await readers.fetchall(_STATS):
        if kind == "totals":
            count, total_size, stored_size = a, b, c
        elif kind in ("oldest", "newest"):
            edges[kind] = _ref(key, a, b)
        else:
            by[kind][key] = a
    return Stats(
        total_checkpoints=count,
        total_size=total_size,
        stored_size=stored_size,
        average_size=total_size / count if count else 0.0,
        by_feature=dict(sorted(by["feature"].items())),
        by_priority=dict(sorted(by["priority"].items())),
        by_session=dict(sorted(by["session"].items())),
        oldest_checkpoint=edges.get("oldest"),
        newest_checkpoint=edges.get("newest"),
    )


def _ref(checkpoint_id: Any, name: Any, timestamp: Any) -> CheckpointRef:
    return CheckpointRef(str(checkpoint_id), str(name), parse_timestamp(timestamp))
