"""Restore: put a session at a checkpoint's state, merged with its current state.

Everything that can refuse a restore — reading and validating the checkpoint, reading the
session's current state, merging, a custom resolver — runs before anything is written. Then one
command commits the optional backup checkpoint and the ``checkpoint.restored`` event (with the
resulting state stored as a blob) in one transaction.

``timeout`` bounds the reading, validation and merge; it is checked once more just before the
write, and a restore that has reached the writer completes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from checkpointd.config import Config
from checkpointd.errors import (
    ConflictError,
    IntegrityError,
    InvalidRequestError,
    UnavailableError,
)
from checkpointd.ids import new_id
from checkpointd.merge import MergeResult, Strategy, merge_states_async
from checkpointd.reads.checkpoints import ReadModel
from checkpointd.reads.validate import inspect_stored
from checkpointd.requests import DAEMON_ACTOR, CreateRequest, reject_unknown, text, wire_keys
from checkpointd.restore_details import encode_details
from checkpointd.results import RestoreResult
from checkpointd.snapshots import SnapshotCodec, canonical_encode
from checkpointd.storage.writer import GroupCommitWriter
from checkpointd.write import commands as cmd
from checkpointd.write.encode import encode_create
from checkpointd.write.idempotency import Idempotency, revive_stored, submit

_FIELDS = frozenset(
    {
        "targetSessionId",
        "mergeStrategy",
        "preserveCurrentState",
        "currentState",
        "conflictResolution",
        "validation",
        "rollbackOnError",
        "notify",
        "timeout",
        "dryRun",
    }
)
ATTEMPTS = 3
_VALIDATION = frozenset({"validateIntegrity", "validateChecksum", "validateSchema"})


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    """A validated restore. ``timeout`` is in seconds."""

    checkpoint_id: str
    target_session_id: str | None = None
    strategy: Strategy = Strategy.OVERWRITE
    preserve_current_state: bool = False
    current_state: Mapping[str, Any] | None = None
    resolver: Callable[..., Any] | None = None
    validate_checksum: bool = True
    validate_schema: bool = False
    rollback_on_error: bool = True
    notify: bool = True
    timeout: float | None = None
    dry_run: bool = False

    @classmethod
    def from_wire(
        cls, checkpoint_id: Any, data: Mapping[str, Any], *, timeout_unit: float
    ) -> RestoreRequest:
        """The original API's options shape; ``timeout_unit`` is 0.001 for the wire's milliseconds.

        Raises:
            InvalidRequestError: an unknown field, a wrong type, two different strategies.
        """
        reject_unknown(data, _FIELDS, "restore")
        resolution = wire_keys(_mapping(data.get("conflictResolution"), "conflictResolution"))
        strategy = _strategy(data.get("mergeStrategy"), resolution.get("strategy"))
        resolver = resolution.get("customResolver")
        if resolver is not None and not callable(resolver):
            raise InvalidRequestError("must be a callable", field="customResolver")
        validation = wire_keys(_mapping(data.get("validation"), "validation"))
        reject_unknown(validation, _VALIDATION, "restore", field="validation")
        current = _current_state(data.get("currentState"))
        target = data.get("targetSessionId")
        # Accepted for the original API's shape; integrity (decryption, decompression) is always
        # checked, since the state has to be read either way.
        _flag(validation, "validateIntegrity", True)
        return cls(
            checkpoint_id=text(checkpoint_id, "id"),
            target_session_id=None if target is None else text(target, "targetSessionId"),
            strategy=strategy,
            preserve_current_state=_flag(data, "preserveCurrentState", False),
            current_state=current,
            resolver=resolver,
            validate_checksum=_flag(validation, "validateChecksum", True),
            validate_schema=_flag(validation, "validateSchema", False),
            rollback_on_error=_flag(data, "rollbackOnError", True),
            notify=_flag(data, "notify", True),
            timeout=_timeout(data.get("timeout"), timeout_unit),
            dry_run=_flag(data, "dryRun", False),
        )


async def restore(
    request: RestoreRequest,
    *,
    reads: ReadModel,
    writer: GroupCommitWriter,
    codec: SnapshotCodec,
    config: Config,
    key: Idempotency | None = None,
) -> RestoreResult:
    """Run a restore as described in the module docstring.

    With ``key``, the restore takes effect once: a retry, also one racing the first call, gets
    the first call's result (its state read back: see ``checkpointd.restore_details``).

    If the target session moves on between reading its state and writing (another create or
    restore in it), the restore is planned again from the new state, up to ``ATTEMPTS`` times.

    Raises:
        NotFoundError: no such checkpoint.
        IntegrityError: the checkpoint's snapshot is damaged or fails the requested validation
            (with ``rollback_on_error``, the default; otherwise failures become warnings).
        ConflictError: the target session kept changing through every attempt.
        UnavailableError: the timeout passed before the write.
    """
    if key is not None and (earlier := await revive_stored(reads.stored_reply, key)) is not None:
        assert isinstance(earlier, RestoreResult)
        return earlier  # done before: answered without planning it again
    deadline = None if request.timeout is None else time.monotonic() + request.timeout
    for attempt in range(1, ATTEMPTS + 1):
        plan = await _plan_within(request, deadline, reads, codec, config, key=key)
        if plan.command is None:
            return plan.result(event_seq=None, backup_id=None)
        try:
            result = await submit(writer, plan.command)
        except ConflictError:
            if attempt == ATTEMPTS or plan.command.expected_session_seq is None:
                raise
            continue
        assert isinstance(result, RestoreResult)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


async def _plan_within(
    request: RestoreRequest,
    deadline: float | None,
    reads: ReadModel,
    codec: SnapshotCodec,
    config: Config,
    *,
    key: Idempotency | None,
) -> _Plan:
    """Plan the restore before the deadline (checked once more after planning)."""
    remaining = None if deadline is None else deadline - time.monotonic()
    try:
        async with asyncio.timeout(remaining):
            plan = await _plan(request, reads, codec, config, key)
    except TimeoutError:
        plan = None
    if plan is None or (deadline is not None and time.monotonic() > deadline):
        raise UnavailableError(f"restore timed out after {request.timeout}s; nothing written")
    return plan


@dataclass(frozen=True, slots=True)
class _Plan:
    request: RestoreRequest
    target: str
    merged: MergeResult
    warnings: tuple[str, ...]
    command: cmd.Restore | None  # None for a dry run, which writes nothing

    def result(self, *, event_seq: int | None, backup_id: str | None) -> RestoreResult:
        return RestoreResult(
            success=True,
            restored_from=self.request.checkpoint_id,
            target_session_id=self.target,
            state=self.merged.state,
            conflicts=tuple(c.to_wire() for c in self.merged.conflicts),
            warnings=self.warnings,
            backup_checkpoint_id=backup_id,
            event_seq=event_seq,
        )


async def _plan(
    request: RestoreRequest,
    reads: ReadModel,
    codec: SnapshotCodec,
    config: Config,
    key: Idempotency | None,
) -> _Plan:
    row, blob = await reads.stored(request.checkpoint_id)
    snapshot, warnings = await _checked_snapshot(request, row, blob, codec)
    target = request.target_session_id or row["session_id"]
    sources: frozenset[str] = frozenset()
    if request.current_state is not None:
        current, expected_seq = dict(request.current_state), None
    else:
        current, expected_seq, sources = await reads.session_state(target)
    merged = await merge_states_async(current, snapshot, request.strategy, request.resolver)
    # The restored state and the backup mix the checkpoint's and the session's content, either
    # of which may have been encrypted: whenever a key is configured, they are encrypted.
    encrypt = codec.keyring is not None and codec.keyring.active_id is not None
    backup = None
    if request.preserve_current_state:
        if current:
            backup = _backup(codec, config, request.checkpoint_id, target, current, encrypt=encrypt)
        else:
            warnings.append(f"session {target!r} has no current state; no backup was made")
    state_id = new_id()
    encoded_state = await asyncio.to_thread(
        codec.encode,
        state_id,
        merged.state,
        compress=config.enable_compression,
        encrypt=encrypt,
    )
    if request.dry_run:  # planned and encoded in full: it refuses what the restore would refuse
        return _Plan(request, target, merged, tuple(warnings), command=None)
    conflicts = tuple(c.to_wire() for c in merged.conflicts)
    details = None
    if conflicts or warnings:  # encoded beside the state: the event keeps no values
        details = await asyncio.to_thread(
            encode_details,
            codec,
            state_id,
            conflicts,
            warnings,
            compress=config.enable_compression,
            encrypt=encrypt,
        )
    command = cmd.Restore(
        checkpoint_id=request.checkpoint_id,
        target_session_id=target,
        strategy=request.strategy.value,
        state_id=state_id,
        state=encoded_state,
        conflicts=conflicts,
        backup=backup,
        expected_session_seq=expected_seq,
        session_sources=sources,
        context=cmd.Context(idempotency=key),
        notify=request.notify,
        merged_state=merged.state,
        details=details,
        warnings=tuple(warnings),
    )
    return _Plan(request, target, merged, tuple(warnings), command)


async def _checked_snapshot(
    request: RestoreRequest,
    row: Mapping[str, Any],
    blob: bytes | None,
    codec: SnapshotCodec,
) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint's snapshot, after the validation the request asks for."""
    report, snapshot = await asyncio.to_thread(inspect_stored, codec, row, blob)
    checksum_failed = not (report.checksum_valid and report.size_matches)
    if snapshot is None or (checksum_failed and request.validate_checksum):
        reason = "; ".join(report.errors) or "snapshot is damaged"
        error = IntegrityError(f"restore refused, nothing written: {reason}")
        error.checkpoint_id = row["id"]  # the reason already names it
        raise error
    warnings: list[str] = list(report.warnings)
    if request.validate_schema and not report.schema_valid:
        if request.rollback_on_error:
            reason = "; ".join(report.errors)
            raise IntegrityError(
                f"restore refused by schema validation, nothing written: {reason}",
                checkpoint_id=row["id"],
            )
        warnings.extend(report.errors)
    return snapshot, warnings


def _backup(
    codec: SnapshotCodec,
    config: Config,
    source: str,
    target: str,
    current: Mapping[str, Any],
    *,
    encrypt: bool,
) -> cmd.EncodedCreate:
    backup = CreateRequest(
        name=f"backup before restore of {source}",
        session_id=target,
        snapshot=current,
        branches=[],
        metadata={
            "priority": "normal",
            "description": f"State of session {target} before restoring {source}",
            "tags": ["backup"],
        },
        created_by=DAEMON_ACTOR,
        encrypted=encrypt,
    )
    return encode_create(codec, config, backup)


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", field=field)
    return value


def _current_state(value: Any) -> Mapping[str, Any] | None:
    """``currentState`` once it is known to be a snapshot the store could keep.

    Checked whole and up front, so a dry run refuses what the restore would, whatever part of
    it the strategy then keeps (NaN, a bytes key, a set: ``currentState/<pointer>`` names it).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", field="currentState")
    try:
        canonical_encode(value)
    except InvalidRequestError as error:
        field = error.field or "snapshot"
        reason = error.message.removeprefix(f"{field}: ")
        raise InvalidRequestError(reason, field="currentState" + field[len("snapshot") :]) from None
    return value


def _strategy(merge: Any, resolution: Any) -> Strategy:
    if merge is not None and resolution is not None and merge != resolution:
        raise InvalidRequestError(
            "mergeStrategy and conflictResolution.strategy disagree", field="mergeStrategy"
        )
    chosen = merge if merge is not None else resolution
    return Strategy.OVERWRITE if chosen is None else Strategy.parse(chosen)


def _flag(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequestError("expected true or false", field=key)
    return value


def _timeout(value: Any, unit: float) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")  # NaN fails this too
    ):
        raise InvalidRequestError("expected a positive number", field="timeout")
    return float(value) * unit
