"""The read side: get, list, history and lineage over the projections, on reader connections."""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import msgpack

from checkpointd.errors import (
    ConflictError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    TooLargeError,
)
from checkpointd.events import store
from checkpointd.models import Checkpoint, History, Lineage, Page
from checkpointd.projections.checkpoints import COLUMNS
from checkpointd.query.where import compile_order_by, compile_where
from checkpointd.reads.lineage import read_lineage
from checkpointd.reads.search import SearchRequest, build_count_sql, build_sql, page_from_rows
from checkpointd.requests import MAX_LINEAGE, non_negative_int, text
from checkpointd.results import PendingWrite
from checkpointd.rows import checkpoint_from_row
from checkpointd.snapshots import SnapshotCodec
from checkpointd.snapshots.blob import naming
from checkpointd.storage.readers import ReaderPool
from checkpointd.write.idempotency import Idempotency, decode_reply

MAX_PAGE_SIZE = 1000
MAX_HISTORY = 1000
# Snapshots bigger than this (decoded) are decoded off the event loop.
OFFLOAD_BYTES = 256 * 1024
_SIZE = COLUMNS.index("size")
_FROM = " FROM checkpoints"
_SELECT = f"SELECT {', '.join(COLUMNS)}{_FROM}"
# Row and blob in one statement, so a concurrent delete is seen entirely or not at all.
# Only ``checkpoints`` in FROM, so filter and order columns stay unambiguous.
_SELECT_WITH_BLOB = (
    f"SELECT {', '.join(COLUMNS)},"
    f" (SELECT b.data FROM blobs b WHERE b.seq = checkpoints.seq){_FROM}"
)


# The checkpoint's liveness and its writes in one statement (a first row with a NULL id: not
# live; writes columns NULL: no writes), so a concurrent delete is seen entirely or not at all.
_WRITES = (
    "SELECT c.id, w.task_id, w.task_path, w.idx, w.channel, w.seq, w.position"
    " FROM (SELECT 1) LEFT JOIN checkpoints c ON c.id = ?"
    " LEFT JOIN writes w ON w.checkpoint_id = c.id"
    " ORDER BY w.task_path, w.task_id, w.idx"
)


def _row(values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(COLUMNS, values, strict=True))


def decodes_off_loop(stored_size: int, size: int | None) -> bool:
    """Whether a blob is decoded on a worker thread rather than on the event loop.

    Decided by the recorded (decoded) ``size``, not the stored one: 1 KB of zstd or gzip can
    expand to megabytes. A blob whose size was not recorded is always decoded off the loop.
    """
    return size is None or max(stored_size, size) > OFFLOAD_BYTES


def page_bounds(page: Any, page_size: Any) -> tuple[int, int]:
    """Validated ``(page, page_size)``: page from 1, page size 1..1000."""
    page = non_negative_int(page, "page")
    page_size = non_negative_int(page_size, "pageSize")
    if page < 1:
        raise InvalidRequestError("pages start at 1", field="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"must be 1..{MAX_PAGE_SIZE}", field="pageSize")
    return page, page_size


_REMOVED = (
    "SELECT 1 FROM events WHERE stream = ?"
    " AND type IN ('checkpoint.deleted', 'checkpoint.expired') LIMIT 1"
)


class ReadModel:
    """Queries over the projections; snapshots decoded and verified on the way out."""

    def __init__(
        self,
        readers: ReaderPool,
        codec: SnapshotCodec,
        *,
        verify_checksums: bool,
        max_page_snapshots: int,
    ):
        self.readers = readers
        self.codec = codec
        self._verify = verify_checksums
        # The most snapshot bytes (recorded sizes) one list page may carry.
        self._max_page_snapshots = max_page_snapshots

    async def get(self, checkpoint_id: str, *, include_snapshot: bool) -> Checkpoint | None:
        checkpoint_id = text(checkpoint_id, "id")
        select = _SELECT_WITH_BLOB if include_snapshot else _SELECT
        with naming(checkpoint_id):
            found = await self.readers.fetchone(f"{select} WHERE id = ?", (checkpoint_id,))
        if found is None:
            return None
        if include_snapshot and found[-1] is None and await self.removed(checkpoint_id):
            return None  # deleted after this read began: the views had not shown it yet
        return await self._checkpoint(found, include_snapshot=include_snapshot)

    async def removed(self, checkpoint_id: str) -> bool:
        """Whether the log has the checkpoint's delete or expiry.

        The views follow the log: a checkpoint deleted while a read runs can still have its
        view row when its snapshot is already gone. Such a row reads as absent, not as damage.
        """
        found = await self.readers.fetchone(_REMOVED, (checkpoint_id,), views=False)
        return found is not None

    async def _checkpoint(self, values: Sequence[Any], *, include_snapshot: bool) -> Checkpoint:
        """A Checkpoint from a view row, the row's blob (if selected) decoded and verified."""
        if not include_snapshot:
            return checkpoint_from_row(_row(values), snapshot=None)
        row = _row(values[:-1])
        return checkpoint_from_row(row, snapshot=await self.decode(row, values[-1]))

    def _checkpoints(self, rows: Sequence[Sequence[Any]]) -> tuple[Checkpoint, ...]:
        """Checkpoints from view rows with their blobs, decoded and verified here and now."""
        found = []
        for values in rows:
            row = _row(values[:-1])
            snapshot = self._open(row["id"], values[-1], row["checksum"], row["size"])
            found.append(checkpoint_from_row(row, snapshot=snapshot))
        return tuple(found)

    def _open(
        self, checkpoint_id: str, blob: bytes | None, checksum: str, size: int
    ) -> dict[str, Any]:
        if blob is None:
            raise IntegrityError("snapshot bytes are missing", checkpoint_id=checkpoint_id)
        return self.codec.decode(
            checkpoint_id,
            bytes(blob),
            expected_checksum=checksum if self._verify else None,
            expected_size=size,
        )

    async def decode(self, row: Mapping[str, Any], blob: bytes | None) -> dict[str, Any]:
        """The snapshot of a view row from its blob; IntegrityError if missing or damaged."""
        decode = functools.partial(self._open, row["id"], blob, row["checksum"], row["size"])
        if decodes_off_loop(0 if blob is None else len(blob), row["size"]):
            return await asyncio.to_thread(decode)
        return decode()

    async def _decode_blob(
        self, key: str, blob: bytes, *, expected: str | None, size: int | None = None
    ) -> dict[str, Any]:
        decode = functools.partial(
            self.codec.decode, key, blob, expected_checksum=expected, expected_size=size
        )
        if decodes_off_loop(len(blob), size):
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
        blob = None if found is None else found[-1]
        if found is None or (blob is None and await self.removed(checkpoint_id)):
            raise NotFoundError("checkpoint", checkpoint_id)
        return _row(found[:-1]), None if blob is None else bytes(blob)

    async def session_state(self, session_id: str) -> tuple[dict[str, Any], int, frozenset[str]]:
        """A session's current state, its ``last_seq`` and the checkpoints that state holds
        values of (``({}, 0, frozenset())`` for an unknown session)."""
        found = await self.readers.fetchone(
            "SELECT s.state_key, s.last_seq, b.data, s.checkpoint_id, s.state_ref"
            " FROM sessions s LEFT JOIN blobs b ON b.seq = s.state_ref WHERE s.session_id = ?",
            (session_id,),
        )
        if found is None:
            return {}, 0, frozenset()
        key, last_seq, blob, checkpoint_id, ref = found
        if checkpoint_id is not None:
            sources = frozenset((checkpoint_id,))
        elif ref is not None:
            rows = await self.readers.fetchall(
                "SELECT checkpoint_id FROM restore_sources WHERE seq = ?", (ref,)
            )
            sources = frozenset(source for (source,) in rows)
        else:
            sources = frozenset()
        if key is None or blob is None:
            return {}, last_seq, sources
        state = await self._decode_blob(key, bytes(blob), expected=None)
        return state, last_seq, sources

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
        """One page of the checkpoints whose ``column`` equals ``value`` and match ``where``.

        With ``include_snapshot``, the page's snapshots may total at most the reader's
        ``max_page_snapshots`` bytes (their recorded sizes); a bigger page raises TooLargeError
        before any snapshot is read or decoded. A page of one is never refused.
        """
        page, page_size = page_bounds(page, page_size)
        compiled = compile_where(where, params)
        order = compile_order_by(order_by)
        condition = f"{column} = ?" + (f" AND {compiled.sql}" if compiled.sql else "")
        args = (value, *compiled.params)
        window = (*args, page_size, (page - 1) * page_size)
        count = f"SELECT count(*) FROM checkpoints WHERE {condition}"
        page_sql = f" WHERE {condition} ORDER BY {order} LIMIT ? OFFSET ?"
        columns, column_args = _SELECT.removesuffix(_FROM), tuple[Any, ...]()
        if include_snapshot:
            # The blobs come along only if the page's snapshots fit (the page's sizes summed
            # by an uncorrelated subquery, computed once), so a page too big reads none.
            fits = f"(SELECT sum(size) FROM (SELECT size{_FROM}{page_sql})) <= ? OR ? = 1"
            blob = "(SELECT b.data FROM blobs b WHERE b.seq = checkpoints.seq)"
            columns += f", CASE WHEN {fits} THEN {blob} END"
            column_args = (*window, self._max_page_snapshots, page_size)
        # The total rides along as a last column (an uncorrelated subquery, computed once), so
        # a page is one query on one reader thread and its rows, blobs and total agree.
        rows = await self.readers.fetchall(
            f"{columns}, ({count}){_FROM}{page_sql}", (*column_args, *args, *window)
        )
        if rows:
            total = int(rows[0][-1])
        elif page == 1:
            total = 0
        else:  # past the last page: no row carried the total
            total_row = await self.readers.fetchone(count, args)
            total = 0 if total_row is None else int(total_row[0])
        rows = [v[:-1] for v in rows]
        if include_snapshot:
            items = await self._decoded_page(rows, page_size)
        else:
            items = tuple(checkpoint_from_row(_row(v), snapshot=None) for v in rows)
        return Page(items=items, total=total, page=page, page_size=page_size)

    async def _decoded_page(
        self, rows: Sequence[Sequence[Any]], page_size: int
    ) -> tuple[Checkpoint, ...]:
        """The page's checkpoints with their snapshots; the whole page off the loop if big."""
        size = sum(v[_SIZE] for v in rows)
        if size > self._max_page_snapshots and page_size > 1:
            raise TooLargeError(
                f"a page of {len(rows)} snapshots",
                size,
                self._max_page_snapshots,
                hint="lower pageSize, or leave snapshots out (includeSnapshot: false)",
            )
        if any(values[-1] is None for values in rows):  # deleted while this read ran?
            rows = [
                values
                for values in rows
                if values[-1] is not None or not await self.removed(_row(values[:-1])["id"])
            ]
        if decodes_off_loop(sum(len(v[-1] or b"") for v in rows), size):
            return await asyncio.to_thread(self._checkpoints, rows)
        return self._checkpoints(rows)

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

    async def writes(self, checkpoint_id: str) -> builtins.list[PendingWrite]:
        """The checkpoint's pending writes in (task path, task id, index) order.

        Raises NotFoundError for a checkpoint that is not live, IntegrityError when a value's
        bytes are damaged or missing.
        """
        checkpoint_id = text(checkpoint_id, "checkpointId")
        rows = await self.readers.fetchall(_WRITES, (checkpoint_id,))
        if not rows or rows[0][0] is None:  # the first row says whether the checkpoint is live
            raise NotFoundError("checkpoint", checkpoint_id)
        rows = [row for row in rows if row[1] is not None]
        if not rows:
            return []
        seqs = sorted({row[5] for row in rows})
        marks = ", ".join("?" * len(seqs))
        stored = await self.readers.fetchall(
            f"SELECT e.seq, e.data, b.data FROM events e LEFT JOIN blobs b ON b.seq = e.seq"
            f" WHERE e.seq IN ({marks})",
            seqs,
        )
        if any(blob is None for _, _, blob in stored) and await self.removed(checkpoint_id):
            raise NotFoundError("checkpoint", checkpoint_id)  # deleted while this read ran
        blobs = {seq: (bytes(data), blob) for seq, data, blob in stored}
        size = sum(len(blob or b"") for _, blob in blobs.values())
        values = functools.partial(self._write_values, checkpoint_id, blobs)
        opened = await asyncio.to_thread(values) if size > OFFLOAD_BYTES else values()
        return [
            PendingWrite(task_id, task_path, index, channel, opened[seq][position])
            for _, task_id, task_path, index, channel, seq, position in rows
        ]

    def _write_values(
        self, checkpoint_id: str, blobs: Mapping[int, tuple[bytes, bytes | None]]
    ) -> dict[int, builtins.list[Any]]:
        """Each writes event's values, from its blob, checked against the event's checksum."""
        opened = {}
        for seq, (data, blob) in blobs.items():
            event = msgpack.unpackb(data, raw=False)
            if blob is None:
                raise IntegrityError(
                    "pending writes' bytes are missing", checkpoint_id=checkpoint_id
                )
            decoded = self.codec.decode(
                checkpoint_id,
                bytes(blob),
                expected_checksum=event["checksum"],
                expected_size=event["size"],
            )
            opened[seq] = decoded["values"]
        return opened

    async def lineage(
        self, checkpoint_id: str, *, limit: int = MAX_LINEAGE, offset: int = 0
    ) -> Lineage:
        """A page of live ancestors and descendants, nearest first (see ``read_lineage``)."""
        return await read_lineage(self.readers, checkpoint_id, limit=limit, offset=offset)
