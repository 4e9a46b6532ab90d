"""The command handler: commands become events, appended to the log on the writer's connection.

Runs on the writer thread only, inside the transaction that ``storage.writer`` opens. The log is
all it writes and all it reads: the views are built from the log by the projector
(``checkpointd.views``) and may be behind, so existence, versions and current fields come from
the events themselves (``checkpointd.events.streams``). Every
command validates everything first and writes only after that, so a command that is refused
leaves no trace and its group goes on. Should anything fail after the first write (a SQLite
error, or a bug), ``handle`` raises ``PartialWrite`` and the writer rolls the group back and
retries its commands one by one. A keyed command's reply is stored and looked up through
``checkpointd.write.idempotency``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

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
from checkpointd.events.domain import (
    BlobDigest,
    Changes,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointExpired,
    CheckpointUpdated,
    Conflict,
    DomainEvent,
    StateRestored,
    WriteKey,
    WritesPut,
)
from checkpointd.events.signing import ChainKeys, HeadSigner
from checkpointd.events.types import EventRecord, seal
from checkpointd.ids import new_id
from checkpointd.models import Checkpoint
from checkpointd.projections.checkpoints import updated_row
from checkpointd.requests import CreateRequest, UpdateRequest, Write
from checkpointd.results import CopySessionResult, PutWritesResult, RestoreResult
from checkpointd.rows import checkpoint_from_row, created_wire
from checkpointd.snapshots import EncodedSnapshot, SnapshotCodec, read_header
from checkpointd.write import commands as cmd
from checkpointd.write import idempotency
from checkpointd.write.encode import encode_create, encode_writes


@dataclass(slots=True)
class Outcome:
    """The result of one command (or its error) and the events it appended.

    ``value`` is the command's result, or a ``StoredReply`` for a keyed command that already
    ran (``idempotency.submit`` turns it into the first run's result).
    """

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
    event: CheckpointCreated
    data: bytes  # the event's data, encoded once
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
            if key is not None and (stored := idempotency.lookup(self.conn, key, created_wire)):
                return Outcome(value=stored, seq=self.seq)
            value = self._dispatch(command)
        except CheckpointError as exc:
            if self._appended:
                raise PartialWriteError(type(command).__name__) from exc
            return Outcome(error=exc, seq=self.seq)
        if key is not None and _final(command, value):
            # A create's reply is not stored: a retry renders it from the create event at
            # ``seq``, which saves rendering and storing it on every create.
            idempotency.record(
                self.conn,
                key,
                seq=self.seq,
                at=self._clock.now(),
                value=value,
                from_event=isinstance(command, cmd.Create),
            )
        return Outcome(value=value, events=tuple(self._appended), seq=self.seq)

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
                return self._remove(checkpoint_id, context)
            case cmd.ExpireDue():
                expired = self._expire_due(command)
                return cmd.ExpiredStep(expired=expired, total=command.prior + expired)
            case cmd.ForgetKeys(before):
                return idempotency.forget(self.conn, before)
            case cmd.Restore():
                return self._restore(command)
            case cmd.PutWrites():
                return self._put_writes(command)
            case cmd.CopySession():
                return self._copy_session(command)
            case cmd.PruneSession():
                return self._prune_session(command)
            case cmd.DeleteByMetadata():
                return self._delete_by_metadata(command)
        raise InvalidRequestError(f"unknown command {type(command).__name__}")

    # -- appending -----------------------------------------------------------------------

    def _append(
        self,
        event: DomainEvent,
        *,
        stream: str,
        session_id: str,
        version: int,
        at: str,
        context: cmd.Context,
        data: bytes | None = None,
    ) -> EventRecord:
        """Seal ``event`` (its data: ``data`` when already encoded) onto the chain, append it."""
        record = seal(
            seq=self.seq + 1,
            event_id=new_id(),
            type=event.type,
            stream=stream,
            session_id=session_id,
            version=version,
            at=at,
            actor=context.actor,
            causation=context.causation,
            data=event.to_data() if data is None else data,
            prev_hash=self.head_hash,
        )
        store.append(self.conn, record)
        self.seq, self.head_hash = record.seq, record.hash
        self._appended.append(record)
        return record

    # -- create --------------------------------------------------------------------------

    def _prepare_create(self, item: CreateRequest | cmd.EncodedCreate) -> _PreparedCreate:
        """Everything that can refuse a create, before anything is written."""
        encoded_create = (
            item
            if isinstance(item, cmd.EncodedCreate)
            else encode_create(self.codec, self._config, item)
        )
        checkpoint_id = encoded_create.checkpoint_id
        request, encoded = encoded_create.request, encoded_create.encoded
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
        event = CheckpointCreated(
            name=request.name,
            session_id=request.session_id,
            timestamp=timestamp_text,
            branches=request.branches,
            metadata=request.metadata,
            created_by=request.created_by,
            size=encoded.size,
            stored_size=encoded.stored_size,
            checksum=encoded.checksum,
            compression=encoded.compression.value,
            encrypted=encoded.encrypted,
            retention_expires_at=None if expires is None else format_timestamp(expires),
            restored_from=request.restored_from,
        )
        return _PreparedCreate(
            checkpoint_id=checkpoint_id,
            request=request,
            encoded=encoded,
            event=event,
            data=event.to_data(),  # encoded now: a create that cannot be encoded is refused
            now=now,
            at=at,
            timestamp=timestamp,
            expires=expires,
        )

    def _write_create(self, p: _PreparedCreate, context: cmd.Context) -> Checkpoint:
        request, encoded = p.request, p.encoded
        event = self._append(
            p.event,
            stream=p.checkpoint_id,
            session_id=request.session_id,
            version=1,
            at=p.at,
            context=context,
            data=p.data,
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
        updated = CheckpointUpdated(_changes(request))
        record = self._append(
            updated,
            stream=request.checkpoint_id,
            session_id=before.row["session_id"],
            version=before.version + 1,
            at=format_timestamp(self._clock.now()),
            context=context,
        )
        after = updated_row(before.row, record, updated.changes)
        return checkpoint_from_row(after, snapshot=None)

    def _remove(
        self, checkpoint_id: str, context: cmd.Context, *, expired_at: str | None = None
    ) -> bool:
        """Delete the checkpoint (expire it, when its retention ended at ``expired_at``)."""
        folded = streams.fold(self.conn, checkpoint_id)
        if folded is None or not folded.live:
            return False
        before = folded.row
        name, checksum, size = before["name"], before["checksum"], before["size"]
        removed = (
            CheckpointDeleted(name, checksum, size)
            if expired_at is None
            else CheckpointExpired(name, checksum, size, expired_at)
        )
        self._append(
            removed,
            stream=checkpoint_id,
            session_id=before["session_id"],
            version=folded.version + 1,
            at=format_timestamp(self._clock.now()),
            context=context,
        )
        # The checkpoint's snapshot, its pending writes' values, and every restored state
        # that holds its values.
        self.conn.execute(
            "DELETE FROM blobs WHERE seq = ?"
            " OR seq IN (SELECT seq FROM restore_sources WHERE checkpoint_id = ?)"
            " OR seq IN (SELECT seq FROM events WHERE stream = ? AND type = ?)",
            (before["seq"], checkpoint_id, checkpoint_id, WritesPut.type.value),
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
            self._remove(checkpoint_id, command.context, expired_at=expires_at)
            expired += 1
        return expired

    def _restore(self, command: cmd.Restore) -> RestoreResult:
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
        backup_id = None if backup is None else backup.checkpoint_id
        restored = StateRestored(
            checkpoint_id=command.checkpoint_id,
            session_id=target,
            strategy=command.strategy,
            state_id=command.state_id,
            checksum=state.checksum,
            size=state.size,
            stored_size=state.stored_size,
            compression=state.compression.value,
            encrypted=state.encrypted,
            # Paths only: the values are in ``details``, which delete and expiry remove.
            conflicts=tuple(Conflict(c["path"], c["resolution"]) for c in command.conflicts),
            details=None if details is None else BlobDigest(details.checksum, details.size),
            sources=tuple(sorted(sources)),
            backup_checkpoint_id=backup_id,
        )
        data = restored.to_data()  # before the backup is written: a bad event writes nothing
        if backup is not None:
            self._write_create(backup, command.context)
        event = self._append(
            restored,
            stream=stream,
            session_id=target,
            version=version,
            at=format_timestamp(self._clock.now()),
            context=command.context,
            data=data,
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
        return RestoreResult(
            success=True,
            restored_from=command.checkpoint_id,
            target_session_id=target,
            state=command.merged_state,
            conflicts=command.conflicts,
            warnings=command.warnings,
            backup_checkpoint_id=backup_id,
            event_seq=event.seq,
        )

    # -- pending writes and whole sessions -----------------------------------------------

    def _put_writes(self, command: cmd.PutWrites) -> PutWritesResult:
        request = command.request
        checkpoint_id = request.checkpoint_id
        target = streams.writes_target(self.conn, checkpoint_id, request.task_id)
        if target is None:
            raise NotFoundError("checkpoint", checkpoint_id)
        kept = _new_writes(request.writes, target.written)
        if not kept:
            return PutWritesResult(checkpoint_id, 0)
        encrypt = self._config.enable_encryption or target.encrypted
        encoded = command.encoded
        if encoded is None or len(kept) != len(request.writes) or encoded.encrypted != encrypt:
            encoded = encode_writes(
                self.codec,
                checkpoint_id,
                [write.value for write in kept],
                compress=self._config.enable_compression,
                encrypt=encrypt,
            )
        put = WritesPut(
            task_id=request.task_id,
            task_path=request.task_path,
            writes=tuple(WriteKey(write.index, write.channel) for write in kept),
            checksum=encoded.checksum,
            size=encoded.size,
            stored_size=encoded.stored_size,
            compression=encoded.compression.value,
            encrypted=encoded.encrypted,
        )
        data = put.to_data()
        record = self._append(
            put,
            stream=checkpoint_id,
            session_id=target.session_id,
            version=target.version + 1,
            at=format_timestamp(self._clock.now()),
            context=command.context,
            data=data,
        )
        self.conn.execute("INSERT INTO blobs (seq, data) VALUES (?, ?)", (record.seq, encoded.blob))
        return PutWritesResult(checkpoint_id, len(kept))

    def _copy_session(self, command: cmd.CopySession) -> CopySessionResult:
        """Each live checkpoint of the source, oldest first, created again in the target with
        its snapshot and pending writes (their blobs bound to the copy), ``restoredFrom`` the
        source and ``parentCheckpoint`` the parent's copy when the parent is copied too."""
        request = command.request
        sources = streams.session_checkpoints(self.conn, request.source_session_id)
        ids: dict[str, str] = {}
        for source_id, _ in sources:
            chosen = request.ids.get(source_id)
            if chosen is not None and self._exists_in_log(chosen):
                raise ConflictError(f"checkpoint id {chosen!r} exists or existed")
            ids[source_id] = new_id() if chosen is None else chosen
        copies = [
            self._prepare_copy(source_id, folded, ids, request.target_session_id)
            for source_id, folded in sources
        ]
        at = format_timestamp(self._clock.now())
        for new, created, blob, writes in copies:
            record = self._append(
                created,
                stream=new,
                session_id=created.session_id,
                version=1,
                at=at,
                context=command.context,
            )
            self.conn.execute("INSERT INTO blobs (seq, data) VALUES (?, ?)", (record.seq, blob))
            for version, (put, put_blob) in enumerate(writes, start=2):
                record = self._append(
                    put,
                    stream=new,
                    session_id=created.session_id,
                    version=version,
                    at=at,
                    context=command.context,
                )
                self.conn.execute(
                    "INSERT INTO blobs (seq, data) VALUES (?, ?)", (record.seq, put_blob)
                )
        return CopySessionResult(copied=len(copies), ids=ids)

    def _prepare_copy(
        self, source_id: str, folded: streams.Folded, ids: dict[str, str], target: str
    ) -> tuple[str, CheckpointCreated, bytes, list[tuple[WritesPut, bytes]]]:
        """A copy's create event, its snapshot's blob and its writes, before anything is written."""
        row, new = folded.row, ids[source_id]
        blob = self.codec.rebind(source_id, new, self._blob(row["seq"], source_id))
        metadata = json.loads(row["metadata"])
        parent = metadata.get("parentCheckpoint")
        if isinstance(parent, str) and parent in ids:
            metadata["parentCheckpoint"] = ids[parent]
        created = CheckpointCreated(
            name=row["name"],
            session_id=target,
            timestamp=row["timestamp"],
            branches=json.loads(row["branches"]),
            metadata=metadata,
            created_by=row["created_by"],
            size=row["size"],
            stored_size=len(blob),
            checksum=row["checksum"],
            compression=read_header(blob).compression.value,
            encrypted=bool(row["encrypted"]),
            retention_expires_at=row["retention_expires_at"],
            restored_from=source_id,
        )
        writes = []
        for seq, put in folded.writes:
            put_blob = self.codec.rebind(source_id, new, self._blob(seq, source_id))
            writes.append((replace(put, stored_size=len(put_blob)), put_blob))
        return new, created, blob, writes

    def _blob(self, seq: int, checkpoint_id: str) -> bytes:
        found = self.conn.execute("SELECT data FROM blobs WHERE seq = ?", (seq,)).fetchone()
        if found is None:
            raise IntegrityError("stored bytes are missing", checkpoint_id=checkpoint_id)
        return bytes(found[0])

    def _prune_session(self, command: cmd.PruneSession) -> int:
        request = command.request
        live = streams.session_checkpoints(self.conn, request.session_id)
        # Newest first by timestamp, ties by creation order (the create event's seq).
        newest = sorted(live, key=lambda item: (item[1].row["timestamp"], item[1].row["seq"]))
        doomed = newest[: max(0, len(newest) - request.keep)]
        for checkpoint_id, _ in sorted(doomed, key=lambda item: item[1].row["seq"]):
            self._remove(checkpoint_id, command.context)
        return len(doomed)

    def _delete_by_metadata(self, command: cmd.DeleteByMetadata) -> int:
        request = command.request
        deleted = 0
        for checkpoint_id in dict.fromkeys(command.candidates):
            folded = streams.fold(self.conn, checkpoint_id)
            if folded is None or not folded.live:
                continue
            row = folded.row
            if request.session_id is not None and row["session_id"] != request.session_id:
                continue
            metadata = json.loads(row["metadata"])
            if request.key not in metadata:
                continue
            if any(_same_scalar(metadata[request.key], value) for value in request.values):
                self._remove(checkpoint_id, command.context)
                deleted += 1
        return deleted

    def _load(self, checkpoint_id: str) -> streams.Folded:
        folded = streams.fold(self.conn, checkpoint_id)
        if folded is None or not folded.live:
            raise NotFoundError("checkpoint", checkpoint_id)
        return folded


def _new_writes(writes: tuple[Write, ...], before: frozenset[int]) -> list[Write]:
    """The writes a put stores: an ``index >= 0`` not yet written for the task (``before``;
    once), and the last of each ``index < 0`` (which replaces the one stored)."""
    written = set(before)
    last = {write.index: n for n, write in enumerate(writes) if write.index < 0}
    kept = []
    for n, write in enumerate(writes):
        if write.index >= 0:
            if write.index in written:
                continue
            written.add(write.index)
        elif last[write.index] != n:
            continue
        kept.append(write)
    return kept


def _same_scalar(stored: object, wanted: object) -> bool:
    """Scalar equality as JSON means it: numbers by value, a boolean only equals a boolean."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(stored, int | float) and isinstance(wanted, int | float):
        return stored == wanted
    return isinstance(stored, str) and isinstance(wanted, str) and stored == wanted


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is UTC else dt.astimezone(UTC)


def _final(command: cmd.Command, value: object) -> bool:
    """Whether a keyed command's reply is complete (an expiry step short of its limit is)."""
    return not isinstance(command, cmd.ExpireDue) or len(command.candidates) < command.limit


def _changes(request: UpdateRequest) -> Changes:
    changes: Changes = {}
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
