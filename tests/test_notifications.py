"""Notifications: subjects and bodies of what committed commands tell
subscribers (docs/protocol.md).

The input is real: a CheckpointManager runs the commands and a commit listener collects what
the writer committed; ``notifications()`` turns that into ``(subject, body)`` pairs.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from conftest import FakeClock
from hypothesis import given
from hypothesis import strategies as st

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.clock import parse_timestamp
from checkpointd.daemon.notifications import (
    Outgoing,
    notifications,
    session_token,
    without_state,
)
from checkpointd.storage.writer import Committed

PREFIX = "cp"
BODY_KEYS = {"seq", "id", "type", "at", "checkpointId", "sessionId", "data"}


class Collected:
    """A commit listener that keeps every committed batch it is given, in order."""

    def __init__(self, manager: CheckpointManager) -> None:
        self.batches: list[list[Committed]] = []
        manager.add_commit_listener(self)

    def __call__(self, committed: list[Committed]) -> None:
        self.batches.append(committed)

    def outgoing(self) -> list[Outgoing]:
        return [n for batch in self.batches for n in notifications(PREFIX, batch)]


async def make(manager: CheckpointManager, name: str, session_id: str, **fields: Any) -> Checkpoint:
    fields.setdefault("snapshot", {"state": {"name": name}})
    return await manager.create(name=name, session_id=session_id, branches=[], **fields)


def decode_token(token: str) -> str:
    if not token.startswith("~"):
        return token
    encoded = token[1:]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


# -- session tokens ----------------------------------------------------------------------------


@given(st.text(min_size=1))
def test_session_token_is_one_subject_token_that_decodes_back(session_id: str) -> None:
    """A session token has no '.', '*', '>' or whitespace and decodes back to the session id."""
    token = session_token(session_id)
    assert token
    assert not any(c in ".*>" or c.isspace() for c in token)
    assert re.fullmatch(r"~?[A-Za-z0-9_-]+|~", token)
    assert decode_token(token) == session_id


@given(st.from_regex(r"[A-Za-z0-9_-]+", fullmatch=True))
def test_plain_session_id_is_its_own_token(session_id: str) -> None:
    """A session id of [A-Za-z0-9_-]+ is used as its own token."""
    assert session_token(session_id) == session_id


@pytest.mark.parametrize(
    ("session_id", "token"),
    [
        ("s.1", "~cy4x"),
        ("a b", "~YSBi"),
        ("~x", "~fng"),
        ("s-1\n", "~cy0xCg"),
        ("été", "~w6l0w6k"),
    ],
)
def test_other_session_ids_become_unpadded_base64url(session_id: str, token: str) -> None:
    """Any other id becomes '~' and the unpadded base64url of its UTF-8."""
    assert session_token(session_id) == token


# -- bodies and subjects -----------------------------------------------------------------------


async def test_every_event_type_has_its_subject_and_body(
    manager: CheckpointManager, clock: FakeClock
) -> None:
    """Each event becomes <prefix>.events.<type>.<token> with the event's seq, id, at and data."""
    collected = Collected(manager)
    due = clock.now() + timedelta(minutes=1)
    doomed = await make(manager, "doomed", "s.1", retention_expires_at=due)
    await manager.update_checkpoint(doomed.id, {"name": "renamed"})
    kept = await make(manager, "kept", "s-2")
    await manager.restore_checkpoint(kept.id)
    clock.advance(timedelta(minutes=2))
    assert await manager.delete_expired_checkpoints() == 1
    assert await manager.delete_checkpoint(kept.id)

    sent = collected.outgoing()
    events = (await manager.history()).events
    assert [n.seq for n in sent] == [e.seq for e in events]
    assert [n.subject for n in sent] == [
        "cp.events.created.~cy4x",
        "cp.events.updated.~cy4x",
        "cp.events.created.s-2",
        "cp.events.restored.s-2",
        "cp.events.expired.~cy4x",
        "cp.events.deleted.s-2",
    ]
    for note, event in zip(sent, events, strict=True):
        body = note.body
        assert set(body) == BODY_KEYS
        assert (body["seq"], body["id"], body["sessionId"]) == (
            event.seq,
            event.id,
            event.session_id,
        )
        assert body["type"] == event.type.removeprefix("checkpoint.")
        assert parse_timestamp(body["at"]) == event.at
        assert json.loads(json.dumps(body)) == body  # bodies are always JSON
        if body["type"] != "restored":
            assert body["checkpointId"] == event.stream
            assert body["data"] == event.data
    expired = sent[4].body
    assert expired["checkpointId"] == doomed.id
    assert parse_timestamp(expired["data"]["retentionExpiresAt"]) == due


async def test_restore_body_names_the_checkpoint_target_and_result(
    manager: CheckpointManager,
) -> None:
    """A restore's body: the restored checkpoint, the target session, the result's state etc."""
    source = await make(manager, "source", "origin", snapshot={"state": {"a": 1, "b": 1}})
    await make(manager, "current", "target/1", snapshot={"state": {"a": 2, "c": 3}})
    collected = Collected(manager)
    result = await manager.restore_checkpoint(
        source.id,
        target_session_id="target/1",
        merge_strategy="merge",
        preserve_current_state=True,
    )
    sent = collected.outgoing()
    assert [n.subject for n in sent] == [
        f"cp.events.created.{session_token('target/1')}",
        f"cp.events.restored.{session_token('target/1')}",
    ]
    backup, restored = (n.body for n in sent)
    assert backup["checkpointId"] == result.backup_checkpoint_id
    assert restored["seq"] == result.event_seq
    assert restored["checkpointId"] == source.id
    assert restored["sessionId"] == "target/1"
    assert restored["type"] == "restored"
    assert restored["data"]["state"] == result.state == {"state": {"a": 1, "b": 1, "c": 3}}
    assert restored["data"]["conflicts"] == [dict(c) for c in result.conflicts]
    assert restored["data"]["conflicts"] == [
        {"path": "/state/a", "current": 2, "checkpoint": 1, "resolution": "checkpoint"}
    ]
    assert restored["data"]["backupCheckpointId"] == result.backup_checkpoint_id
    assert json.loads(json.dumps(restored)) == restored


async def test_restore_without_backup_has_null_backup_id(manager: CheckpointManager) -> None:
    """A restore that made no backup says so with backupCheckpointId null."""
    source = await make(manager, "source", "s-1")
    collected = Collected(manager)
    result = await manager.restore_checkpoint(source.id)
    (restored,) = (n.body for n in collected.outgoing())
    assert restored["type"] == "restored"
    assert restored["data"]["backupCheckpointId"] is None
    assert restored["data"]["state"] == result.state
    assert restored["data"]["conflicts"] == []


async def test_notify_false_suppresses_only_the_restored_notification(
    manager: CheckpointManager,
) -> None:
    """notify=False publishes no 'restored', yet the backup's 'created' is still published."""
    source = await make(manager, "source", "s-1", snapshot={"state": {"v": 1}})
    await make(manager, "later", "s-1", snapshot={"state": {"v": 2}})
    collected = Collected(manager)
    result = await manager.restore_checkpoint(source.id, preserve_current_state=True, notify=False)
    assert result.backup_checkpoint_id is not None
    sent = collected.outgoing()
    assert [n.subject for n in sent] == ["cp.events.created.s-1"]
    assert sent[0].body["checkpointId"] == result.backup_checkpoint_id
    types = [e.type for e in (await manager.history({"sessionId": "s-1"})).events]
    assert types[-2:] == ["checkpoint.created", "checkpoint.restored"]  # both were written


async def test_batch_notifies_each_checkpoint(manager: CheckpointManager) -> None:
    """A batch create publishes one 'created' per checkpoint, in seq order."""
    collected = Collected(manager)
    created = await manager.create_batch(
        [{"name": f"n{i}", "sessionId": "batch", "snapshot": {}, "branches": []} for i in range(3)]
    )
    sent = collected.outgoing()
    assert [n.body["checkpointId"] for n in sent] == [cp.id for cp in created]
    assert [n.seq for n in sent] == sorted(n.seq for n in sent)
    assert {n.subject for n in sent} == {"cp.events.created.batch"}


def test_no_committed_commands_no_notifications() -> None:
    """Nothing committed, nothing to publish."""
    assert list(notifications(PREFIX, [])) == []


# -- without_state -----------------------------------------------------------------------------


async def test_without_state_swaps_state_for_a_download(manager: CheckpointManager) -> None:
    """without_state drops data.state for data.stateDownload and leaves the rest as it was."""
    source = await make(manager, "source", "s-1", snapshot={"state": {"big": "x" * 100}})
    collected = Collected(manager)
    await manager.restore_checkpoint(source.id)
    (note,) = collected.outgoing()
    before = json.loads(json.dumps(note.body))
    download = {"id": "d1", "size": 123, "chunks": 2, "sha256": "ab" * 32}
    slim = without_state(note.body, download)
    assert "state" not in slim["data"]
    assert slim["data"]["stateDownload"] == download
    assert {k: v for k, v in slim["data"].items() if k != "stateDownload"} == {
        k: v for k, v in note.body["data"].items() if k != "state"
    }
    assert {k: v for k, v in slim.items() if k != "data"} == {
        k: v for k, v in note.body.items() if k != "data"
    }
    assert note.body == before  # the original body is untouched
