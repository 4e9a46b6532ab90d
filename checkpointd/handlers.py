"""The write side: commands become events, appended to the log on the writer's connection.

Runs on the writer thread only, inside the transaction that ``storage.writer`` opens. The log is
all it writes and all it reads: the views are built from the log by the projector
(``checkpointd.views``) and may be behind, so existence, versions and current fields come from
the events themselves (``checkpointd.events.streams``). Every
command validates everything first and writes only after that, so a command that is refused
leaves no trace and its group goes on. Should anything fail after the first write (a SQLite
error, or a bug), ``handle`` raises ``PartialWrite`` and the writer rolls the group back and
retries its commands one by one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from checkpointd import commands as cmd
from checkpointd.chains import settle_depth
from checkpointd.clock import Clock, format_timestamp
from checkpointd.config import Config
from checkpointd.errors import (
    CheckpointError,
    ConflictError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
)
from checkpointd.events import store, streams
from checkpointd.events.signing import ChainKeys, HeadSigner
from checkpointd.events.types import EventRecord, EventType, seal
from checkpointd.idempotency import (
    RENDER_FROM_EVENT,
    Idempotency,
    Replayed,
    decode_reply,
    encode_reply,
)
from checkpointd.ids import new_id
from checkpointd.models import Checkpoint
from checkpointd.projections.checkpoints import updated_row
from checkpointd.requests import CreateRequest, UpdateRequest
from checkpointd.rows import checkpoint_from_row, created_wire
from checkpointd.snapshots import (
    EncodedSnapshot,
    SnapshotCodec,
    canonical_encode,
)


@dataclass(slots=True)
class Outcome:
    """The result of one command (or its error) and the events it appended."""

    value: object = None
    error: CheckpointError | None = None
    events: tuple[EventRecord, ...] = ()
    seq: int = 0  # the log position after the command: its last event's seq, else the head


class PartialWriteError(Exception):
    """A command failed after it had written: its transaction must be rolled back."""


@dataclass(frozen=True, slots=True)
class _PreparedCreate:
    checkpoint_id: str
    request: CreateRequest
    encoded: EncodedSnapshot
    data: dict[str, Any]
    data_bytes: bytes
    now: datetime
    at: str  # ``now`` as stored text
    timestamp: datetime
    expires: datetime | None


class CommandHandler:
    """Turns commands into events on one connection; owns the head of the hash chain."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        config: Config,
        codec: SnapshotCodec,
        clock: Clock,
    ) -> None:
        self.conn = conn
        self._config = config
        self.codec = codec
        self._clock = clock
        self._appended: list[EventRecord] = []
        self.seq, self.head_hash = store.head(conn)
        self._signer = HeadSigner.open(conn, ChainKeys.from_keyring(codec.keyring), clock)

    def sign_head(self) -> None:
        """Record a signed chain head if one is due; outside a transaction (events.signing)."""
        if self._signer is not None:
            self._signer.step(self.conn, self.seq, self.head_hash)

    def close(self) -> None:
        """Sign the chain head (when keyed and not yet signed), then close the connection."""
        if self._signer is not None:
            self._signer.step(self.conn, self.seq, self.head_hash, closing=True)
        self.conn.close()

    def reload_head(self) -> None:
        """Re-read the chain head after a rolled-back transaction."""
        self.seq, self.head_hash = store.head(self.conn)

    def handle(self, command: cmd.Command) -> Outcome:
        """Run one command in the open transaction.

        Returns the outcome, with the error of a refused command (which wrote nothing).
        Raises:
            PartialWriteError: the command failed after writing; roll the transaction back.
            sqlite3.Error: the database failed; roll the transaction back.
        """
        self._appended = []
        key = None if isinstance(command, cmd.ForgetKeys) else command.context.idempotency
        try:
            if key is not None and (replayed := self._replayed(key)) is not None:
                return Outcome(value=replayed, seq=self.seq)
            value = self._dispatch(command)
        except CheckpointError as exc:
            if self._appended:
                raise PartialWriteError(type(command).__name__) from exc
            return Outcome(error=exc, seq=self.seq)
        if key is not None and _final(command, value):
            # A create's reply is not stored: a retry renders it from the create event at
            # ``seq`` (RENDER_FROM_EVENT), which saves rendering and storing it on every create.
            reply = (
                RENDER_FROM_EVENT
                if isinstance(command, cmd.Create)
                else encode_reply(key.render(value))
            )
            self.conn.execute(
                "INSERT INTO idempotency (key, digest, seq, at, reply) VALUES (?, ?, ?, ?, ?)",
                (key.key, key.digest, self.seq, format_timestamp(self._clock.now()), reply),
            )
        return Outcome(value=value, events=tuple(self._appended), seq=self.seq)

    def _replayed(self, key: Idempotency) -> Replayed | None:
        """The stored reply for ``key``; ConflictError if the key came with another request."""
        found = self.conn.execute(
            "SELECT digest, seq, reply FROM idempotency WHERE key = ?", (key.key,)
        ).fetchone()
        if found is None:
            return None
        digest, seq, reply = found
        if bytes(digest) != key.digest:
            raise ConflictError(f"message id {key.key!r} was already used for another request")
        if bytes(reply) == RENDER_FROM_EVENT:
            row = self.conn.execute(f"{store.SELECT} WHERE seq = ?", (seq,)).fetchone()
            return Replayed(created_wire(store.from_row(row)))
        return Replayed(decode_reply(bytes(reply)))

    def _dispatch(self, command: cmd.Command) -> object:
        match command:
            case cmd.Create(item, context):
                return self._write_create(self._prepare_create(item), context)
            case cmd.CreateBatch(batch, context):
                prepared = [self._prepare_create(item) for item in batch]
                return [self._write_create(p, context) for p in prepared]
            case cmd.Update(request, context):
                return self._update(request, context)
            case cmd.Delete(checkpoint_id, context):
                return self._remove(checkpoint_id, EventType.DELETED, context, {})
            case cmd.ExpireDue():
                return self._expire_due(command)
            case cmd.ForgetKeys(before):
                cursor = self.conn.execute(
                    "DELETE FROM idempotency WHERE at < ?", (format_timestamp(before),)
                )
                return cursor.rowcount
            case cmd.Restore():
                return self._restore(command)
        raise InvalidRequestError(f"unknown command {type(command).__name__}")

    # -- appending -----------------------------------------------------------------------

    def _append(
        self,
        type: EventType,
        *,
        stream: str,
        session_id: str,
        version: int,
        at: str,
        context: cmd.Context,
        data: bytes,
    ) -> EventRecord:
        record = seal(
            seq=self.seq + 1,
            event_id=new_id(),
            type=type,
            stream=stream,
            session_id=session_id,
            version=version,
            at=at,
            actor=context.actor,
            causation=context.causation,
            data=data,
            prev_hash=self.head_hash,
        )
        store.append(self.conn, record)
        self.seq, self.head_hash = record.seq, record.hash
        self._appended.append(record)
        return record

    # -- create --------------------------------------------------------------------------

    def _prepare_create(self, item: CreateRequest | cmd.Sealed) -> _PreparedCreate:
        """Everything that can refuse a create, before anything is written."""
        sealed = (
            item if isinstance(item, cmd.Sealed) else seal_snapshot(self.codec, self._config, item)
        )
        checkpoint_id, request, encoded = sealed.checkpoint_id, sealed.request, sealed.encoded
        links = (("parent checkpoint", request.parent_id), ("restoredFrom", request.restored_from))
        for what, parent in links:
            if parent is not None and not self._exists_in_log(parent):
                raise NotFoundError(what, parent)
        if request.checkpoint_id is not None and self._exists_in_log(checkpoint_id):
            # The log, not the view: a deleted or expired checkpoint's id is never reused.
            raise ConflictError(f"checkpoint id {checkpoint_id!r} exists or existed")
        metadata = settle_depth(self.conn, request.metadata)
        if metadata is not request.metadata:  # a computed chainDepth was added
            request = replace(request, metadata=metadata)
        now = _utc(self._clock.now())
        at = format_timestamp(now)
        if request.timestamp is None:
            timestamp, timestamp_text = now, at
        else:
            timestamp = _utc(request.timestamp)
            timestamp_text = format_timestamp(timestamp)
        expires = self._retention(request, now)
        data = {
            "name": request.name,
            "sessionId": request.session_id,
            "timestamp": timestamp_text,
            "branches": request.branches,
            "metadata": request.metadata,
            "createdBy": request.created_by,
            "size": encoded.size,
            "storedSize": encoded.stored_size,
            "checksum": encoded.checksum,
            "compression": encoded.compression.value,
            "encrypted": encoded.encrypted,
            "retentionExpiresAt": None if expires is None else format_timestamp(expires),
            "restoredFrom": request.restored_from,
        }
        return _PreparedCreate(
            checkpoint_id=checkpoint_id,
            request=request,
            encoded=encoded,
            data=data,
            data_bytes=canonical_encode(data),
            now=now,
            at=at,
            timestamp=timestamp,
            expires=expires,
        )

    def _write_create(self, p: _PreparedCreate, context: cmd.Context) -> Checkpoint:
        request, encoded = p.request, p.encoded
        event = self._append(
            EventType.CREATED,
            stream=p.checkpoint_id,
            session_id=request.session_id,
            version=1,
            at=p.at,
            context=context,
            data=p.data_bytes,
        )
        # The blob's key is the create event's seq, which is also the view row's rowid.
        self.conn.execute("INSERT INTO blobs (seq, data) VALUES (?, ?)", (event.seq, encoded.blob))
        # Built from the values at hand rather than re-read from the view: this is the hot path.
        return Checkpoint(
            id=p.checkpoint_id,
            name=request.name,
            session_id=request.session_id,
            timestamp=p.timestamp,
            snapshot=request.snapshot,
            branches=list(request.branches),
            metadata=request.metadata,
            created_by=request.created_by,
            size=encoded.size,
            stored_size=encoded.stored_size,
            checksum=encoded.checksum,
            compressed=encoded.compressed,
            encrypted=encoded.encrypted,
            retention_expires_at=p.expires,
            restored_from=request.restored_from,
            version=1,
            created_at=p.now,
            updated_at=p.now,
        )

    def _retention(self, request: CreateRequest, now: datetime) -> datetime | None:
        if request.retention_expires_at is not None:
            return request.retention_expires_at.astimezone(UTC)
        days = self._config.default_retention_days
        return None if days is None else now + timedelta(days=days)

    def _exists_in_log(self, checkpoint_id: str) -> bool:
        return streams.ever_created(self.conn, checkpoint_id)

    # -- update, delete, expire ----------------------------------------------------------

    def _update(self, request: UpdateRequest, context: cmd.Context) -> Checkpoint:
        before = self._load(request.checkpoint_id)
        if request.expected_version is not None and request.expected_version != before.version:
            raise ConflictError(
                f"checkpoint {request.checkpoint_id} is at version {before.version},"
                f" not {request.expected_version}"
            )
        if request.metadata is not None:
            parent = request.metadata.get("parentCheckpoint")
            if isinstance(parent, str) and not self._exists_in_log(parent):
                raise NotFoundError("parent checkpoint", parent)
            request = replace(request, metadata=settle_depth(self.conn, request.metadata))
        data = {"changes": _changes(request)}
        data_bytes = canonical_encode(data)
        event = self._append(
            EventType.UPDATED,
            stream=request.checkpoint_id,
            session_id=before.row["session_id"],
            version=before.version + 1,
            at=format_timestamp(self._clock.now()),
            context=context,
            data=data_bytes,
        )
        after = updated_row(before.row, event, data["changes"])
        return checkpoint_from_row(after, snapshot=None)

    def _remove(
        self,
        checkpoint_id: str,
        type: EventType,
        context: cmd.Context,
        extra: Mapping[str, Any],
    ) -> bool:
        folded = streams.fold(self.conn, checkpoint_id)
        if folded is None or not folded.live:
            return False
        before = folded.row
        data = {"name": before["name"], "checksum": before["checksum"], "size": before["size"]}
        data.update(extra)
        self._append(
            type,
            stream=checkpoint_id,
            session_id=before["session_id"],
            version=folded.version + 1,
            at=format_timestamp(self._clock.now()),
            context=context,
            data=canonical_encode(data),
        )
        # The checkpoint's snapshot, and every restored state that holds its values.
        self.conn.execute(
            "DELETE FROM blobs WHERE seq = ?"
            " OR seq IN (SELECT seq FROM restore_sources WHERE checkpoint_id = ?)",
            (before["seq"], checkpoint_id),
        )
        return True

    def _expire_due(self, command: cmd.ExpireDue) -> int:
        now = format_timestamp(command.now)
        expired = 0
        for checkpoint_id in command.candidates:
            folded = streams.fold(self.conn, checkpoint_id)
            if folded is None or not folded.live:
                continue
            expires_at = folded.row["retention_expires_at"]
            if expires_at is None or expires_at > now:
                continue  # its retention was changed after the views listed it
            extra = {"retentionExpiresAt": expires_at}
            self._remove(checkpoint_id, EventType.EXPIRED, command.context, extra)
            expired += 1
        return expired

    def _restore(self, command: cmd.Restore) -> cmd.Restored:
        target = command.target_session_id
        expected = command.expected_session_seq
        if expected is not None and streams.session_moved(
            self.conn, target, expected, command.session_sources
        ):
            raise ConflictError(f"session {target!r} changed while restoring; retry")
        self._load(command.checkpoint_id)  # it may have been deleted since it was read
        sources = {command.checkpoint_id}
        if expected is not None:  # merged with the session's own state
            sources |= command.session_sources
        backup = None if command.backup is None else self._prepare_create(command.backup)
        stream = f"session:{target}"
        version = streams.next_version(self.conn, stream)
        state, details = command.state, command.details
        data = {
            "checkpointId": command.checkpoint_id,
            "sessionId": target,
            "strategy": command.strategy,
            "stateId": command.state_id,
            "checksum": state.checksum,
            "size": state.size,
            "storedSize": state.stored_size,
            "compression": state.compression.value,
            "encrypted": state.encrypted,
            # Paths only: the values are in ``details``, which delete and expiry remove.
            "conflicts": [
                {"path": c["path"], "resolution": c["resolution"]} for c in command.conflicts
            ],
            "details": None
            if details is None
            else {"checksum": details.checksum, "size": details.size},
            "sources": sorted(sources),
            "backupCheckpointId": None if backup is None else backup.checkpoint_id,
        }
        data_bytes = canonical_encode(data)
        if backup is not None:
            self._write_create(backup, command.context)
        event = self._append(
            EventType.RESTORED,
            stream=stream,
            session_id=target,
            version=version,
            at=format_timestamp(self._clock.now()),
            context=command.context,
            data=data_bytes,
        )
        self.conn.execute(
            "INSERT INTO blobs (seq, data, details) VALUES (?, ?, ?)",
            (event.seq, state.blob, None if details is None else details.blob),
        )
        # The log's own index of what the state holds: deleting any of these removes its blob.
        self.conn.executemany(
            "INSERT OR IGNORE INTO restore_sources (checkpoint_id, seq, session_id)"
            " VALUES (?, ?, ?)",
            [(source, event.seq, target) for source in sorted(sources)],
        )
        return cmd.Restored(event.seq, None if backup is None else backup.checkpoint_id)

    def _load(self, checkpoint_id: str) -> streams.Folded:
        folded = streams.fold(self.conn, checkpoint_id)
        if folded is None or not folded.live:
            raise NotFoundError("checkpoint", checkpoint_id)
        return folded


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is UTC else dt.astimezone(UTC)


def _final(command: cmd.Command, value: object) -> bool:
    """Whether a keyed command's reply is complete (an expiry step short of its limit is)."""
    return not isinstance(command, cmd.ExpireDue) or len(command.candidates) < command.limit


def seal_snapshot(codec: SnapshotCodec, config: Config, request: CreateRequest) -> cmd.Sealed:
    """Encode a create's snapshot under its checkpoint id (the client's, else a new one) and
    check the client's claims.

    Pure CPU work; the caller runs it before queueing the command (off the event loop when
    the snapshot is big). Raises TooLargeError, IntegrityError, and InvalidRequestError (also
    for ``encrypted: false`` while ``enable_encryption`` is on).
    """
    if config.enable_encryption and request.encrypted is False:
        # Refused rather than ignored: a caller asking for plaintext must not be told "done"
        # while it is stored otherwise, nor get plaintext from a store that promises none.
        raise InvalidRequestError(
            "this store encrypts every snapshot (enable_encryption is on); leave encrypted out",
            field="encrypted",
        )
    checkpoint_id = request.checkpoint_id or new_id()
    compress = config.enable_compression if request.compressed is None else request.compressed
    encrypt = config.enable_encryption if request.encrypted is None else request.encrypted
    encoded = codec.encode(checkpoint_id, request.snapshot, compress=compress, encrypt=encrypt)
    _check_claims(request, encoded.checksum, encoded.size)
    return cmd.Sealed(checkpoint_id, request, encoded)


def _check_claims(request: CreateRequest, checksum: str, size: int) -> None:
    """A client-supplied checksum or size must match the computed one (end-to-end integrity)."""
    if request.checksum is not None and request.checksum != checksum:
        raise IntegrityError(
            f"supplied checksum {request.checksum} does not match computed {checksum}"
        )
    if request.size is not None and request.size != size:
        raise IntegrityError(f"supplied size {request.size} does not match computed size {size}")


def _changes(request: UpdateRequest) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if request.name is not None:
        changes["name"] = request.name
    if request.metadata is not None:
        changes["metadata"] = request.metadata
    if request.branches is not None:
        changes["branches"] = request.branches
    if request.retention_expires_at is not None:
        changes["retentionExpiresAt"] = format_timestamp(request.retention_expires_at)
    elif request.clear_retention:
        changes["retentionExpiresAt"] = None
    return changes
