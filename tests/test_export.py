"""The log exported as JSON Lines, and an auditor's check of the export without the database."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import TEST_KEY, OpenManager

from checkpointd import CheckpointManager
from checkpointd.config import Config
from checkpointd.events.types import GENESIS_HASH
from checkpointd.ops.audit import ExportCheck, verify_export
from checkpointd.ops.export import Exported, export
from checkpointd.ops.files import chain_keys, codec_for, read_only

Lines = list[dict[str, Any]]


async def filled(open_manager: OpenManager, **settings: Any) -> CheckpointManager:
    manager = await open_manager(**settings)
    first = await manager.create(
        name="first", session_id="s", snapshot={"a": [1, 2.5, None], "t": "é"}, branches=["main"]
    )
    await manager.create(name="second", session_id="s", snapshot={"b": True}, branches=[])
    await manager.update_checkpoint(first.id, {"name": "renamed"})
    await manager.delete_checkpoint(first.id)
    return manager


def exported(db_path: Path, *, after_seq: int = 0, snapshots: bool = False, **config: Any) -> Lines:
    conn = read_only(str(db_path))
    try:
        codec = codec_for(Config(database_path=str(db_path), **config), conn) if snapshots else None
        out = io.BytesIO()
        export(conn, out, after_seq=after_seq, codec=codec)
    finally:
        conn.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def check(lines: Lines, **kwargs: Any) -> ExportCheck:
    return verify_export([json.dumps(line).encode() for line in lines], **kwargs)


def events_of(lines: Lines) -> Lines:
    return [line for line in lines if "seq" in line]


async def test_an_export_holds_every_event_as_stored_and_verifies(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Every event is exported with its seq, hashes and data (readable and as stored), between a
    header and an end line, and the export verifies."""
    manager = await filled(open_manager)
    lines = exported(db_path)

    events = events_of(lines)
    assert lines[0]["checkpointdExport"] == 1
    assert lines[0]["storeId"] == await manager.store_id()
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["type"] for e in events] == [
        "checkpoint.created",
        "checkpoint.created",
        "checkpoint.updated",
        "checkpoint.deleted",
    ]
    assert events[0]["prevHash"] == GENESIS_HASH.hex()
    assert all(b["prevHash"] == a["hash"] for a, b in itertools.pairwise(events))
    assert events[0]["data"]["name"] == "first"
    assert msgpack.unpackb(base64.b64decode(events[0]["dataMsgpack"]))["name"] == "first"
    assert lines[-1] == {"end": {"events": 4, "lastSeq": 4, "lastHash": events[-1]["hash"]}}
    assert not [line for line in lines if "snapshot" in line]
    result = check(lines)
    assert result.result.ok
    assert (result.result.events, result.last_seq) == (4, 4)


async def test_snapshots_are_exported_only_when_asked_and_verify_against_their_events(
    open_manager: OpenManager, db_path: Path
) -> None:
    """With snapshots, each stored checkpoint's snapshot follows its create event (a deleted
    one's is gone), and a snapshot changed in the export fails the check."""
    await filled(open_manager, encryption_key=TEST_KEY, enable_encryption=True)
    lines = exported(db_path, snapshots=True, encryption_key=TEST_KEY)

    snapshots = [line["snapshot"] for line in lines if "snapshot" in line]
    assert [(s["seq"], s["value"]) for s in snapshots] == [(2, {"b": True})]
    assert check(lines).result.ok
    snapshots[0]["value"]["b"] = False
    bad = check(lines).result
    assert not bad.ok
    assert bad.first_bad_seq == 3
    assert "snapshot of event 2" in (bad.problem or "")


async def test_an_export_after_a_seq_starts_from_that_event_hash(
    open_manager: OpenManager, db_path: Path
) -> None:
    """``after_seq`` exports only later events; the first carries the hash of the one before."""
    await filled(open_manager)
    whole = events_of(exported(db_path))
    lines = exported(db_path, after_seq=2)

    assert [e["seq"] for e in events_of(lines)] == [3, 4]
    assert events_of(lines)[0]["prevHash"] == whole[1]["hash"]
    result = check(lines)
    assert result.result.ok
    assert (result.after_seq, result.last_seq) == (2, 4)


def _edit_data_view(lines: Lines) -> None:
    events_of(lines)[1]["data"]["name"] = "forged"


def _edit_stored_data(lines: Lines) -> None:
    event = events_of(lines)[1]
    data = msgpack.unpackb(base64.b64decode(event["dataMsgpack"]))
    data["name"] = "forged"
    event["dataMsgpack"] = base64.b64encode(msgpack.packb(data)).decode()
    event["data"]["name"] = "forged"


def _drop_event(lines: Lines) -> None:
    lines.remove(events_of(lines)[1])


def _cut_off(lines: Lines) -> None:
    del lines[-1]


def _swap_session(lines: Lines) -> None:
    events_of(lines)[1]["sessionId"] = "other"


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (_edit_data_view, "data differs"),
        (_edit_stored_data, "does not match its hash"),
        (_swap_session, "does not match its hash"),
        (_drop_event, "where 2 comes next"),
        (_cut_off, "cut off"),
    ],
)
async def test_a_changed_export_fails_its_check_at_the_first_bad_event(
    open_manager: OpenManager,
    db_path: Path,
    tamper: Callable[[Lines], None],
    problem: str,
) -> None:
    """An edited, removed or cut-off part of an export is found; events before it are counted."""
    await filled(open_manager)
    lines = exported(db_path)
    tamper(lines)

    result = check(lines).result
    assert not result.ok
    assert problem in (result.problem or "")
    if tamper is not _cut_off:
        assert (result.first_bad_seq, result.events) == (2, 1)


def test_what_is_not_an_export_is_refused_without_a_crash() -> None:
    """Garbage, an empty file and another JSON document fail the check with a reason."""
    for lines, problem in [
        ([], "empty"),
        ([b"\xff\xfe not json"], "not JSON"),
        ([b'{"some": "document"}'], "not a checkpointd export"),
        ([b'{"checkpointdExport": 1, "afterSeq": 0}', b"[1, 2]"], "not a JSON object"),
        ([b'{"checkpointdExport": 1, "afterSeq": 0}', b'{"seq": "x"}'], "not an event line"),
    ]:
        result = verify_export(lines).result
        assert not result.ok, lines
        assert problem in (result.problem or ""), (lines, result)


async def test_signed_heads_are_exported_and_checked_with_the_key(
    open_manager: OpenManager, db_path: Path
) -> None:
    """With a key, the export carries the signed chain heads; verifying with the key reports the
    newest that holds, and a forged one fails."""
    manager = await filled(open_manager, encryption_key=TEST_KEY)
    await manager.close()  # closing signs the head
    lines = exported(db_path)
    heads = [line["signedHead"] for line in lines if "signedHead" in line]
    assert heads
    assert heads[-1]["seq"] == 4
    keys = chain_keys(manager.config, str(db_path))

    assert check(lines, keys=keys).result.signed_seq == 4
    assert check(lines).result.ok  # without the key: each head names its event's hash
    heads[-1]["mac"] = "00" * 32
    forged = check(lines, keys=keys).result
    assert not forged.ok
    assert "forged" in (forged.problem or "")


async def test_an_export_reads_one_snapshot_of_a_log_being_written(
    open_manager: OpenManager, db_path: Path
) -> None:
    """An event committed while an export runs is not in it: the export is the log as it was
    when it began, whole, up to its end line."""
    manager = await filled(open_manager)
    began, go_on = threading.Event(), threading.Event()

    class Gate(io.BytesIO):
        """Holds the export after its first line until the test has written more."""

        def write(self, data: Any) -> int:
            if not began.is_set():
                began.set()
                assert go_on.wait(30)
            return super().write(data)

    def export_to(out: io.BytesIO) -> Exported:
        conn = read_only(str(db_path))
        try:
            return export(conn, out)
        finally:
            conn.close()

    out = Gate()
    running = asyncio.ensure_future(asyncio.to_thread(export_to, out))
    assert await asyncio.to_thread(began.wait, 30)
    await manager.create(name="later", session_id="s", snapshot={}, branches=[])
    go_on.set()
    summary = await running
    assert manager.log_head == 5
    assert summary.last_seq == 4
    lines = out.getvalue().splitlines()
    assert json.loads(lines[-1])["end"]["lastSeq"] == 4
    assert verify_export(lines).result.ok
