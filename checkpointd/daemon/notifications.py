"""Notifications: what a committed command tells subscribers, on which subject.

Pure: turns the writer's committed commands and their events into ``(subject, body)`` pairs.
Subjects are ``<prefix>.events.<type>.<session token>`` (docs/protocol.md); bodies are
``{seq, id, type, at, checkpointId, sessionId, data}``, always JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from checkpointd.events.domain import StateRestored, decode
from checkpointd.events.types import EventRecord, EventType
from checkpointd.storage.writer import Committed
from checkpointd.wire import session_token
from checkpointd.write import commands as cmd

__all__ = ["Outgoing", "notifications", "session_token", "without_state"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification ready to publish."""

    seq: int
    subject: str
    body: dict[str, Any]


def notifications(prefix: str, committed: list[Committed]) -> Iterator[Outgoing]:
    """The notifications of committed commands, in ``seq`` order.

    A restore asked with ``notify: false`` publishes nothing for its ``restored`` event (its
    backup checkpoint's ``created`` is still published).
    """
    for command, events in committed:
        for event in events:
            body = _body(command, event)
            if body is None:
                continue
            subject = f"{prefix}.events.{body['type']}.{session_token(event.session_id)}"
            yield Outgoing(event.seq, subject, body)


def _body(command: cmd.Command, record: EventRecord) -> dict[str, Any] | None:
    checkpoint_id = record.stream
    match decode(record):
        case StateRestored() as restored:
            assert isinstance(command, cmd.Restore)
            if not command.notify:
                return None
            checkpoint_id = restored.checkpoint_id
            data = {
                "state": command.merged_state,
                "conflicts": list(command.conflicts),  # with values: the log keeps only paths
                "backupCheckpointId": restored.backup_checkpoint_id,
                "strategy": restored.strategy,
                "checksum": restored.checksum,
            }
        case event:
            data = event.to_map()
    return {
        "seq": record.seq,
        "id": record.id,
        "type": EventType(record.type).word,
        "at": record.at,
        "checkpointId": checkpoint_id,
        "sessionId": record.session_id,
        "data": data,
    }


def without_state(body: Mapping[str, Any], download: Mapping[str, Any]) -> dict[str, Any]:
    """A restore notification too big to send: its state replaced by a download descriptor."""
    data = {k: v for k, v in body["data"].items() if k != "state"}
    data["stateDownload"] = dict(download)
    return {**body, "data": data}
