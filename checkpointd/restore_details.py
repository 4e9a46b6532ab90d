"""What a restore stores beside its state, and its reply under an idempotency key.

A restore's conflicts name both sides' values and its warnings may quote them, so neither is
kept where a delete cannot reach: the ``checkpoint.restored`` event holds the conflicts' paths
and resolutions only, and the idempotency key's stored reply neither values nor warnings. The
whole of both is encoded like the state (compressed, and encrypted whenever a key is set) into
the ``details`` column of the state's blob row, which goes when the state goes (see
``checkpointd.projections.sessions``). A retry's result is made whole again from that row.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from checkpointd.errors import NotFoundError
from checkpointd.events import store
from checkpointd.events.domain import StateRestored, decode
from checkpointd.reads.checkpoints import ReadModel
from checkpointd.results import RestoreResult
from checkpointd.snapshots import EncodedSnapshot, SnapshotCodec, canonical_encode
from checkpointd.write.idempotency import Reply

# Two levels above a conflict's value ({"conflicts": [{"current": value}]}), and a value of a
# state one level below its top at least: room for the deepest value a state may hold.
_MAX_DEPTH = 64 + 2


def details_key(state_id: str) -> str:
    """The id the details' encryption is bound to ('/' is in no checkpoint or state id)."""
    return f"{state_id}/details"


def encode_details(
    codec: SnapshotCodec,
    state_id: str,
    conflicts: Sequence[Mapping[str, Any]],
    warnings: Sequence[str],
    *,
    compress: bool,
    encrypt: bool,
) -> EncodedSnapshot | None:
    """The encoded conflicts and warnings of a restore (None when it has neither).

    Not capped by ``max_checkpoint_size``: they come from two states that each were, and used
    to be stored in the event uncapped. Reading them back is capped at their recorded size.
    """
    if not conflicts and not warnings:
        return None
    canonical = canonical_encode(
        {"conflicts": list(conflicts), "warnings": list(warnings)}, max_depth=_MAX_DEPTH
    )
    uncapped = replace(codec, max_size=sys.maxsize)
    return uncapped.encode_canonical(
        details_key(state_id), canonical, compress=compress, encrypt=encrypt
    )


def restore_reply(reads: ReadModel) -> Reply:
    """A restore's ``Reply``: stored without values, read back whole from its blob row."""

    async def revive(reply: Mapping[str, Any]) -> RestoreResult:
        return await replayed(reads, reply)

    return Reply(stored_reply, revive)


def stored_reply(result: object) -> dict[str, Any]:
    """The reply an idempotency key keeps: no state, no warnings, conflicts without values."""
    assert isinstance(result, RestoreResult)
    wire = result.to_wire()
    del wire["state"], wire["warnings"]
    wire["conflicts"] = [
        {"path": c["path"], "resolution": c["resolution"]} for c in result.conflicts
    ]
    return wire


async def replayed(reads: ReadModel, reply: Mapping[str, Any]) -> RestoreResult:
    """A stored restore reply with its state, conflicts and warnings read back.

    Raises:
        NotFoundError: the state is gone: a checkpoint it held values of was deleted or
            expired since.
        IntegrityError: the stored state or details are damaged, or their key is missing.
    """
    seq = reply["eventSeq"]
    found = await reads.readers.fetchone(
        f"SELECT b.data, b.details, e.* FROM blobs b JOIN ({store.SELECT} WHERE seq = ?"
        " AND type = 'checkpoint.restored') e ON e.seq = b.seq",
        (seq,),
    )
    if found is None:
        raise NotFoundError("restored state of event", str(seq))
    blob, details, row = found[0], found[1], found[2:]
    event = decode(store.from_row(row))
    assert isinstance(event, StateRestored)
    state, extra = await asyncio.to_thread(_open, reads.codec, event, bytes(blob), details)
    return RestoreResult.from_wire({**reply, "state": state, **extra})


def _open(
    codec: SnapshotCodec, event: StateRestored, blob: bytes, details: bytes | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state, and the conflicts and warnings to put in the reply (none to replace)."""
    state = codec.decode(
        event.state_id, blob, expected_checksum=event.checksum, expected_size=event.size
    )
    if event.details_in_reply:  # logged before details were kept apart: the reply has them
        return state, {}
    described = event.details
    if described is None:
        return state, {"conflicts": [], "warnings": []}
    opened = codec.decode(
        details_key(event.state_id),
        b"" if details is None else bytes(details),
        expected_checksum=described.checksum,
        expected_size=described.size,
    )
    return state, {"conflicts": opened["conflicts"], "warnings": opened["warnings"]}
