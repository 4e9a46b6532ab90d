"""Each command's ``Reply``: its result as stored under an idempotency key, and back again.

No stored reply holds snapshot or state values (see ``checkpointd.write.idempotency``): a
checkpoint's is stored without its snapshot, which the retry's identical request supplies again.
A restore's ``Reply`` is ``checkpointd.restore_details.restore_reply``: its state is read back
from the blob row its event stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from checkpointd.models import Checkpoint
from checkpointd.results import CopySessionResult, PutWritesResult
from checkpointd.write.commands import ExpiredStep
from checkpointd.write.idempotency import Reply


def checkpoint(snapshot: Mapping[str, Any] | None = None) -> Reply:
    """A create's or an update's reply; ``snapshot`` is the one the request carries."""

    async def revive(reply: Mapping[str, Any]) -> Checkpoint:
        return _revived(reply, snapshot)

    return Reply(_checkpoint_wire, revive)


def checkpoints(snapshots: Sequence[Mapping[str, Any]]) -> Reply:
    """A batch create's reply; ``snapshots`` are the requests', in order."""

    def render(value: object) -> Mapping[str, Any]:
        assert isinstance(value, list)
        return {"checkpoints": [_checkpoint_wire(cp) for cp in value]}

    async def revive(reply: Mapping[str, Any]) -> list[Checkpoint]:
        stored = reply["checkpoints"]
        return [_revived(w, s) for w, s in zip(stored, snapshots, strict=True)]

    return Reply(render, revive)


def _deleted_wire(value: object) -> Mapping[str, Any]:
    return {"deleted": bool(value)}


async def _deleted(reply: Mapping[str, Any]) -> bool:
    return bool(reply["deleted"])


DELETED = Reply(_deleted_wire, _deleted)
"""A delete's reply: whether there was a checkpoint to delete."""


def _expired_wire(value: object) -> Mapping[str, Any]:
    assert isinstance(value, ExpiredStep)
    return {"deleted": value.total}


async def _expired(reply: Mapping[str, Any]) -> ExpiredStep:
    # The reply is stored by the last step of a call: nothing is left for a retry to expire.
    return ExpiredStep(expired=0, total=int(reply["deleted"]))


EXPIRED = Reply(_expired_wire, _expired)
"""An expiry call's reply: how many checkpoints all its steps expired."""


def _checkpoint_wire(value: object) -> Mapping[str, Any]:
    assert isinstance(value, Checkpoint)
    return replace(value, snapshot=None).to_wire()


def _revived(wire: Mapping[str, Any], snapshot: Mapping[str, Any] | None) -> Checkpoint:
    return replace(Checkpoint.from_wire(wire), snapshot=snapshot)


def _put_writes_wire(value: object) -> Mapping[str, Any]:
    assert isinstance(value, PutWritesResult)
    return value.to_wire()


async def _put_writes(reply: Mapping[str, Any]) -> PutWritesResult:
    return PutWritesResult.from_wire(reply)


PUT_WRITES = Reply(_put_writes_wire, _put_writes)
"""A put_writes' reply: the checkpoint and how many writes it stored."""


def _copied_wire(value: object) -> Mapping[str, Any]:
    assert isinstance(value, CopySessionResult)
    return value.to_wire()


async def _copied(reply: Mapping[str, Any]) -> CopySessionResult:
    return CopySessionResult.from_wire(reply)


COPIED = Reply(_copied_wire, _copied)
"""A copy_session's reply: how many checkpoints it copied, and their new ids."""


def _count_wire(value: object) -> Mapping[str, Any]:
    assert isinstance(value, int)
    return {"deleted": value}


async def _count(reply: Mapping[str, Any]) -> int:
    return int(reply["deleted"])


DELETED_COUNT = Reply(_count_wire, _count)
"""A prune_session's or delete_by_metadata's reply: how many checkpoints it deleted."""
