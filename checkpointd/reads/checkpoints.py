"""The read side: get, list, history and lineage over the projections, on reader connections."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import msgpack

from checkpointd.errors import ConflictError, IntegrityError, InvalidRequestError, NotFoundError
from checkpointd.events import store
from checkpointd.idempotency import Idempotency, decode_reply
from checkpointd.models import Checkpoint, History, Lineage, Page
from checkpointd.projections.checkpoints import COLUMNS
from checkpointd.query.where import compile_order_by, compile_where
from checkpointd.reads.search import SearchRequest, build_count_sql, build_sql, page_from_rows
from checkpointd.requests import non_negative_int, text
from checkpointd.rows import checkpoint_from_row
from checkpointd.snapshots import SnapshotCodec
from checkpointd.snapshots.blob import naming
from checkpointd.storage.readers import ReaderPool

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_HISTORY = 1000
# Snapshots bigger than this are decoded off the event loop.
_OFFLOAD_BYTES = 256 * 1024
_FROM = " FROM checkpoints"
_SELECT = f"SELECT {', '.join(COLUMNS)}{_FROM}"
# Row and blob in one statement, so a concurrent delete is seen entirely or not at all.
# Only ``checkpoints`` in FROM, so filter and order columns stay unambiguous.
_SELECT_WITH_BLOB = (
    f"SELECT {', '.join(COLUMNS)},"
    f" (SELECT b.data FROM blobs b WHERE b.seq = checkpoints.seq){_FROM}"
)


def _row(values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(COLUMNS, values, strict=True))


def page_bounds(page: Any, page_size: Any) -> tuple[int, int]:
    """Validated ``(page, page_size)``: page from 1, page size 1..1000."""
    page = non_negative_int(page, "page")
    page_size = non_negative_int(page_size, "pageSize")
    if page < 1:
        raise InvalidRequestError("pages start at 1", field="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"must be 1..{MAX_PAGE_SIZE}", field="pageSize")
    return page, page_size


class ReadModel:
    """Queries over the projections; snapshots decoded and verified on the way out."""

    def __init__(self, readers: ReaderPool, codec: SnapshotCodec, *, verify_checksums: bool):
        self.readers = readers
        self.codec = codec
        self._verify = verify_checksums

    async def get(self, checkpoint_id: str, *, include_snapshot: bool) -> Checkpoint | None:
        checkpoint_id = text(checkpoint_id, "id")
        select = _SELECT_WITH_BLOB if include_snapshot else _SELECT
        with naming(checkpoint_id):
            found = await self.readers.fetchone(f"{select} WHERE id = ?", (checkpoint_id,))
        if found is None:
            return None
        return await self._checkpoint(found, include_snapshot=include_snapshot)

    async def _checkpoint(self, values: Sequence[Any], *, include_snapshot: bool) -> Checkpoint:
        """A Checkpoint from a view row, the row's blob (if selected) decoded and verified."""
        if not include_snapshot:
            return checkpoint_from_row(_row(values), snapshot=None)
        row = _row(values[:-1])
        return checkpoint_from_row(row, snapshot=await self.decode(row, values[-1]))

    async def decode(self, row: Mapping[str, Any], blob: bytes | None) -> dict[str, Any]:
        """The snapshot of a view row from its blob; IntegrityError if missing or damaged."""
        checkpoint_id = row["id"]
        if blob is None:
            raise IntegrityError("snapshot bytes are missing", checkpoint_id=checkpoint_id)
        expected = row["checksum"] if self._verify else None
        return await self._decode_blob(
            checkpoint_id, bytes(blob), expected=expected, size=row["size"]
        )

    async def _decode_blob(
        self, key: str, blob: bytes, *, expected: str | None, size: int | None = None
    ) -> dict[str, Any]:
        decode = functools.partial(
            self.codec.decode, key, blob, expected_checksum=expected, expected_size=size
        )
        if len(blob) > _OFFLOAD_BYTES:
            return await asyncio.to_thread(decode)
        return decode()

    async def stored(self, checkpoint_id: str) -> tuple[dict[str, Any], bytes | None]:
        """The view row and the stored blob of a checkpoint, read together.

        Raises NotFoundError if there is no such checkpoint.
        """
        checkpoint_id = text(checkpoint_id, "id")
        with naming(checkpoint_id):
            found = await self.readers.fetchone(
                f"{_SELECT_WITH_BLOB} WHERE id = ?", (checkpoint_id,)
            )
        if found is None:
            raise NotFoundError("checkpoint", checkpoint_id)
        blob = found[-1]
        return _row(found[:-1]), None if blob is None else bytes(blob)

    async def session_state(self, session_id: str) -> tuple[dict[str, Any], int]:
        """A session's current state and its ``last_seq`` (``({}, 0)`` for an unknown session)."""
        found = await self.readers.fetchone(
            "SELECT s.state_key, s.last_seq, b.data FROM sessions s"
            " LEFT JOIN blobs b ON b.seq = s.state_ref WHERE s.session_id = ?",
            (session_id,),
        )
        if found is None:
            return {}, 0
        key, last_seq, blob = found
        if key is None or blob is None:
            return {}, last_seq
        state = await self._decode_blob(key, bytes(blob), expected=None)
        return state, last_seq

    async def restored_state(self, event_seq: int) -> dict[str, Any]:
        """The state a ``checkpoint.restored`` event stored (as its restore returned it).

        Raises NotFoundError if that event or its state blob is gone.
        """
        found = await self.readers.fetchone(
            "SELECT e.data, b.data FROM events e JOIN blobs b ON b.seq = e.seq"
            " WHERE e.seq = ? AND e.type = 'checkpoint.restored'",
            (event_seq,),
        )
        if found is None:
            raise NotFoundError("restored state of event", str(event_seq))
        data = msgpack.unpackb(bytes(found[0]), raw=False)
        return await self._decode_blob(data["stateId"], bytes(found[1]), expected=None)

    async def stored_reply(self, key: Idempotency) -> dict[str, Any] | None:
        """The reply stored under an idempotency key; ConflictError if it was another request."""
        found = await self.readers.fetchone(
            "SELECT digest, reply FROM idempotency WHERE key = ?", (key.key,)
        )
        if found is None:
            return None
        if bytes(found[0]) != key.digest:
            raise ConflictError(f"message id {key.key!r} was already used for another request")
        return decode_reply(bytes(found[1]))

    async def list(
        self,
        *,
        column: str,
        value: str,
        where: str | None,
        params: Sequence[Any],
        order_by: Any,
        page: int,
        page_size: int,
        include_snapshot: bool,
    ) -> Page:
        """One page of the checkpoints whose ``column`` equals ``value`` and match ``where``."""
        page, page_size = page_bounds(page, page_size)
        compiled = compile_where(where, params)
        order = compile_order_by(order_by)
        condition = f"{column} = ?" + (f" AND {compiled.sql}" if compiled.sql else "")
        args = (value, *compiled.params)
        count = f"SELECT count(*) FROM checkpoints WHERE {condition}"
        select = _SELECT_WITH_BLOB if include_snapshot else _SELECT
        # The total rides along as a last column (an uncorrelated subquery, computed once), so
        # a page is one query on one reader thread and its rows and total agree.
        rows = await self.readers.fetchall(
            f"{select.removesuffix(_FROM)}, ({count}){_FROM}"
            f" WHERE {condition} ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, *args, page_size, (page - 1) * page_size),
        )
        if rows:
            total = int(rows[0][-1])
        elif page == 1:
            total = 0
        else:  # past the last page: no row carried the total
            total_row = await self.readers.fetchone(count, args)
            total = 0 if total_row is None else int(total_row[0])
        items = [await self._checkpoint(v[:-1], include_snapshot=include_snapshot) for v in rows]
        return Page(items=tuple(items), total=total, page=page, page_size=page_size)

    async def search(self, request: SearchRequest) -> Page:
        """One page of search results (see ``checkpointd.reads.search``)."""
        sql, args = build_sql(request)
        page = page_from_rows(request, await self.readers.fetchall(sql, args))
        if not page.items and request.page > 1:
            sql, args = build_count_sql(request)
            found = await self.readers.fetchone(sql, args)
            page = replace(page, total=0 if found is None else int(found[0]))
        return page

    async def history(
        self,
        *,
        checkpoint_id: str | None,
        session_id: str | None,
        after_seq: int,
        limit: int,
    ) -> History:
        """Events oldest first, optionally of one checkpoint or one session."""
        after_seq = non_negative_int(after_seq, "afterSeq")
        limit = non_negative_int(limit, "limit")
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidRequestError(f"must be 1..{MAX_HISTORY}", field="limit")
        if checkpoint_id is not None and session_id is not None:
            raise InvalidRequestError("give checkpointId or sessionId, not both")
        condition, args = "seq > ?", list[object]([after_seq])
        if checkpoint_id is not None:
            condition += " AND stream = ?"
            args.append(text(checkpoint_id, "checkpointId"))
        elif session_id is not None:
            condition += " AND session_id = ?"
            args.append(text(session_id, "sessionId"))
        rows = await self.readers.fetchall(
            f"{store.SELECT} WHERE {condition} ORDER BY seq LIMIT ?", (*args, limit + 1)
        )
        events = tuple(store.from_row(row).to_model() for row in rows[:limit])
        more = len(rows) > limit
        return History(events=events, next=events[-1].seq if more and events else None)

    async def lineage(self, checkpoint_id: str) -> Lineage:
        """Live ancestors and descendants, nearest first; follows links through deleted ones."""
        checkpoint_id = text(checkpoint_id, "id")
        up = await self._related(checkpoint_id, near="child", far="parent")
        down = await self._related(checkpoint_id, near="parent", far="child")
        return Lineage(ancestors=up, descendants=down)

    async def _related(self, start: str, *, near: str, far: str) -> tuple[Checkpoint, ...]:
        # The recursive CTE collects the reachable set (UNION stops at cycles, and there is no
        # depth limit); distances are then computed from the fetched edges by BFS.
        reach = (
            f"WITH RECURSIVE reach(id) AS (SELECT ? UNION"
            f" SELECT l.{far} FROM lineage l JOIN reach r ON l.{near} = r.id)"
        )
        edges = await self.readers.fetchall(
            f"{reach} SELECT l.{near}, l.{far} FROM lineage l"
            f" WHERE l.{near} IN (SELECT id FROM reach) ORDER BY l.seq",
            (start,),
        )
        rows = await self.readers.fetchall(
            f"{reach} {_SELECT} WHERE id IN (SELECT id FROM reach) AND id != ?", (start, start)
        )
        distance = _distances(start, edges)
        found = [_row(values) for values in rows]
        found.sort(key=lambda r: (distance.get(r["id"], 0), r["seq"]))
        return tuple(checkpoint_from_row(r, snapshot=None) for r in found)


def _distances(start: str, edges: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    neighbours: dict[str, list[str]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
    distance = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in neighbours.get(node, ()):
            if nxt not in distance:
                distance[nxt] = distance[node] + 1
                queue.append(nxt)
    return distance
