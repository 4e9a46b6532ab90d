"""Lineage reads: a checkpoint's live ancestors and descendants, nearest first, a page at a time.

Relatives are ordered by distance (links followed), then creation order; links through deleted
checkpoints are followed, the deleted ones left out. SQLite collects the reachable links on a
reader thread; ranking them (a breadth-first walk) and building the page's checkpoints run on
a worker thread when there are many, and only the page's checkpoints are read: a checkpoint
with 20,000 children costs the event loop milliseconds, not seconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from checkpointd.errors import InvalidRequestError
from checkpointd.models import Checkpoint, Lineage
from checkpointd.projections.checkpoints import COLUMNS
from checkpointd.requests import MAX_LINEAGE, non_negative_int, text
from checkpointd.rows import checkpoint_from_row
from checkpointd.storage.readers import ReaderPool

# Fewer links than this are ranked, and fewer rows built, on the event loop (a worker hop
# costs more than that).
_INLINE_LINKS = 1000
_INLINE_ROWS = 100


def lineage_bounds(limit: Any, offset: Any) -> tuple[int, int]:
    """Validated ``(limit, offset)``: limit 1..MAX_LINEAGE, offset from 0."""
    limit = non_negative_int(limit, "limit")
    offset = non_negative_int(offset, "offset")
    if not 1 <= limit <= MAX_LINEAGE:
        raise InvalidRequestError(f"must be 1..{MAX_LINEAGE}", field="limit")
    return limit, offset


async def read_lineage(
    readers: ReaderPool, checkpoint_id: str, *, limit: int = MAX_LINEAGE, offset: int = 0
) -> Lineage:
    """Up to ``limit`` ancestors and ``limit`` descendants, nearest first, skipping ``offset``.

    ``next`` is the ``offset`` of the following page, None once both lists are complete.
    Offsets index the order at the time of each call: a concurrent create or delete can shift
    a page by the checkpoints it added or removed (as list pages shift).
    """
    checkpoint_id = text(checkpoint_id, "id")
    limit, offset = lineage_bounds(limit, offset)
    window = slice(offset, offset + limit)
    up, more_up = await _related(readers, checkpoint_id, window, near="child", far="parent")
    down, more_down = await _related(readers, checkpoint_id, window, near="parent", far="child")
    following = offset + limit if more_up or more_down else None
    return Lineage(ancestors=up, descendants=down, next=following)


async def _related(
    readers: ReaderPool, start: str, window: slice, *, near: str, far: str
) -> tuple[tuple[Checkpoint, ...], bool]:
    """One direction's relatives in ``window`` (of the nearest-first order), and whether more
    follow."""
    # The recursive CTE collects the reachable set (UNION stops at cycles, and there is no
    # depth limit). Each link carries its far end's creation seq, NULL once that is deleted.
    links = await readers.fetchall(
        f"WITH RECURSIVE reach(id) AS (SELECT ? UNION"
        f" SELECT l.{far} FROM lineage l JOIN reach r ON l.{near} = r.id)"
        f" SELECT l.{near}, l.{far}, (SELECT c.seq FROM checkpoints c WHERE c.id = l.{far})"
        f" FROM lineage l WHERE l.{near} IN (SELECT id FROM reach) ORDER BY l.seq",
        (start,),
    )
    if len(links) < _INLINE_LINKS:
        ranked = _ranked(start, links, window.stop + 1)
    else:
        ranked = await asyncio.to_thread(_ranked, start, links, window.stop + 1)
    wanted = ranked[window]
    if not wanted:
        return (), False
    marks = ", ".join("?" * len(wanted))
    rows = await readers.fetchall(
        f"SELECT {', '.join(COLUMNS)} FROM checkpoints WHERE id IN ({marks})", wanted
    )
    if len(rows) < _INLINE_ROWS:
        page = _checkpoints(wanted, rows)
    else:
        page = await asyncio.to_thread(_checkpoints, wanted, rows)
    return page, len(ranked) > window.stop


def _checkpoints(wanted: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[Checkpoint, ...]:
    """The checkpoints of ``rows`` in the order of ``wanted``."""
    found = {row["id"]: row for row in (dict(zip(COLUMNS, v, strict=True)) for v in rows)}
    # A checkpoint deleted since the links were read is left out of this page.
    return tuple(checkpoint_from_row(found[i], snapshot=None) for i in wanted if i in found)


def _ranked(start: str, links: Sequence[tuple[Any, ...]], count: int) -> list[str]:
    """The first ``count`` live checkpoints reachable from ``start``: nearest, then oldest."""
    neighbours: dict[str, list[str]] = {}
    live: dict[str, int] = {}
    for near, far, seq in links:
        neighbours.setdefault(near, []).append(far)
        if seq is not None:
            live[far] = seq
    distance = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in neighbours.get(node, ()):
            if nxt not in distance:
                distance[nxt] = distance[node] + 1
                queue.append(nxt)
    ranked = sorted((node for node in live if node != start), key=lambda n: (distance[n], live[n]))
    return ranked[:count]
