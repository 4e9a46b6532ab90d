"""Signed chain heads: the head of the hash chain, authenticated with a key only the store holds.

The hash chain (``events.types``) reveals damage and edits made without recomputing hashes, but
not a deliberate rewrite: whoever can write the file can edit an event and recompute every hash
after it, or cut the tail off, and the chain still holds. So when an encryption key is
configured the writer also records signed heads in ``chain_heads``: an event's ``seq`` and
``hash``, when and with which key, and an HMAC-SHA256 over them keyed by the chain key, which is
derived from the active encryption key with HKDF (info ``CHAIN_KEY_INFO``). An event's hash
covers every event before it, so one signed head vouches for the whole log up to its ``seq``.
The writer signs after a commit group at most every ``SIGN_INTERVAL``, and once more when it
closes; ``events.verify`` checks every signed head against the log.

Not proven: the events after the newest signed head (up to ``SIGN_INTERVAL``'s worth while the
writer runs, and those of the last interval after a crash); a file rolled back whole to an
earlier state, its newer signed heads deleted along with the events (only a signed head kept
outside the file reveals that: the writer logs the one it records on close); and anything done
by someone who holds the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgpack
import structlog

from checkpointd.clock import Clock, format_timestamp

log = structlog.get_logger("checkpointd.chain")

CHAIN_KEY_INFO = b"checkpointd chain head v1"
SIGN_INTERVAL = timedelta(seconds=10)
_COLUMNS = "seq, hash, key_id, at, mac"


class KeySource(Protocol):
    """Where chain keys come from: the snapshot keyring (``snapshots.crypto.Keyring``)."""

    @property
    def active_id(self) -> str | None: ...

    def derive(self, purpose: bytes) -> dict[str, bytes]: ...


@dataclass(frozen=True, slots=True)
class ChainKeys:
    """The chain keys by the id of the encryption key each was derived from.

    Heads are signed with ``active_id``'s key (None: check only) and checked with any of them,
    so heads signed before a key rotation stay checkable while the old key is configured.
    """

    active_id: str | None
    keys: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def from_keyring(cls, keyring: KeySource | None) -> ChainKeys | None:
        """The chain keys of a keyring; None without one (the chain is then unkeyed)."""
        if keyring is None:
            return None
        return cls(keyring.active_id, keyring.derive(CHAIN_KEY_INFO))


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A row of ``chain_heads``: event ``seq`` had ``hash`` when it was signed, ``at``."""

    seq: int
    hash: bytes
    key_id: str
    at: str
    mac: bytes

    def authentic(self, keys: ChainKeys) -> bool | None:
        """Whether the MAC holds; None if it was made with a key ``keys`` does not have."""
        key = keys.keys.get(self.key_id)
        if key is None:
            return None
        expected = _mac(key, self.seq, self.hash, self.key_id, self.at)
        return hmac.compare_digest(self.mac, expected)


def sign(keys: ChainKeys, seq: int, head_hash: bytes, at: str) -> SignedHead:
    """The signed head of event ``seq`` with ``head_hash``, made with the active chain key."""
    if keys.active_id is None:
        raise ValueError("no active key to sign with")
    mac = _mac(keys.keys[keys.active_id], seq, head_hash, keys.active_id, at)
    return SignedHead(seq, head_hash, keys.active_id, at, mac)


def _mac(key: bytes, seq: int, head_hash: bytes, key_id: str, at: str) -> bytes:
    message = msgpack.packb(["checkpointd chain head", seq, head_hash, key_id, at])
    return hmac.new(key, message, hashlib.sha256).digest()


# -- the table ----------------------------------------------------------------------------------


def record(conn: sqlite3.Connection, head: SignedHead) -> None:
    """Insert a signed head (in the caller's transaction)."""
    conn.execute(
        f"INSERT INTO chain_heads ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
        (head.seq, head.hash, head.key_id, head.at, head.mac),
    )


def newest(conn: sqlite3.Connection) -> SignedHead | None:
    """The signed head with the highest ``seq``, if any."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM chain_heads ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else _from_row(row)


def scan(conn: sqlite3.Connection) -> Iterator[SignedHead]:
    """Every signed head in ``seq`` order."""
    for row in conn.execute(f"SELECT {_COLUMNS} FROM chain_heads ORDER BY seq"):
        yield _from_row(row)


def _from_row(row: Sequence[Any]) -> SignedHead:
    # Coerced rather than trusted: a row of another type (someone edited the table) must fail
    # its check, not crash the verify. ``seq`` is the rowid, always an integer.
    seq, head_hash, key_id, at, mac = row
    return SignedHead(seq, _blob(head_hash), str(key_id), str(at), _blob(mac))


def _blob(value: Any) -> bytes:
    return bytes(value) if isinstance(value, bytes | memoryview) else b""


# -- the writer's side --------------------------------------------------------------------------


class HeadSigner:
    """Records signed heads on the writer's connection; used on the writer thread only."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        keys: ChainKeys,
        clock: Clock,
        interval: timedelta = SIGN_INTERVAL,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._interval = interval
        head = newest(conn)
        self._signed_seq = 0 if head is None else head.seq
        self._signed_at: datetime | None = None  # the first group after opening is signed
        if head is not None and not _matches(conn, head):
            log.error(
                "the event log does not match its newest signed head: run `checkpointd verify`",
                signed_seq=head.seq,
            )

    @classmethod
    def open(
        cls, conn: sqlite3.Connection, keys: ChainKeys | None, clock: Clock
    ) -> HeadSigner | None:
        """A signer for the writer's connection; None without an active key to sign with."""
        if keys is None or keys.active_id is None:
            return None
        return cls(conn, keys, clock)

    def step(
        self, conn: sqlite3.Connection, seq: int, head_hash: bytes, *, closing: bool = False
    ) -> SignedHead | None:
        """Sign the head ``(seq, head_hash)`` in a transaction of its own, if that is due.

        Due when the log has grown past the newest signed head and ``interval`` has passed
        since this signer last signed (or the clock went back). ``closing`` (the writer is
        closing) signs without waiting and logs the head, a copy kept outside the file. Must
        run outside a transaction. Returns the head recorded, if any. Never raises: a failure
        is logged and the head is signed on a later step.
        """
        if seq <= self._signed_seq:
            return None
        now = self._clock.now()
        last = self._signed_at
        if not closing and last is not None and last <= now < last + self._interval:
            return None
        self._signed_at = now  # a failure, too, waits an interval before the next attempt
        head = sign(self._keys, seq, head_hash, format_timestamp(now))
        try:
            conn.execute("BEGIN IMMEDIATE")
            record(conn, head)
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            log.warning("could not record a signed chain head", seq=seq, exc_info=True)
            return None
        self._signed_seq = seq
        if closing:
            log.info("chain head signed", seq=seq, hash=head_hash.hex())
        return head


def _matches(conn: sqlite3.Connection, head: SignedHead) -> bool:
    row = conn.execute("SELECT hash FROM events WHERE seq = ?", (head.seq,)).fetchone()
    return row is not None and bytes(row[0]) == head.hash
