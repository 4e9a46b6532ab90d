"""Sessions: one session's current state, and every session with its counts and last event.

Both read the maintained projections (``sessions``, the stats counters) and the log's session
index, one statement each, so what they return comes from one snapshot of the database.
"""

from __future__ import annotations

import asyncio
import functools

from checkpointd.clock import parse_timestamp
from checkpointd.errors import IntegrityError, NotFoundError
from checkpointd.reads.checkpoints import decodes_off_loop, page_bounds
from checkpointd.requests import text
from checkpointd.results import SessionPage, SessionState, SessionSummary
from checkpointd.snapshots import SnapshotCodec
from checkpointd.storage.readers import ReaderPool

_STATE = (
    "SELECT s.state_key, s.checkpoint_id, s.restored_from, s.last_seq, s.updated_at, b.data"
    " FROM sessions s LEFT JOIN blobs b ON b.seq = s.state_ref WHERE s.session_id = ?"
)
# Last activity is the session's newest event (one step on the events_session index), so an
# update or a delete counts, not only what moved the session's state.
_FROM = (
    " FROM sessions s"
    " LEFT JOIN stats_counts n ON n.dimension = 'session' AND n.key = s.session_id"
    " JOIN events e ON e.seq = (SELECT MAX(seq) FROM events WHERE session_id = s.session_id)"
)
_PAGE = (
    "SELECT s.session_id, COALESCE(n.n, 0), s.checkpoint_id, s.restored_from, e.seq, e.at,"
    f" count(*) OVER (){_FROM} ORDER BY e.seq DESC LIMIT ? OFFSET ?"
)


async def read_session_state(
    readers: ReaderPool, codec: SnapshotCodec, session_id: str
) -> SessionState:
    """The session's current state (``{}`` once every checkpoint it had is gone).

    Raises:
        NotFoundError: the log has no such session.
        IntegrityError: the state's stored bytes are missing or damaged.
    """
    session_id = text(session_id, "sessionId")
    found = await readers.fetchone(_STATE, (session_id,))
    if found is None:
        raise NotFoundError("session", session_id)
    key, checkpoint_id, restored_from, last_seq, updated_at, blob = found
    state = {}
    if key is not None:
        if blob is None:
            raise IntegrityError(f"the state of session {session_id!r} has no stored bytes")
        decode = functools.partial(
            codec.decode, key, bytes(blob), expected_checksum=None, expected_size=None
        )
        # No size is recorded for a state: 1 KB stored may be megabytes decoded.
        off_loop = decodes_off_loop(len(blob), None)
        state = await asyncio.to_thread(decode) if off_loop else decode()
    return SessionState(
        session_id=session_id,
        state=state,
        checkpoint_id=checkpoint_id,
        restored_from=restored_from,
        last_seq=int(last_seq),
        updated_at=parse_timestamp(updated_at),
    )


async def read_sessions(readers: ReaderPool, page: int, page_size: int) -> SessionPage:
    """One page of sessions, the most recently active first.

    Raises InvalidRequestError for a page below 1 or a page size outside 1..1000.
    """
    page, page_size = page_bounds(page, page_size)
    rows = await readers.fetchall(_PAGE, (page_size, (page - 1) * page_size))
    if rows:
        total = int(rows[0][-1])
    else:  # past the last page (or none at all): no row carried the total
        counted = await readers.fetchone(f"SELECT count(*){_FROM}")
        total = 0 if counted is None else int(counted[0])
    items = tuple(
        SessionSummary(
            session_id=session_id,
            checkpoints=int(count),
            checkpoint_id=checkpoint_id,
            restored_from=restored_from,
            last_seq=int(seq),
            last_activity=parse_timestamp(at),
        )
        for session_id, count, checkpoint_id, restored_from, seq, at, _ in rows
    )
    return SessionPage(items=items, total=total, page=page, page_size=page_size)
