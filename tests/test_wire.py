"""The NATS interface on the wire (docs/protocol.md), as a client in any language sees it.

These tests speak raw nats-py to a real nats-server: no CheckpointClient, so what they assert is
what a user on the wire notices — subjects, headers, body encodings, status codes, notification
subjects and bodies — for every verb of docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgpack
import nats
import nats.errors
import pytest
from conftest import FakeClock, OpenManager
from contract import CONTENT_TYPE, ERROR, ERROR_CODE, JSON, MSG_ID, MSGPACK, SEQ
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from natsserver import NatsServer, start_nats_server, subscribed

from checkpointd import CheckpointManager, __version__
from checkpointd.daemon import endpoints
from checkpointd.daemon.service import CheckpointService

VERBS = (
    "create",
    "create_batch",
    "get",
    "list",
    "update",
    "delete",
    "delete_expired",
    "restore",
    "search",
    "stats",
    "validate",
    "lineage",
    "diff",
    "history",
    "verify",
    "rebuild",
    "health",
    "put_writes",
    "get_writes",
    "copy_session",
    "prune_session",
    "delete_by_metadata",
)
CHECKPOINT_KEYS = {
    "id",
    "name",
    "sessionId",
    "timestamp",
    "branches",
    "metadata",
    "createdBy",
    "size",
    "storedSize",
    "checksum",
    "compressed",
    "encrypted",
    "retentionExpiresAt",
    "restoredFrom",
    "version",
    "createdAt",
    "updatedAt",
}
RESTORE_KEYS = {
    "success",
    "restoredFrom",
    "targetSessionId",
    "state",
    "conflicts",
    "warnings",
    "backupCheckpointId",
    "eventSeq",
}
NOTIFICATION_KEYS = {"seq", "id", "type", "at", "checkpointId", "sessionId", "data"}
# Text that only Python internals would put in a reply.
LEAKS = ("Traceback", "Error(", 'File "', "<class ", "<object ", "object at 0x")
DEADLINE = 10.0  # seconds to wait for an expected message before failing


# -- the wire, spoken by hand --------------------------------------------------------------------


def encode(value: Any, encoding: str | None) -> bytes:
    if encoding == MSGPACK:
        return msgpack.packb(value, use_bin_type=True)
    return json.dumps(value).encode()


def decode(msg: Msg) -> Any:
    """A reply body in the encoding its Content-Type names (JSON when absent)."""
    if (msg.headers or {}).get(CONTENT_TYPE) == MSGPACK:
        return msgpack.unpackb(msg.data, raw=False)
    return json.loads(msg.data)


def assert_no_internals(msg: Msg) -> None:
    text = msg.data.decode("utf-8", "replace") + " ".join((msg.headers or {}).values())
    for leak in LEAKS:
        assert leak not in text, f"reply leaks {leak!r}: {text[:500]}"


@dataclass(frozen=True)
class Failure:
    """An error reply as the wire shows it."""

    status: int
    code: str
    message: str
    header_message: str


def failure(msg: Msg) -> Failure:
    """The error of an error reply; fails the test if the reply is not a well-formed error."""
    headers = msg.headers or {}
    assert ERROR_CODE in headers, f"expected an error reply, got {msg.data[:300]!r}"
    assert_no_internals(msg)
    body = decode(msg)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return Failure(
        status=int(headers[ERROR_CODE]),
        code=body["error"]["code"],
        message=body["error"]["message"],
        header_message=headers[ERROR],
    )


def result(msg: Msg) -> Any:
    """The result of a successful reply; fails the test on an error reply."""
    headers = msg.headers or {}
    assert ERROR_CODE not in headers, f"{headers.get(ERROR_CODE)}: {headers.get(ERROR)}"
    return decode(msg)


@dataclass(frozen=True)
class Wire:
    """A raw NATS connection and the subject prefix of the service under test."""

    nc: Client
    prefix: str

    async def call(
        self,
        verb: str,
        body: Any = None,
        *,
        encoding: str | None = None,
        headers: Mapping[str, str] | None = None,
        payload: bytes | None = None,
    ) -> Msg:
        """Send one request to ``<prefix>.<verb>``; ``encoding`` None sends no Content-Type."""
        sent = dict(headers or {})
        if encoding is not None:
            sent.setdefault(CONTENT_TYPE, encoding)
        data = payload if payload is not None else encode(body, encoding)
        return await self.nc.request(
            f"{self.prefix}.{verb}", data, timeout=DEADLINE, headers=sent or None
        )

    async def ok(self, verb: str, body: Any = None, **options: Any) -> Any:
        return result(await self.call(verb, body, **options))

    async def fail(self, verb: str, body: Any = None, **options: Any) -> Failure:
        return failure(await self.call(verb, body, **options))

    async def create(self, **fields: Any) -> dict[str, Any]:
        reply: dict[str, Any] = await self.ok("create", checkpoint(**fields))
        return reply

    async def total(self, session_id: str) -> int:
        return int((await self.ok("list", {"sessionId": session_id}))["total"])


def checkpoint(**fields: Any) -> dict[str, Any]:
    """A create request body, with ``fields`` replacing the defaults."""
    body: dict[str, Any] = {
        "name": "milestone",
        "sessionId": "s-1",
        "snapshot": {"state": {"step": 1}},
        "branches": ["main"],
    }
    body.update(fields)
    return body


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def token(session_id: str) -> str:
    """The notification subject token docs/protocol.md specifies, computed independently."""
    if session_id and all(c.isascii() and (c.isalnum() or c in "_-") for c in session_id):
        return session_id
    return "~" + base64.urlsafe_b64encode(session_id.encode()).decode().rstrip("=")


async def next_notifications(sub: Subscription, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next ``count`` notifications as (subject, JSON body), waiting at most DEADLINE."""
    received = []
    async with asyncio.timeout(DEADLINE):
        for _ in range(count):
            msg = await sub.next_msg(timeout=DEADLINE)
            received.append((msg.subject, json.loads(msg.data)))
    return received


@contextlib.asynccontextmanager
async def serving(
    manager: CheckpointManager, url: str, *, prefix: str | None = None, **options: Any
) -> AsyncIterator[Wire]:
    """``manager`` served by a CheckpointService of our own; yields a raw client's Wire."""
    prefix = prefix or f"t{uuid.uuid4().hex[:12]}.checkpoint"
    service_nc = await nats.connect(url)
    client_nc = await nats.connect(url)
    service = CheckpointService(
        manager, service_nc, prefix=prefix, queue_group=prefix.replace(".", "-"), **options
    )
    await service.start()
    try:
        yield Wire(client_nc, prefix)
    finally:
        await service.stop()
        await client_nc.close()
        await service_nc.close()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A raw nats-py connection to the session's nats-server."""
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.fixture
async def wire(nc: Client, served: str) -> Wire:
    """The ``served`` service, spoken to over a raw connection."""
    return Wire(nc, served)


async def test_endpoints_answer_as_soon_as_start_returns(
    manager: CheckpointManager, nc: Client, nats_server: NatsServer
) -> None:
    """Once ``start()`` returned, a request from another connection is answered (no
    "no responders"): the server has the endpoints' subscriptions (what READY=1 promises)."""
    service_nc = await nats.connect(nats_server.url)
    try:
        for _ in range(20):  # the race is lost often, not always
            prefix = f"t{uuid.uuid4().hex[:12]}.checkpoint"
            service = CheckpointService(manager, service_nc, prefix=prefix, queue_group=prefix)
            await service.start()
            try:
                reply = await nc.request(f"{prefix}.stats", b"{}", timeout=DEADLINE)
            finally:
                await service.stop()
            assert result(reply)["totalCheckpoints"] == 0
    finally:
        await service_nc.close()


# -- 1. encodings --------------------------------------------------------------------------------


async def test_json_is_the_default_encoding(wire: Wire) -> None:
    """A create without Content-Type is read as JSON and answered in JSON: the bare checkpoint
    in camelCase, without an envelope and without the snapshot the caller already has."""
    msg = await wire.call("create", checkpoint())
    assert (msg.headers or {}).get(CONTENT_TYPE, JSON) == JSON
    cp = json.loads(msg.data)
    assert set(cp) == CHECKPOINT_KEYS
    assert cp["name"] == "milestone"
    assert cp["sessionId"] == "s-1"
    assert cp["branches"] == ["main"]
    assert cp["checksum"].startswith("sha256:")
    assert isinstance(cp["storedSize"], int)
    assert isinstance(cp["createdAt"], str)
    assert cp["version"] == 1


async def test_msgpack_request_gets_a_msgpack_reply(wire: Wire) -> None:
    """A create sent as msgpack is answered in msgpack with the same camelCase checkpoint."""
    msg = await wire.call("create", checkpoint(), encoding=MSGPACK)
    assert msg.headers is not None
    assert msg.headers[CONTENT_TYPE] == MSGPACK
    cp = msgpack.unpackb(msg.data, raw=False)
    assert set(cp) == CHECKPOINT_KEYS
    assert cp["sessionId"] == "s-1"
    assert cp["checksum"].startswith("sha256:")


@pytest.mark.parametrize("encoding", [None, MSGPACK])
async def test_get_returns_the_snapshot_the_create_reply_left_out(
    wire: Wire, encoding: str | None
) -> None:
    """``get`` returns the checkpoint the create reply described, with its snapshot."""
    snapshot = {"state": {"step": 3, "list": [1, "two", None, 4.5], "nested": {"ok": True}}}
    created = await wire.ok("create", checkpoint(snapshot=snapshot), encoding=encoding)
    got = await wire.ok("get", {"id": created["id"]}, encoding=encoding)
    assert got["snapshot"] == snapshot
    assert {k: v for k, v in got.items() if k != "snapshot"} == created


# -- 2. every verb -------------------------------------------------------------------------------


async def test_create_batch_returns_every_checkpoint(wire: Wire) -> None:
    """``create_batch`` answers ``{checkpoints}``, one per input in order, without snapshots."""
    body = {"checkpoints": [checkpoint(name="one"), checkpoint(name="two")]}
    reply = await wire.ok("create_batch", body)
    assert set(reply) == {"checkpoints"}
    assert [cp["name"] for cp in reply["checkpoints"]] == ["one", "two"]
    assert all(set(cp) == CHECKPOINT_KEYS for cp in reply["checkpoints"])
    assert await wire.total("s-1") == 2


async def test_get_without_snapshot_leaves_it_out(wire: Wire) -> None:
    """``get`` with ``includeSnapshot: false`` answers the checkpoint without ``snapshot``."""
    cp = await wire.create()
    got = await wire.ok("get", {"id": cp["id"], "includeSnapshot": False})
    assert got == cp


async def test_list_by_session_filters_orders_and_pages(wire: Wire) -> None:
    """``list`` by sessionId applies ``where``/``params``, ``orderBy`` and ``pagination``."""
    await wire.create(name="b-auth", feature="auth")
    await wire.create(name="a-auth", feature="auth")
    await wire.create(name="c-billing", feature="billing")
    await wire.create(name="d-auth", sessionId="s-2", feature="auth")
    body = {
        "sessionId": "s-1",
        "where": "metadata->>'feature' = ?",
        "params": ["auth"],
        "orderBy": [{"field": "name", "direction": "ASC"}],
        "pagination": {"page": 1, "pageSize": 1},
    }
    first = await wire.ok("list", body)
    second = await wire.ok("list", {**body, "pagination": {"page": 2, "pageSize": 1}})
    assert set(first) == {"items", "total", "page", "pageSize"}
    assert (first["total"], first["page"], first["pageSize"]) == (2, 1, 1)
    assert [cp["name"] for cp in first["items"]] == ["a-auth"]
    assert [cp["name"] for cp in second["items"]] == ["b-auth"]
    assert set(first["items"][0]) == CHECKPOINT_KEYS


async def test_list_by_feature_spans_sessions(wire: Wire) -> None:
    """``list`` by feature returns that feature's checkpoints from every session."""
    await wire.create(name="one", feature="auth")
    await wire.create(name="two", sessionId="s-2", feature="auth")
    await wire.create(name="three", feature="billing")
    body = {"feature": "auth", "orderBy": [{"field": "name", "direction": "desc"}]}
    page = await wire.ok("list", body)
    assert page["total"] == 2
    assert [cp["name"] for cp in page["items"]] == ["two", "one"]


async def test_update_with_expected_version_returns_the_new_version(wire: Wire) -> None:
    """``update`` with the current ``expectedVersion`` answers the changed checkpoint."""
    cp = await wire.create(metadata={"feature": "auth", "tags": ["x"]})
    body = {
        "id": cp["id"],
        "changes": {"name": "renamed", "metadata": {"feature": "billing"}},
        "expectedVersion": cp["version"],
    }
    updated = await wire.ok("update", body)
    assert set(updated) == CHECKPOINT_KEYS
    assert updated["name"] == "renamed"
    assert updated["metadata"]["feature"] == "billing"
    assert "tags" not in updated["metadata"]  # metadata is replaced whole
    assert updated["version"] == cp["version"] + 1
    assert updated["checksum"] == cp["checksum"]


async def test_delete_answers_deleted_true_then_false(wire: Wire) -> None:
    """``delete`` answers ``{deleted: true}``, then ``{deleted: false}`` for the gone id."""
    cp = await wire.create()
    assert await wire.ok("delete", {"id": cp["id"]}) == {"deleted": True}
    assert await wire.ok("delete", {"id": cp["id"]}) == {"deleted": False}
    assert (await wire.fail("get", {"id": cp["id"]})).status == 404


async def test_delete_expired_counts_what_it_expired(wire: Wire, clock: FakeClock) -> None:
    """``delete_expired`` answers ``{deleted: n}`` for the checkpoints past their retention."""
    due = await wire.create(name="due", retentionExpiresAt=iso(clock.now() + timedelta(hours=1)))
    kept = await wire.create(name="kept", retentionExpiresAt=iso(clock.now() + timedelta(days=9)))
    forever = await wire.create(name="forever")
    assert await wire.ok("delete_expired", {}) == {"deleted": 0}
    clock.advance(timedelta(hours=2))
    assert await wire.ok("delete_expired", {}) == {"deleted": 1}
    assert (await wire.fail("get", {"id": due["id"]})).status == 404
    for cp in (kept, forever):
        assert (await wire.ok("get", {"id": cp["id"]}))["name"] == cp["name"]


async def test_restore_answers_the_documented_result(wire: Wire) -> None:
    """``restore`` merges into the session's state and answers every RestoreResult field."""
    old = await wire.create(name="old", snapshot={"state": {"a": 1, "b": 1}})
    await wire.create(name="new", snapshot={"state": {"a": 2, "c": 3}})
    body = {
        "id": old["id"],
        "mergeStrategy": "merge",
        "preserveCurrentState": True,
        "timeout": 10_000,
    }
    restored = await wire.ok("restore", body)
    assert set(restored) == RESTORE_KEYS
    assert restored["success"] is True
    assert restored["restoredFrom"] == old["id"]
    assert restored["targetSessionId"] == "s-1"
    assert restored["state"] == {"state": {"a": 1, "b": 1, "c": 3}}
    assert restored["conflicts"] == [
        {"path": "/state/a", "current": 2, "checkpoint": 1, "resolution": "checkpoint"}
    ]
    assert all(isinstance(warning, str) for warning in restored["warnings"])
    assert isinstance(restored["eventSeq"], int)
    backup = await wire.ok("get", {"id": restored["backupCheckpointId"]})
    assert backup["snapshot"] == {"state": {"a": 2, "c": 3}}
    assert backup["sessionId"] == "s-1"


async def test_restore_timeout_is_in_milliseconds(wire: Wire) -> None:
    """A wire ``timeout`` of 0.005 is 5 microseconds (503, nothing written); 10000 is 10 s."""
    cp = await wire.create()
    too_short = await wire.fail("restore", {"id": cp["id"], "timeout": 0.005})
    assert (too_short.status, too_short.code) == (503, "unavailable")
    assert "5e-06" in too_short.message  # the seconds the request was given
    history = await wire.ok("history", {"sessionId": "s-1"})
    assert [e["type"] for e in history["events"]] == ["checkpoint.created"]
    assert (await wire.ok("restore", {"id": cp["id"], "timeout": 10_000}))["success"] is True


async def test_search_answers_scored_items(wire: Wire) -> None:
    """``search`` in both forms answers items that each carry a ``score``."""
    await wire.create(name="release milestone", feature="auth", tags=["stable"])
    await wire.create(name="nightly build", feature="auth")
    await wire.create(name="milestone two", feature="billing")
    simple = await wire.ok("search", {"query": "milestone", "limit": 10})
    assert simple["total"] == 2
    assert {cp["name"] for cp in simple["items"]} == {"release milestone", "milestone two"}
    assert all(isinstance(cp["score"], int | float) for cp in simple["items"])
    advanced = await wire.ok(
        "search",
        {
            "query": "milestone",
            "filters": {"feature": ["auth"], "tags": ["stable"]},
            "sorting": {"field": "timestamp", "direction": "desc"},
            "pagination": {"page": 1, "pageSize": 5},
        },
    )
    assert advanced["total"] == 1
    assert [cp["name"] for cp in advanced["items"]] == ["release milestone"]
    assert "score" in advanced["items"][0]


async def test_stats_answers_totals_and_counts(wire: Wire) -> None:
    """``stats`` answers the documented totals, counts and oldest/newest checkpoints."""
    first = await wire.create(name="first", feature="auth", priority="high")
    await wire.create(name="second", sessionId="s-2", feature="auth")
    stats = await wire.ok("stats", {})
    assert set(stats) == {
        "totalCheckpoints",
        "totalSize",
        "storedSize",
        "averageSize",
        "byFeature",
        "byPriority",
        "bySession",
        "oldestCheckpoint",
        "newestCheckpoint",
    }
    assert stats["totalCheckpoints"] == 2
    assert stats["byFeature"] == {"auth": 2}
    assert stats["byPriority"] == {"high": 1, "normal": 1}
    assert stats["bySession"] == {"s-1": 1, "s-2": 1}
    assert isinstance(stats["averageSize"], float)
    assert set(stats["oldestCheckpoint"]) == {"id", "name", "timestamp"}
    assert stats["oldestCheckpoint"]["id"] == first["id"]


async def test_validate_answers_the_report(wire: Wire) -> None:
    """``validate`` answers the ValidationReport of a sound checkpoint: everything valid."""
    cp = await wire.create(snapshot={"sessions": ["s-1"], "state": {"progress": 50}})
    report = await wire.ok("validate", {"id": cp["id"]})
    assert report == {
        "isValid": True,
        "checksumValid": True,
        "sizeMatches": True,
        "schemaValid": True,
        "errors": [],
        "warnings": report["warnings"],
    }


async def test_lineage_answers_ancestors_and_descendants(wire: Wire) -> None:
    """``lineage`` answers ``{ancestors, descendants}`` as checkpoints, nearest first."""
    root = await wire.create(name="root")
    child = await wire.create(name="child", metadata={"parentCheckpoint": root["id"]})
    grandchild = await wire.create(name="grand", metadata={"parentCheckpoint": child["id"]})
    middle = await wire.ok("lineage", {"id": child["id"]})
    assert set(middle) == {"ancestors", "descendants", "next"}
    assert [cp["id"] for cp in middle["ancestors"]] == [root["id"]]
    assert [cp["id"] for cp in middle["descendants"]] == [grandchild["id"]]
    assert middle["next"] is None
    top = await wire.ok("lineage", {"id": root["id"]})
    assert [cp["id"] for cp in top["descendants"]] == [child["id"], grandchild["id"]]


async def test_lineage_pages_with_limit_and_offset(wire: Wire) -> None:
    """``lineage`` with ``limit`` answers that many of each list and ``next``, the ``offset``
    of the following page (null at the end); a limit over 1000 is a 400."""
    root = await wire.create(name="root")
    child = await wire.create(name="child", metadata={"parentCheckpoint": root["id"]})
    grandchild = await wire.create(name="grand", metadata={"parentCheckpoint": child["id"]})
    first = await wire.ok("lineage", {"id": root["id"], "limit": 1})
    assert ([cp["id"] for cp in first["descendants"]], first["next"]) == ([child["id"]], 1)
    last = await wire.ok("lineage", {"id": root["id"], "limit": 1, "offset": 1})
    assert ([cp["id"] for cp in last["descendants"]], last["next"]) == ([grandchild["id"]], None)
    refused = await wire.fail("lineage", {"id": root["id"], "limit": 1001})
    assert (refused.status, refused.code) == (400, "invalid")
    assert "limit" in refused.message


async def test_diff_answers_changes(wire: Wire) -> None:
    """``diff`` of ``{from, to}`` answers ``{changes}`` with JSON Pointer paths."""
    before = await wire.create(snapshot={"state": {"a": 1, "b": 2, "gone": True}})
    after = await wire.create(snapshot={"state": {"a": 1, "b": 3, "new": [1]}})
    changes = (await wire.ok("diff", {"from": before["id"], "to": after["id"]}))["changes"]
    assert sorted(changes, key=lambda c: c["path"]) == [
        {"path": "/state/b", "op": "replace", "before": 2, "after": 3},
        {"path": "/state/gone", "op": "remove", "before": True},
        {"path": "/state/new", "op": "add", "after": [1]},
    ]


async def test_history_pages_with_next(wire: Wire) -> None:
    """``history`` answers events oldest first; following ``next`` reaches every event once."""
    cp = await wire.create()
    await wire.ok("update", {"id": cp["id"], "changes": {"name": "renamed"}})
    await wire.ok("delete", {"id": cp["id"]})
    whole = await wire.ok("history", {"checkpointId": cp["id"]})
    assert set(whole) == {"events", "next"}
    assert whole["next"] is None
    types = ["checkpoint.created", "checkpoint.updated", "checkpoint.deleted"]
    assert [e["type"] for e in whole["events"]] == types
    paged: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = await wire.ok("history", {"checkpointId": cp["id"], "afterSeq": after, "limit": 2})
        paged.extend(page["events"])
        after = page["next"]
    assert paged == whole["events"]


async def test_verify_answers_ok_and_the_count(wire: Wire) -> None:
    """``verify`` answers ``{ok, events, firstBadSeq}`` and the signed head: the store holds a
    key, the first group was signed, the clock stood still since (so the second was not)."""
    await wire.create()
    await wire.create()
    assert await wire.ok("verify", {}) == {
        "ok": True,
        "events": 2,
        "firstBadSeq": None,
        "signedSeq": 1,
        "unsignedTail": 1,
        "problem": None,
    }


async def test_rebuild_answers_the_events_replayed(wire: Wire) -> None:
    """``rebuild`` answers ``{events}`` and the rebuilt views answer as before."""
    cp = await wire.create()
    await wire.create()
    assert await wire.ok("rebuild", {}) == {"events": 2}
    assert await wire.ok("get", {"id": cp["id"], "includeSnapshot": False}) == cp


# -- 3. error codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "body", "match"),
    [
        ("create", {"sessionId": "s", "snapshot": {}, "branches": []}, r"^name: is required"),
        ("create", checkpoint(colour="red"), r"unknown field\(s\) colour"),
        ("create", checkpoint(name=5), r"^name: expected a string"),
        ("create", checkpoint(snapshot=[1]), r"^snapshot: expected an object"),
        ("create", checkpoint(checksum="md5:abc"), r"checksum"),
        ("get", {}, r"^id: expected a string"),
        ("get", {"id": "x", "includeSnapshot": "yes"}, r"^includeSnapshot"),
        ("list", {"sessionId": "s", "where": "name = = 'x'"}, r"position \d+"),
        ("list", {"sessionId": "s", "where": "password = 'x'"}, r"password"),
        ("list", {"sessionId": "s", "pagination": {"pageSize": 1001}}, r"1000"),
        ("list", {}, r"sessionId"),
        ("update", {"id": "x", "changes": {"snapshot": {}}}, r"immutable"),
        ("update", {"id": "x", "changes": {"name": "n"}, "expectedVersion": "1"}, r"Version"),
        ("restore", {"id": "x", "mergeStrategy": "sideways"}, r"mergeStrategy|sideways"),
        ("restore", {"id": "x", "timeout": -1}, r"^timeout"),
        ("search", {"query": 5}, r"^query"),
        ("stats", {"extra": 1}, r"unknown field\(s\) extra"),
        ("history", {"afterSeq": "x"}, r"afterSeq"),
        ("diff", {"from": "x"}, r"^to: expected a string"),
        ("list", {"sessionId": "s", "pagination": "page 2"}, r"pagination"),
        ("list", {"sessionId": "s", "includeSnapshot": "yes"}, r"^includeSnapshot"),
    ],
)
async def test_invalid_request_is_400(wire: Wire, verb: str, body: Any, match: str) -> None:
    """A missing, unknown or wrong-typed field or a bad filter is a 400 ``invalid`` error."""
    error = await wire.fail(verb, body)
    assert (error.status, error.code) == (400, "invalid")
    assert error.header_message == error.message
    assert re.search(match, error.message), error.message


async def test_nan_timeout_is_400(wire: Wire) -> None:
    """A restore ``timeout`` of NaN (msgpack can carry one) is a 400, not a 503 time-out."""
    cp = await wire.create()
    body = {"id": cp["id"], "timeout": float("nan")}
    error = await wire.fail("restore", body, encoding=MSGPACK)
    assert (error.status, error.code) == (400, "invalid")
    assert error.message.startswith("timeout")


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("history", {"afterSeq": 2**70}),
        ("history", {"afterSeq": 2**64 - 1}),
        ("list", {"sessionId": "s", "pagination": {"page": 2**70}}),
        ("list", {"sessionId": "s", "pagination": {"page": 2**63}}),
        ("search", {"query": "x", "pagination": {"page": 2**70}}),
        ("update", {"id": "x", "changes": {"name": "n"}, "expectedVersion": 2**70}),
        ("create", checkpoint(size=2**70)),
    ],
)
async def test_out_of_range_numbers_are_never_a_500(wire: Wire, verb: str, body: Any) -> None:
    """A number too big for the store is a client error (or an empty page), never a 500."""
    msg = await wire.call(verb, body)
    if ERROR_CODE in (msg.headers or {}):
        assert failure(msg).status in {400, 404, 409, 422}
    else:
        assert result(msg).get("events", result(msg).get("items")) == []


async def test_errors_answer_in_the_request_encoding(wire: Wire) -> None:
    """An error to a msgpack request is a msgpack ``{"error": ...}`` body."""
    msg = await wire.call("get", {"id": "missing"}, encoding=MSGPACK)
    assert (msg.headers or {})[CONTENT_TYPE] == MSGPACK
    assert msgpack.unpackb(msg.data, raw=False)["error"]["code"] == "not_found"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON"])
async def test_content_type_parameters_and_case_are_accepted(wire: Wire, content_type: str) -> None:
    """A JSON Content-Type with a charset parameter or in capitals is still JSON."""
    cp = await wire.ok("create", checkpoint(), headers={CONTENT_TYPE: content_type})
    assert cp["sessionId"] == "s-1"


@pytest.mark.parametrize(
    "field", ["x\r\nNats-Service-Error-Code: 200", "x\nContent-Type: text/html", "ü\u2028x"]
)
async def test_user_text_cannot_break_the_error_headers(wire: Wire, field: str) -> None:
    """Field names echoed in an error message cannot add or change reply headers."""
    msg = await wire.call("create", checkpoint(**{field: 1}))
    error = failure(msg)
    assert (error.status, error.code) == (400, "invalid")
    assert set(msg.headers or {}) == {ERROR, ERROR_CODE, CONTENT_TYPE, SEQ}
    assert (msg.headers or {})[CONTENT_TYPE] == JSON
    assert "\n" not in error.header_message


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        ("get", {"id": "missing"}),
        ("update", {"id": "missing", "changes": {"name": "n"}}),
        ("validate", {"id": "missing"}),
        ("restore", {"id": "missing"}),
        ("diff", {"from": "missing", "to": "missing"}),
    ],
)
async def test_missing_checkpoint_is_404(wire: Wire, verb: str, body: Any) -> None:
    """A verb naming a checkpoint that does not exist is a 404 ``not_found`` error."""
    error = await wire.fail(verb, body)
    assert (error.status, error.code) == (404, "not_found")
    assert "'missing' not found" in error.message


async def test_stale_expected_version_is_409(wire: Wire) -> None:
    """``update`` with a stale ``expectedVersion`` is a 409 ``conflict`` and changes nothing."""
    cp = await wire.create()
    await wire.ok("update", {"id": cp["id"], "changes": {"name": "v2"}})
    stale = {"id": cp["id"], "changes": {"name": "v3"}, "expectedVersion": cp["version"]}
    error = await wire.fail("update", stale)
    assert (error.status, error.code) == (409, "conflict")
    assert (await wire.ok("get", {"id": cp["id"]}))["name"] == "v2"


async def test_snapshot_over_the_limit_is_413(
    open_manager: OpenManager, nats_server: NatsServer
) -> None:
    """A snapshot over ``max_checkpoint_size`` is a 413 ``too_large`` error; nothing is kept."""
    manager = await open_manager(max_checkpoint_size=1024)
    async with serving(manager, nats_server.url) as wire:
        error = await wire.fail("create", checkpoint(snapshot={"blob": "x" * 4096}))
        assert (error.status, error.code) == (413, "too_large")
        assert "1024" in error.message
        assert await wire.total("s-1") == 0


@pytest.mark.parametrize(
    "fields",
    [{"checksum": "sha256:" + "0" * 64}, {"size": 1}],
    ids=["checksum", "size"],
)
async def test_supplied_checksum_or_size_that_does_not_match_is_422(
    wire: Wire, fields: dict[str, Any]
) -> None:
    """A well-formed ``checksum`` or a ``size`` that does not match is a 422 ``integrity``."""
    error = await wire.fail("create", checkpoint(**fields))
    assert (error.status, error.code) == (422, "integrity")
    assert await wire.total("s-1") == 0


async def test_closed_manager_is_503(open_manager: OpenManager, nats_server: NatsServer) -> None:
    """A request to a service whose manager is closed is a 503 ``unavailable`` error."""
    manager = await open_manager()
    async with serving(manager, nats_server.url) as wire:
        await manager.close()
        error = await wire.fail("stats", {})
        assert (error.status, error.code) == (503, "unavailable")


# -- 4. malformed input --------------------------------------------------------------------------


def _deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _deep_msgpack(depth: int) -> bytes:
    return b"\x81\xa1a" * depth + b"\x01"  # {"a": {"a": ... 1}}


MALFORMED = [
    pytest.param(b'{"name": ', None, id="invalid-json"),
    pytest.param(msgpack.packb(checkpoint())[:-3], MSGPACK, id="truncated-msgpack"),
    pytest.param(b"[1, 2]", None, id="json-list"),
    pytest.param(b'"create"', None, id="json-string"),
    pytest.param(b"42", None, id="json-number"),
    pytest.param(msgpack.packb([1, 2]), MSGPACK, id="msgpack-list"),
    pytest.param(msgpack.packb("create"), MSGPACK, id="msgpack-string"),
    pytest.param(b'{"name": "\xff\xfe"}', None, id="invalid-utf8-json"),
    pytest.param(b"\x81\xa4name\xa2\xff\xfe", MSGPACK, id="invalid-utf8-msgpack"),
    pytest.param(_deep_json(10_000), None, id="deep-json"),
    pytest.param(_deep_msgpack(10_000), MSGPACK, id="deep-msgpack"),
    pytest.param(b"\x81\x01\x02", MSGPACK, id="msgpack-int-key"),
    pytest.param(json.dumps(checkpoint()).encode(), "text/plain", id="unsupported-type"),
    pytest.param(json.dumps(checkpoint()).encode(), MSGPACK, id="json-labelled-msgpack"),
    pytest.param(b"", None, id="empty-body"),
    pytest.param(b'{"snapshot": NaN}', None, id="json-nan"),
    pytest.param(
        json.dumps(checkpoint(snapshot={"x": "\ud800"})).encode(), None, id="json-surrogate"
    ),
    pytest.param(b"\x81\xa4name\xa3\xed\xa0\x80", MSGPACK, id="msgpack-surrogate"),
    pytest.param(json.dumps(checkpoint(snapshot={"n": 10**30})).encode(), None, id="bigint"),
    pytest.param(
        msgpack.packb(checkpoint(snapshot={"x": msgpack.ExtType(5, b"ab")})),
        MSGPACK,
        id="msgpack-ext",
    ),
    pytest.param(
        msgpack.packb(checkpoint(snapshot={"x": b"\x00\x01"}), use_bin_type=True),
        MSGPACK,
        id="msgpack-bytes",
    ),
    pytest.param(
        msgpack.packb(checkpoint(name=b"raw"), use_bin_type=True), MSGPACK, id="bytes-name"
    ),
]


@pytest.mark.parametrize(("payload", "content_type"), MALFORMED)
async def test_malformed_create_is_400_and_the_service_keeps_serving(
    wire: Wire, payload: bytes, content_type: str | None
) -> None:
    """A malformed create body is a 400 without internals; the next request succeeds."""
    headers = {CONTENT_TYPE: content_type} if content_type else None
    error = failure(await wire.call("create", payload=payload, headers=headers))
    assert (error.status, error.code) == (400, "invalid")
    assert (await wire.create())["name"] == "milestone"
    assert await wire.total("s-1") == 1


async def test_a_request_without_a_reply_inbox_is_applied_and_the_service_keeps_serving(
    wire: Wire,
) -> None:
    """A create published without a reply subject is applied (and notified), though nobody is
    answered; a bad one sent that way is dropped; the service keeps answering requests."""
    created = await wire.nc.subscribe(f"{wire.prefix}.events.created.s-1")
    await wire.nc.flush()
    await wire.nc.publish(f"{wire.prefix}.create", b"{not json")
    await wire.nc.publish(f"{wire.prefix}.create", encode(checkpoint(name="unanswered"), JSON))
    notification = json.loads((await created.next_msg(timeout=DEADLINE)).data)
    assert (await wire.ok("get", {"id": notification["checkpointId"]}))["name"] == "unanswered"
    assert (await wire.create())["name"] == "milestone"
    assert await wire.total("s-1") == 2


@pytest.mark.parametrize(
    "checkpoint_id",
    [".", "*", ">", " ", "a b", "../../etc/passwd", "$SRV.PING", "%s%n", "'; DROP TABLE x;--"],
)
async def test_hostile_id_is_not_found(wire: Wire, checkpoint_id: str) -> None:
    """An id with subject or path syntax in it is simply not found, on every verb that reads."""
    for verb in ("get", "validate"):
        error = await wire.fail(verb, {"id": checkpoint_id})
        assert (error.status, error.code) == (404, "not_found"), verb
    assert await wire.ok("delete", {"id": checkpoint_id}) == {"deleted": False}
    assert (await wire.create())["sessionId"] == "s-1"


@pytest.mark.parametrize("verb", ["get", "delete", "validate", "update", "restore"])
async def test_ten_kilobyte_id_is_400(wire: Wire, verb: str) -> None:
    """An id of 10 KB is a 400 with a short message, not an echo of the id."""
    body: dict[str, Any] = {"id": "x" * 10_240}
    if verb == "update":
        body["changes"] = {"name": "n"}
    msg = await wire.call(verb, body)
    error = failure(msg)
    assert (error.status, error.code) == (400, "invalid")
    assert len(msg.data) < 2048
    assert (await wire.create())["name"] == "milestone"


@pytest.mark.parametrize("session_id", [".", "*", ">", "a b", "../x", "$SRV.>", "ünï/cødé"])
async def test_hostile_session_id_is_kept_as_given(wire: Wire, session_id: str) -> None:
    """A session id with subject or path syntax is stored and listed exactly as given."""
    cp = await wire.create(sessionId=session_id)
    assert cp["sessionId"] == session_id
    page = await wire.ok("list", {"sessionId": session_id})
    assert [item["id"] for item in page["items"]] == [cp["id"]]


async def test_ten_kilobyte_session_id_and_message_id_are_400(wire: Wire) -> None:
    """A 10 KB session id, or a 10 KB ``Nats-Msg-Id``, is a 400 and creates nothing."""
    huge = "s" * 10_240
    error = await wire.fail("create", checkpoint(sessionId=huge))
    assert (error.status, error.code) == (400, "invalid")
    error = await wire.fail("create", checkpoint(), headers={MSG_ID: huge})
    assert (error.status, error.code) == (400, "invalid")
    assert await wire.total("s-1") == 0


# -- 5. unexpected exceptions --------------------------------------------------------------------


async def test_unexpected_exception_is_a_generic_500(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint failing unexpectedly answers 500 ``internal`` without the exception's text."""

    async def broken(*_: Any) -> Mapping[str, Any]:
        raise RuntimeError("secret detail")

    # A fake for what cannot be provoked from outside: a bug inside an endpoint.
    monkeypatch.setitem(endpoints.ENDPOINTS, "stats", broken)
    msg = await wire.call("stats", {})
    error = failure(msg)
    assert (error.status, error.code) == (500, "internal")
    assert b"secret" not in msg.data
    assert "secret" not in " ".join((msg.headers or {}).values())
    assert "RuntimeError" not in error.message
    assert (await wire.create())["name"] == "milestone"


# -- 6. idempotency ------------------------------------------------------------------------------


async def test_retried_create_returns_the_identical_reply(wire: Wire) -> None:
    """A create retried with the same ``Nats-Msg-Id`` and body answers the same; one exists."""
    first = await wire.call("create", checkpoint(), headers={MSG_ID: "create-1"})
    again = await wire.call("create", checkpoint(), headers={MSG_ID: "create-1"})
    assert result(again) == result(first)
    assert again.data == first.data
    assert await wire.total("s-1") == 1


async def test_reused_message_id_with_another_body_is_409(wire: Wire) -> None:
    """The same ``Nats-Msg-Id`` with a different body is a 409 and creates nothing more."""
    await wire.ok("create", checkpoint(), headers={MSG_ID: "create-1"})
    error = await wire.fail("create", checkpoint(name="other"), headers={MSG_ID: "create-1"})
    assert (error.status, error.code) == (409, "conflict")
    assert await wire.total("s-1") == 1


async def test_concurrent_duplicates_create_once(wire: Wire) -> None:
    """Fifty concurrent creates with one ``Nats-Msg-Id`` create one checkpoint, same replies."""
    replies = await asyncio.gather(
        *(wire.ok("create", checkpoint(), headers={MSG_ID: "dup"}) for _ in range(50))
    )
    assert all(reply == replies[0] for reply in replies)
    assert await wire.total("s-1") == 1


async def test_retried_create_batch_creates_once(wire: Wire) -> None:
    """A create_batch retried with its ``Nats-Msg-Id`` answers the same and creates once."""
    body = {"checkpoints": [checkpoint(name="one"), checkpoint(name="two")]}
    first = await wire.ok("create_batch", body, headers={MSG_ID: "batch-1"})
    assert await wire.ok("create_batch", body, headers={MSG_ID: "batch-1"}) == first
    assert await wire.total("s-1") == 2


async def test_retried_update_applies_once(wire: Wire) -> None:
    """An update retried with its ``Nats-Msg-Id`` answers the same and bumps the version once."""
    cp = await wire.create()
    body = {"id": cp["id"], "changes": {"name": "renamed"}}
    first = await wire.ok("update", body, headers={MSG_ID: "update-1"})
    assert await wire.ok("update", body, headers={MSG_ID: "update-1"}) == first
    assert (await wire.ok("get", {"id": cp["id"]}))["version"] == cp["version"] + 1


async def test_retried_delete_answers_deleted_true_again(wire: Wire) -> None:
    """A delete retried with its ``Nats-Msg-Id`` answers the first ``{deleted: true}``."""
    cp = await wire.create()
    assert await wire.ok("delete", {"id": cp["id"]}, headers={MSG_ID: "del-1"}) == {"deleted": True}
    assert await wire.ok("delete", {"id": cp["id"]}, headers={MSG_ID: "del-1"}) == {"deleted": True}
    assert await wire.ok("delete", {"id": cp["id"]}) == {"deleted": False}


async def test_retried_restore_applies_once(wire: Wire) -> None:
    """A restore retried with its ``Nats-Msg-Id`` answers the same result and restores once."""
    old = await wire.create(snapshot={"state": {"v": 1}})
    await wire.create(snapshot={"state": {"v": 2}})
    body = {"id": old["id"], "preserveCurrentState": True}
    first = await wire.ok("restore", body, headers={MSG_ID: "restore-1"})
    assert await wire.ok("restore", body, headers={MSG_ID: "restore-1"}) == first
    history = await wire.ok("history", {"sessionId": "s-1"})
    assert [e["type"] for e in history["events"]].count("checkpoint.restored") == 1
    assert await wire.total("s-1") == 3  # old, new and one backup


async def test_idempotency_survives_a_restart(
    open_manager: OpenManager, nats_server: NatsServer
) -> None:
    """Retries after the daemon restarted on the same file still answer the stored replies."""
    manager = await open_manager()
    async with serving(manager, nats_server.url) as wire:
        old = await wire.ok("create", checkpoint(snapshot={"v": 1}), headers={MSG_ID: "k-create"})
        doomed = await wire.create(name="doomed")
        requests = [
            ("create", checkpoint(snapshot={"v": 1}), "k-create"),
            ("create", checkpoint(snapshot={"v": 2}), "k-create-2"),
            ("update", {"id": old["id"], "changes": {"name": "renamed"}}, "k-update"),
            ("delete", {"id": doomed["id"]}, "k-delete"),
            ("restore", {"id": old["id"], "mergeStrategy": "merge"}, "k-restore"),
        ]
        before = [await wire.ok(v, b, headers={MSG_ID: k}) for v, b, k in requests]
        events = (await wire.ok("verify", {}))["events"]
    await manager.close()

    reopened = await open_manager()
    async with serving(reopened, nats_server.url, prefix=wire.prefix) as wire:
        after = [await wire.ok(v, b, headers={MSG_ID: k}) for v, b, k in requests]
        assert after == before
        assert await wire.total("s-1") == 2  # old and k-create-2; doomed is deleted
        assert (await wire.ok("verify", {}))["events"] == events


# -- 7. notifications ----------------------------------------------------------------------------


async def test_every_write_notifies_on_its_subject(wire: Wire) -> None:
    """Create, update, restore and delete each publish their notification, seq by seq."""
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        cp = await wire.create()
        await wire.ok("update", {"id": cp["id"], "changes": {"name": "renamed"}})
        restored = await wire.ok("restore", {"id": cp["id"]})
        await wire.ok("delete", {"id": cp["id"]})
        received = await next_notifications(sub, 4)
    types = ["created", "updated", "restored", "deleted"]
    assert [subject for subject, _ in received] == [f"{wire.prefix}.events.{t}.s-1" for t in types]
    bodies = [body for _, body in received]
    assert all(set(body) == NOTIFICATION_KEYS for body in bodies)
    assert [body["type"] for body in bodies] == types
    assert all(body["checkpointId"] == cp["id"] for body in bodies)
    assert all(body["sessionId"] == "s-1" for body in bodies)
    seqs = [body["seq"] for body in bodies]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert bodies[2]["seq"] == restored["eventSeq"]
    history = await wire.ok("history", {"sessionId": "s-1"})
    assert [(e["seq"], e["id"]) for e in history["events"]] == [
        (body["seq"], body["id"]) for body in bodies
    ]


async def test_restore_notification_carries_the_restored_state(wire: Wire) -> None:
    """A restore's notification carries the result's state, conflicts and backup id."""
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        old = await wire.create(snapshot={"state": {"a": 1, "b": 1}})
        await wire.create(snapshot={"state": {"a": 2, "c": 3}})
        body = {
            "id": old["id"],
            "targetSessionId": "s-2",
            "currentState": {"state": {"a": 5, "d": 4}},
            "mergeStrategy": "keep-original",
            "preserveCurrentState": True,
        }
        restored = await wire.ok("restore", body)
        received = await next_notifications(sub, 4)
    (backup_subject, backup), (subject, notification) = received[2:]
    assert backup_subject == f"{wire.prefix}.events.created.s-2"
    assert backup["checkpointId"] == restored["backupCheckpointId"]
    assert subject == f"{wire.prefix}.events.restored.s-2"
    assert notification["checkpointId"] == old["id"]
    assert notification["sessionId"] == "s-2"
    assert notification["seq"] == restored["eventSeq"] == backup["seq"] + 1
    data = notification["data"]
    assert data["state"] == restored["state"] == {"state": {"a": 5, "b": 1, "d": 4}}
    assert data["conflicts"] == restored["conflicts"]
    assert data["conflicts"] == [
        {"path": "/state/a", "current": 5, "checkpoint": 1, "resolution": "current"}
    ]
    assert data["backupCheckpointId"] == restored["backupCheckpointId"]


async def test_notify_false_suppresses_the_restored_notification(wire: Wire) -> None:
    """A restore with ``notify: false`` publishes no ``restored``; later events still flow."""
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        cp = await wire.create()
        restored = await wire.ok("restore", {"id": cp["id"], "notify": False})
        marker = await wire.create(name="marker", sessionId="s-2")
        # Notifications go out in seq order, so the marker's coming right after the create's
        # proves there was no restored notification between them.
        (_, first), (subject, second) = await next_notifications(sub, 2)
    assert first["checkpointId"] == cp["id"]
    assert restored["eventSeq"] is not None
    assert subject == f"{wire.prefix}.events.created.s-2"
    assert second["checkpointId"] == marker["id"]
    assert second["seq"] == restored["eventSeq"] + 1


@pytest.mark.parametrize(
    "session_id", ["plain_Session-1", "a.b c", "*", ">", "ünï", "~x", "a/b+c", "x" * 200]
)
async def test_session_token_in_subjects(wire: Wire, session_id: str) -> None:
    """The subject's session token is the id if plain, else ``~`` + unpadded base64url."""
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        await wire.create(sessionId=session_id)
        [(subject, body)] = await next_notifications(sub, 1)
    assert subject == f"{wire.prefix}.events.created.{token(session_id)}"
    assert body["sessionId"] == session_id
    encoded = subject.rsplit(".", 1)[1]
    if encoded.startswith("~"):
        padded = encoded[1:] + "=" * (-len(encoded[1:]) % 4)
        assert base64.urlsafe_b64decode(padded).decode() == session_id
    if session_id == "a.b c":
        assert encoded == "~YS5iIGM"


async def test_a_burst_of_creates_notifies_every_seq_in_order(wire: Wire) -> None:
    """Two hundred concurrent creates publish 200 notifications with consecutive seqs."""
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        created = await asyncio.gather(
            *(wire.create(name=f"cp-{i}", sessionId=f"s-{i % 7}") for i in range(200))
        )
        received = await next_notifications(sub, 200)
    seqs = [body["seq"] for _, body in received]
    assert seqs == list(range(seqs[0], seqs[0] + 200))
    assert {body["checkpointId"] for _, body in received} == {cp["id"] for cp in created}
    assert all(body["type"] == "created" for _, body in received)


async def test_missed_notifications_are_filled_from_history(wire: Wire) -> None:
    """A subscriber that missed events gets exactly the missing seqs from history, in order."""
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        await wire.create(name="seen-1")
        [(_, seen)] = await next_notifications(sub, 1)
    missed = [await wire.create(name=f"missed-{i}") for i in range(3)]
    await wire.ok("update", {"id": missed[0]["id"], "changes": {"name": "renamed"}})
    received: list[int] = []
    async with subscribed(wire.nc, f"{wire.prefix}.events.>") as sub:
        resumed = await wire.create(name="seen-2", sessionId="s-2")
        while True:  # a late notification of a missed event may still come first
            [(_, body)] = await next_notifications(sub, 1)
            received.append(body["seq"])
            if body["checkpointId"] == resumed["id"]:
                break
    between = list(range(seen["seq"] + 1, received[-1]))
    assert len(between) == 4
    filled = await wire.ok("history", {"afterSeq": seen["seq"], "limit": len(between)})
    assert [e["seq"] for e in filled["events"]] == between
    assert [e["type"] for e in filled["events"]] == ["checkpoint.created"] * 3 + [
        "checkpoint.updated"
    ]
    assert [e["stream"] for e in filled["events"][:3]] == [cp["id"] for cp in missed]


# -- 8. $SRV discovery ---------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[NatsServer]:
    """A nats-server of this test's own, so ``$SRV`` replies come from our service alone."""
    server = start_nats_server()
    yield server
    server.stop()


async def test_service_discovery_answers(
    manager: CheckpointManager, own_server: NatsServer
) -> None:
    """``$SRV.PING/INFO/STATS.checkpointd`` answer with the name, version and every endpoint."""
    async with serving(manager, own_server.url) as wire:
        await wire.create()
        ping = json.loads((await wire.nc.request("$SRV.PING.checkpointd", b"", timeout=5)).data)
        info = json.loads((await wire.nc.request("$SRV.INFO.checkpointd", b"", timeout=5)).data)
        stats = json.loads((await wire.nc.request("$SRV.STATS.checkpointd", b"", timeout=5)).data)
    assert (ping["name"], ping["version"]) == ("checkpointd", __version__)
    assert ping["type"] == "io.nats.micro.v1.ping_response"
    assert (info["name"], info["version"]) == ("checkpointd", __version__)
    assert info["description"]
    subjects = {endpoint["name"]: endpoint["subject"] for endpoint in info["endpoints"]}
    for verb in VERBS:
        assert subjects.get(verb) == f"{wire.prefix}.{verb}"
    assert {endpoint["queue_group"] for endpoint in info["endpoints"]} == {
        wire.prefix.replace(".", "-")
    }
    assert stats["name"] == "checkpointd"
    counts = {endpoint["name"]: endpoint["num_requests"] for endpoint in stats["endpoints"]}
    assert counts["create"] == 1


# -- 9. concurrency ------------------------------------------------------------------------------


async def test_64_requests_are_in_flight_together(
    wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixty-four requests to one endpoint run at once: none is answered until all arrived."""
    arrived = 0
    everyone = asyncio.Event()

    async def barrier(*_: Any) -> Mapping[str, Any]:
        nonlocal arrived
        arrived += 1
        if arrived == 64:
            everyone.set()
        await everyone.wait()  # a service serving one at a time would never get here
        return {"arrived": arrived}

    monkeypatch.setitem(endpoints.ENDPOINTS, "stats", barrier)
    replies = await asyncio.gather(*(wire.ok("stats", {}) for _ in range(64)))
    assert replies == [{"arrived": 64}] * 64


async def test_64_concurrent_creates_complete(wire: Wire) -> None:
    """Sixty-four creates sent at once all succeed with distinct ids."""
    created = await asyncio.gather(*(wire.create(name=f"cp-{i}") for i in range(64)))
    assert len({cp["id"] for cp in created}) == 64
    assert await wire.total("s-1") == 64


async def test_max_inflight_bounds_concurrency_and_answers_everything(
    manager: CheckpointManager, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``max_inflight=4`` at most four requests run at once, and all 64 are answered."""
    running = peak = 0
    four = asyncio.Event()

    async def gated(*_: Any) -> Mapping[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            four.set()
        await four.wait()  # the first four wait for each other; the rest pass through
        running -= 1
        return {}

    monkeypatch.setitem(endpoints.ENDPOINTS, "stats", gated)
    async with serving(manager, nats_server.url, max_inflight=4) as wire:
        assert await asyncio.gather(*(wire.ok("stats", {}) for _ in range(64))) == [{}] * 64
        assert peak == 4
        created = await asyncio.gather(*(wire.create(name=f"cp-{i}") for i in range(64)))
        assert len({cp["id"] for cp in created}) == 64
        assert await wire.total("s-1") == 64
