"""Check the event log from event 0: its hash chain, its signed heads, and the checkpoints view.

What a successful verify proves:
- Always: ``seq`` is gapless from 1 and every event's hash chains to its predecessor, so no
  event was damaged, removed or reordered, and none was edited without recomputing every hash
  after it. A deliberate rewrite (edit, then re-hash to the end) or a cut tail passes this part.
- With a chain key (an encryption key is configured): every signed head whose key is known
  authenticates and names an event with the hash it signed, so the log up to the newest signed
  head (``signed_seq``) is the one the writer wrote; the ``unsigned_tail`` events after it are
  covered by the chain only (see ``events.signing`` for what stays unproven).
- Each checkpoint's view row records the checksum and size of its create event, so a view row
  edited along with its snapshot is found.

On failure, ``first_bad_seq`` is the first ``seq`` the check cannot vouch for, ``events`` the
count before it, and ``problem`` says what was found.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from checkpointd.errors import IntegrityError
from checkpointd.events import signing, store
from checkpointd.events.domain import CheckpointCreated, decode
from checkpointd.events.signing import ChainKeys, SignedHead
from checkpointd.events.types import GENESIS_HASH, EventRecord
from checkpointd.models import VerifyResult

Progress = Callable[[int], None]
T = TypeVar("T")
_VIEW_ROWS = "SELECT seq, id, checksum, size FROM views.checkpoints ORDER BY seq"


def _read_only(path: str) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"  # as_uri escapes '?', '#', '%' in paths


_END = 2**63  # past any seq


def verify_chain(
    conn: sqlite3.Connection, progress: Progress | None = None, keys: ChainKeys | None = None
) -> VerifyResult:
    """Check the log as the module docstring says; ``keys`` None checks no signed heads.

    Reads in one read transaction so a concurrent writer cannot make the scan inconsistent.
    ``progress(events_so_far)`` is called every 10,000 events.
    """
    conn.execute("BEGIN")
    try:
        return _Scan(conn, keys).run(progress)
    finally:
        conn.execute("COMMIT")


def verify_file(
    path: str,
    progress: Progress | None = None,
    keys: ChainKeys | None = None,
    views_path: str | None = None,
) -> VerifyResult:
    """``verify_chain`` on a fresh read-only connection to the log at ``path``, with the views
    file at ``views_path`` attached when there is one (its rows are checked too)."""
    conn = sqlite3.connect(_read_only(path), uri=True, isolation_level=None)
    try:
        if views_path is not None and Path(views_path).exists():
            conn.execute("ATTACH DATABASE ? AS views", (_read_only(views_path),))
        return verify_chain(conn, progress, keys)
    finally:
        conn.close()


class _Ahead(Generic[T]):
    """Items in ``seq`` order, taken up to a given ``seq`` as the scan of the log passes it."""

    def __init__(self, items: Iterator[T], seq_of: Callable[[T], int]) -> None:
        self._items = items
        self._seq_of = seq_of
        self._next = next(items, None)

    def through(self, seq: int) -> Iterator[T]:
        """The items whose ``seq`` is at most ``seq`` (every one left, for None)."""
        while self._next is not None and self._seq_of(self._next) <= seq:
            item, self._next = self._next, next(self._items, None)
            yield item


class _Scan:
    def __init__(self, conn: sqlite3.Connection, keys: ChainKeys | None) -> None:
        self._conn = conn
        self._keys = keys
        heads = signing.scan(conn) if keys is not None else iter(())
        self._heads = _Ahead(heads, lambda head: head.seq)
        attached = {row[1] for row in conn.execute("PRAGMA database_list")}
        rows = conn.execute(_VIEW_ROWS) if "views" in attached else iter(())
        self._rows: _Ahead[tuple[Any, ...]] = _Ahead(rows, lambda r: r[0])
        self._signed = 0  # the newest signed head that held

    def run(self, progress: Progress | None) -> VerifyResult:
        prev_hash, good = GENESIS_HASH, 0
        for record in store.scan(self._conn):
            if record.seq != good + 1:
                return self._failed(good + 1, f"event {good + 1} is missing")
            if record.prev_hash != prev_hash or record.expected_hash() != record.hash:
                return self._failed(record.seq, f"event {record.seq} does not match its hash")
            failed = self._heads_at(record, good) or self._rows_at(record)
            if failed is not None:
                return failed
            prev_hash, good = record.hash, good + 1
            if progress is not None and good % 10_000 == 0:
                progress(good)
        return self._heads_at(None, good) or self._rows_at(None) or self._passed(good)

    def _heads_at(self, record: EventRecord | None, last: int) -> VerifyResult | None:
        """Check the signed heads of ``record``'s seq (None: every one past the end of the log)."""
        for head in self._heads.through(_END if record is None else record.seq):
            if record is not None and head.seq != record.seq:  # seq < 1: no writer made it
                return self._failed(record.seq, f"the signed head of seq {head.seq} is forged")
            if (failed := self._head(head, record, last)) is not None:
                return failed
        return None

    def _head(self, head: SignedHead, record: EventRecord | None, last: int) -> VerifyResult | None:
        assert self._keys is not None
        authentic = head.authentic(self._keys)
        if authentic is None:
            return None  # made with a key that is not configured: it proves nothing either way
        if not authentic:
            where = last + 1 if record is None else head.seq
            return self._failed(where, f"the signed head of seq {head.seq} is forged or edited")
        if record is None:
            return self._failed(
                last + 1,
                f"seq {head.seq} was signed but the log ends at seq {last}: events were removed",
            )
        if record.hash != head.hash:
            return self._failed(
                self._signed + 1,
                f"event {head.seq} is not the one signed: the log after seq {self._signed}"
                " was rewritten",
            )
        self._signed = head.seq
        return None

    def _rows_at(self, record: EventRecord | None) -> VerifyResult | None:
        """Check the view rows of ``record``'s ``seq`` (None: those past the end of the log)."""
        rows = self._rows.through(_END if record is None else record.seq)
        for seq, checkpoint_id, checksum, size in rows:
            named = f"checkpoint {checkpoint_id!r}"
            created = None if record is None or record.seq != seq else _created(record)
            if created is None or record is None or record.stream != checkpoint_id:
                return self._failed(seq, f"{named}: its view row has no create event at seq {seq}")
            logged = (created.checksum, created.size)
            if logged != (checksum, size):
                return self._failed(
                    seq,
                    f"{named}: its view row records checksum {checksum!s:.80} and size"
                    f" {size!s:.20}, its create event {logged[0]!s:.80} and {logged[1]!s:.20}:"
                    " the row was edited (`checkpointd rebuild` restores it from the log; then"
                    " validate the checkpoint)",
                )
        return None

    def _failed(self, seq: int, problem: str) -> VerifyResult:
        return VerifyResult(
            ok=False,
            events=seq - 1,
            first_bad_seq=seq,
            signed_seq=self._signed_seq(),
            problem=problem,
        )

    def _passed(self, events: int) -> VerifyResult:
        return VerifyResult(
            ok=True,
            events=events,
            first_bad_seq=None,
            signed_seq=self._signed_seq(),
            unsigned_tail=None if self._keys is None else events - self._signed,
        )

    def _signed_seq(self) -> int | None:
        return self._signed or None


def _created(record: EventRecord) -> CheckpointCreated | None:
    """The create event ``record`` holds (None: another type, or data that does not decode)."""
    try:
        event = decode(record)
    except IntegrityError:
        return None
    return event if isinstance(event, CheckpointCreated) else None
