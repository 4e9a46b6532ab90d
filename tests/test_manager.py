"""The checkpoint API's flows and semantics, as the original API document
and the API contract in the README and docs/protocol.md give them.

Tests on ``store`` use only the public API, so the contract suite can run them over NATS too;
tests on ``manager`` also look into the SQLite file.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FakeClock,
    OpenManager,
    blob_count,
    dump_projections,
    event_seqs,
)

from checkpointd import Checkpoint, CheckpointManager, Priority
from checkpointd.errors import (
    ConflictError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)
from checkpointd.snapshots import canonical_encode

Store = Any  # CheckpointManager now; CheckpointClient in the contract suite


def checksum_of(snapshot: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_encode(snapshot)).hexdigest()


def compressible(tag: str) -> dict[str, Any]:
    """A snapshot of about 4 KB of repeated text: big enough that gzip shrinks it."""
    return {"tag": tag, "log": "step done; all green. " * 200}


async def new_checkpoint(store: Store, name: str = "cp", session_id: str = "s-1", **fields: Any):
    fields.setdefault("snapshot", {"state": {"name": name}})
    fields.setdefault("branches", ["main"])
    return await store.create(name=name, session_id=session_id, **fields)


async def chain(store: Store, base: Checkpoint, configs: list[dict[str, Any]]) -> list[Checkpoint]:
    """The original API's ``createCheckpointChain``: each link names the previous one twice."""
    links: list[Checkpoint] = []
    for config in configs:
        checkpoint = await store.create(
            {
                **config,
                "restoredFrom": base.id,
                "metadata": {
                    **config.get("metadata", {}),
                    "parentCheckpoint": base.id,
                    "chainDepth": len(links) + 1,
                },
            }
        )
        links.append(checkpoint)
        base = checkpoint
    return links


def ids(checkpoints: Any) -> list[str]:
    return [cp.id for cp in checkpoints]


# -- lifecycle ---------------------------------------------------------------------------------


async def test_closed_manager_refuses_calls(manager: CheckpointManager) -> None:
    """A closed manager raises UnavailableError, and closing it again is harmless."""
    await manager.close()
    await manager.close()
    with pytest.raises(UnavailableError, match="closed"):
        await new_checkpoint(manager)
    with pytest.raises(UnavailableError, match="closed"):
        await manager.get_checkpoint("01J00000000000000000000000")


async def test_async_with_opens_and_closes(db_path: Path) -> None:
    """``async with`` opens the store for the block and closes it after."""
    async with CheckpointManager(database_path=str(db_path)) as manager:
        cp = await new_checkpoint(manager)
    with pytest.raises(UnavailableError, match="closed"):
        await manager.get_checkpoint(cp.id)
    async with CheckpointManager(database_path=str(db_path)) as reopened:
        assert await reopened.get_checkpoint(cp.id) == cp


# -- create ------------------------------------------------------------------------------------


async def test_create_with_keyword_arguments(store: Store) -> None:
    """Creating with snake_case keywords stores the fields given and computes size and checksum."""
    snapshot = {"state": {}}
    cp = await store.create(
        name="milestone-v1.0",
        session_id="s-1",
        snapshot=snapshot,
        branches=["main"],
        metadata={"feature": "auth", "priority": Priority.HIGH, "tags": ["stable"]},
    )
    assert cp.id
    assert (cp.name, cp.session_id, cp.branches) == ("milestone-v1.0", "s-1", ["main"])
    assert cp.snapshot == snapshot
    assert cp.metadata == {"feature": "auth", "priority": "high", "tags": ["stable"]}
    assert cp.priority is Priority.HIGH
    assert cp.size == len(canonical_encode(snapshot))
    assert cp.checksum == checksum_of(snapshot)
    assert cp.version == 1
    assert (cp.created_by, cp.restored_from, cp.retention_expires_at) == (None, None, None)


async def test_create_with_the_seeds_mapping(store: Store) -> None:
    """The original API's minimal camelCase mapping creates a checkpoint with normal priority."""
    taken = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    cp = await store.create(
        {
            "name": "quick-backup",
            "sessionId": "s-1",
            "timestamp": taken,
            "snapshot": {"sessions": ["s-1"], "state": {"quick": True}},
            "branches": ["current-branch"],
        }
    )
    assert (cp.name, cp.session_id, cp.timestamp) == ("quick-backup", "s-1", taken)
    assert cp.snapshot == {"sessions": ["s-1"], "state": {"quick": True}}
    assert cp.branches == ["current-branch"]
    assert cp.metadata == {"priority": "normal"}


async def test_create_accepts_iso_timestamp_strings(store: Store) -> None:
    """A timestamp given as an ISO-8601 string with Z is stored as that UTC instant."""
    cp = await new_checkpoint(store, timestamp="2024-05-01T09:30:00Z")
    assert cp.timestamp == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


async def test_create_keeps_the_instant_of_an_offset_timestamp(store: Store) -> None:
    """A timestamp with a UTC offset is stored as the same instant, and filters see it as such."""
    taken = datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    cp = await new_checkpoint(store, timestamp=taken)
    assert cp.timestamp == taken
    assert cp.timestamp.utcoffset() == timedelta(0)
    before = await store.get_checkpoints_by_session(
        "s-1", where="timestamp < ?", params=[datetime(2024, 5, 1, 9, 31, tzinfo=UTC)]
    )
    after = await store.get_checkpoints_by_session(
        "s-1", where="timestamp < ?", params=["2024-05-01T11:29:00+02:00"]
    )
    assert (ids(before), ids(after)) == ([cp.id], [])


async def test_flat_optional_fields_land_in_metadata(store: Store) -> None:
    """The original API's optional fields given at the top level are stored inside metadata."""
    cp = await store.create(
        {
            "name": "flat",
            "sessionId": "s-1",
            "snapshot": {"state": {}},
            "branches": ["main"],
            "feature": "billing",
            "priority": "critical",
            "author": "dev-2",
            "description": "flat fields",
            "workflowId": "wf-1",
            "stepId": "step-3",
            "tags": ["a", "b"],
        }
    )
    assert cp.metadata == {
        "feature": "billing",
        "priority": "critical",
        "author": "dev-2",
        "description": "flat fields",
        "workflowId": "wf-1",
        "stepId": "step-3",
        "tags": ["a", "b"],
    }
    stored = await store.get_checkpoint(cp.id, include_snapshot=False)
    assert stored is not None
    assert stored.metadata == cp.metadata


async def test_flat_fields_merge_with_metadata(store: Store) -> None:
    """Flat fields and a metadata object are merged, and user keys in metadata are kept."""
    cp = await new_checkpoint(
        store, feature="billing", workflow_id="wf-9", metadata={"author": "dev-3", "team": "core"}
    )
    assert cp.metadata == {
        "feature": "billing",
        "workflowId": "wf-9",
        "author": "dev-3",
        "team": "core",
        "priority": "normal",
    }


async def test_the_seeds_full_example(store: Store) -> None:
    """The original full create: createdBy, checksum, size, compressed, encrypted, retention."""
    snapshot = {
        "sessions": ["s-1"],
        "state": {
            "progress": 75,
            "completed": [1, 2, 3, 4, 5],
            "pending": [6, 7],
            "config": {"environment": "production", "version": "1.0.0"},
            "resources": {"memory": "2GB", "cpu": "4 cores", "disk": "50GB"},
        },
        "branches": ["main", "feature-xyz"],
        "metadata": {
            "feature": "user-authentication",
            "priority": "high",
            "author": "developer-1",
            "description": "Milestone checkpoint with user authentication feature",
            "workflowId": "wf-auth-flow",
            "stepId": "step-auth-implementation",
            "tags": ["stable", "milestone", "production-ready"],
        },
    }
    expires = datetime(2024, 9, 1, tzinfo=UTC)
    cp = await store.create(
        {
            "name": "milestone-v1.0",
            "sessionId": "s-1",
            "timestamp": datetime(2024, 6, 1, tzinfo=UTC),
            "snapshot": snapshot,
            "branches": ["main", "feature-xyz"],
            "createdBy": "developer-1",
            "size": len(canonical_encode(snapshot)),
            "checksum": checksum_of(snapshot),
            "compressed": True,
            "encrypted": True,
            "retentionExpiresAt": expires,
        }
    )
    assert cp.created_by == "developer-1"
    assert cp.checksum == checksum_of(snapshot)
    assert cp.size == len(canonical_encode(snapshot))
    assert (cp.compressed, cp.encrypted) == (True, True)
    assert cp.stored_size > 0
    assert cp.retention_expires_at == expires
    # The checkpoint's metadata, given inside the snapshot, is lifted; the snapshot is kept.
    assert cp.metadata == snapshot["metadata"]
    assert cp.priority is Priority.HIGH
    stored = await store.get_checkpoint(cp.id)
    assert stored is not None
    assert stored.snapshot == snapshot
    assert stored.metadata == snapshot["metadata"]
    assert ids(await store.get_checkpoints_by_feature("user-authentication")) == [cp.id]
    assert (stored.created_by, stored.encrypted, stored.compressed) == ("developer-1", True, True)


async def test_snake_case_input_fields(store: Store) -> None:
    """created_by, retention_expires_at and restored_from work as keywords."""
    base = await new_checkpoint(store, name="base")
    expires = datetime(2025, 1, 1, tzinfo=UTC)
    cp = await new_checkpoint(
        store, created_by="dev-1", retention_expires_at=expires, restored_from=base.id
    )
    assert (cp.created_by, cp.retention_expires_at, cp.restored_from) == ("dev-1", expires, base.id)


async def test_compressed_false_stores_uncompressed(store: Store) -> None:
    """compressed=False overrides the default for that checkpoint, even for compressible data."""
    cp = await new_checkpoint(store, snapshot=compressible("x"), compressed=False)
    assert cp.compressed is False
    assert cp.stored_size > cp.size


async def test_timestamp_defaults_to_now(manager: CheckpointManager, clock: FakeClock) -> None:
    """Without a timestamp, a checkpoint is taken at the clock's now."""
    cp = await new_checkpoint(manager)
    assert cp.timestamp == clock.now()
    assert cp.created_at == clock.now()


# -- get ---------------------------------------------------------------------------------------

ROUND_TRIP = {
    "sessions": ["s-1", "s-2"],
    "state": {
        "progress": 42.5,
        "completed": [1, -2, 2**63, None, True, False],
        "nested": {"deep": {"er": [{"x": "ünïcødé ✓"}, []]}, "empty": {}},
        "big": -(2**63),
    },
    "": "empty key",
}


async def test_get_returns_the_snapshot_as_stored(store: Store) -> None:
    """A stored snapshot reads back equal, nested values and number types included."""
    cp = await new_checkpoint(store, snapshot=ROUND_TRIP)
    got = await store.get_checkpoint(cp.id)
    assert got is not None
    assert got.snapshot == ROUND_TRIP
    assert got == cp


async def test_get_missing_returns_none(store: Store) -> None:
    """Getting an id that was never created returns None, not an error."""
    assert await store.get_checkpoint("01J00000000000000000000000") is None


async def test_get_without_snapshot(store: Store) -> None:
    """include_snapshot=False returns every field but the snapshot, which is None."""
    cp = await new_checkpoint(store, snapshot=ROUND_TRIP)
    got = await store.get_checkpoint(cp.id, include_snapshot=False)
    assert got is not None
    assert got.snapshot is None
    assert (got.id, got.checksum, got.size, got.version) == (cp.id, cp.checksum, cp.size, 1)


# -- list --------------------------------------------------------------------------------------


async def test_list_filters_by_metadata_and_compression(store: Store) -> None:
    """The original API's filter selects the session's compressed checkpoints of one feature."""
    wanted = await new_checkpoint(store, "wanted", snapshot=compressible("a"), feature="auth")
    await new_checkpoint(
        store, "plain", snapshot=compressible("b"), feature="auth", compressed=False
    )
    await new_checkpoint(store, "other-feature", snapshot=compressible("c"), feature="billing")
    await new_checkpoint(store, "other-session", "s-2", snapshot=compressible("d"), feature="auth")
    page = await store.get_checkpoints_by_session(
        "s-1", where="metadata->>'feature' = ? AND compressed = 1", params=["auth"]
    )
    assert ids(page) == [wanted.id]
    assert page.total == 1
    assert page[0].compressed is True


async def test_list_filters_by_timestamp_with_a_datetime(store: Store) -> None:
    """``timestamp < ?`` with a datetime parameter selects the older checkpoints."""
    now = datetime(2024, 6, 1, tzinfo=UTC)
    old = await new_checkpoint(store, "old", timestamp=now - timedelta(days=10))
    await new_checkpoint(store, "new", timestamp=now - timedelta(days=1))
    page = await store.get_checkpoints_by_session(
        "s-1", where="timestamp < ?", params=[now - timedelta(days=7)]
    )
    assert ids(page) == [old.id]
    by_string = await store.get_checkpoints_by_session(
        "s-1", where="timestamp < ?", params=["2024-05-25T00:00:00Z"]
    )
    assert ids(by_string) == [old.id]


async def test_list_order(store: Store) -> None:
    """Lists are newest first by default; order_by sorts by the named field and direction."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    created = [
        await new_checkpoint(store, f"cp-{n}", timestamp=start + timedelta(hours=n))
        for n in (2, 0, 1)
    ]
    by_time = sorted(created, key=lambda cp: cp.timestamp)
    default = await store.get_checkpoints_by_session("s-1")
    ascending = await store.get_checkpoints_by_session("s-1", order_by=[("timestamp", "asc")])
    by_name = await store.get_checkpoints_by_session("s-1", order_by=[("name", "DESC")])
    assert ids(default) == ids(reversed(by_time))
    assert ids(ascending) == ids(by_time)
    assert [cp.name for cp in by_name] == ["cp-2", "cp-1", "cp-0"]


async def test_list_pagination(store: Store) -> None:
    """Pages of a list partition it: page 3 of 25 by 10 holds 5, and the total is 25."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    created = [
        await new_checkpoint(store, f"cp-{n}", timestamp=start + timedelta(minutes=n))
        for n in range(25)
    ]
    pages = [
        await store.get_checkpoints_by_session("s-1", page=n, page_size=10) for n in (1, 2, 3, 4)
    ]
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert {(p.total, p.page_size) for p in pages} == {(25, 10)}
    assert [p.page for p in pages] == [1, 2, 3, 4]
    listed = [cp.id for p in pages for cp in p]
    assert listed == ids(reversed(created))


async def test_pages_are_stable_when_timestamps_tie(store: Store) -> None:
    """Checkpoints with one timestamp still page without repeats or gaps."""
    taken = datetime(2024, 1, 1, tzinfo=UTC)
    created = [await new_checkpoint(store, f"cp-{n}", timestamp=taken) for n in range(23)]
    pages = [
        await store.get_checkpoints_by_session("s-1", page=n, page_size=5) for n in range(1, 6)
    ]
    listed = [cp.id for p in pages for cp in p]
    assert sorted(listed) == sorted(ids(created))
    assert len(set(listed)) == 23


async def test_list_of_an_unknown_session_is_empty(store: Store) -> None:
    """Listing a session with no checkpoints gives an empty page with total 0."""
    await new_checkpoint(store)
    page = await store.get_checkpoints_by_session("nobody")
    assert (len(page), page.total, page.page) == (0, 0, 1)


@pytest.mark.parametrize(("page", "page_size"), [(1, 1001), (1, 0), (0, 10), (-1, 10)])
async def test_list_rejects_bad_pages(store: Store, page: int, page_size: int) -> None:
    """A page below 1 or a page size outside 1..1000 is an invalid request."""
    with pytest.raises(InvalidRequestError, match=r"page"):
        await store.get_checkpoints_by_session("s-1", page=page, page_size=page_size)


async def test_list_page_size_1000_is_allowed(store: Store) -> None:
    """A page size of exactly 1000 is accepted."""
    await new_checkpoint(store)
    page = await store.get_checkpoints_by_session("s-1", page_size=1000)
    assert (len(page), page.page_size) == (1, 1000)


async def test_list_with_the_seeds_options_mapping(store: Store) -> None:
    """The original API's options (where, params, orderBy, pagination) filter, sort and page."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    auth = [
        await new_checkpoint(
            store,
            f"auth-{n}",
            snapshot=compressible(str(n)),
            feature="user-authentication",
            timestamp=start + timedelta(hours=n),
        )
        for n in range(12)
    ]
    await new_checkpoint(store, "other", snapshot=compressible("o"), feature="billing")
    page = await store.get_checkpoints_by_session(
        "s-1",
        {
            "where": "metadata->>'feature' = ? AND compressed = 1",
            "params": ["user-authentication"],
            "orderBy": [{"field": "timestamp", "direction": "DESC"}],
            "pagination": {"page": 1, "pageSize": 10},
        },
    )
    assert ids(page) == ids(reversed(auth))[:10]
    assert (page.total, page.page, page.page_size) == (12, 1, 10)


async def test_list_by_feature(store: Store) -> None:
    """Listing by feature finds that feature's checkpoints across sessions, and only those."""
    a = await new_checkpoint(store, "a", "s-1", feature="user-authentication")
    b = await new_checkpoint(store, "b", "s-2", metadata={"feature": "user-authentication"})
    await new_checkpoint(store, "c", "s-1", feature="billing")
    await new_checkpoint(store, "d", "s-1")
    page = await store.get_checkpoints_by_feature("user-authentication")
    assert sorted(ids(page)) == sorted([a.id, b.id])
    assert page.total == 2
    filtered = await store.get_checkpoints_by_feature(
        "user-authentication", where="sessionId = ?", params=["s-2"]
    )
    assert ids(filtered) == [b.id]


async def test_list_leaves_snapshots_out_by_default(store: Store) -> None:
    """Listed checkpoints carry no snapshot unless it is asked for."""
    await new_checkpoint(store, snapshot={"state": {"x": 1}})
    bare = await store.get_checkpoints_by_session("s-1")
    assert bare[0].snapshot is None


@pytest.mark.parametrize("order_by", [None, [("name", "asc")]])
async def test_list_with_snapshots(store: Store, order_by: Any) -> None:
    """include_snapshot=True lists every checkpoint with its snapshot, in any order."""
    first = await new_checkpoint(store, "a", snapshot={"state": {"x": 1}})
    second = await new_checkpoint(store, "b", snapshot={"state": {"x": 2}})
    full = await store.get_checkpoints_by_session("s-1", order_by=order_by, include_snapshot=True)
    assert sorted((cp.name, cp.snapshot) for cp in full) == [
        ("a", first.snapshot),
        ("b", second.snapshot),
    ]


# -- update ------------------------------------------------------------------------------------


async def test_update_replaces_metadata_whole(store: Store) -> None:
    """The original API's update: metadata is replaced as a whole and the version goes up by one."""
    cp = await new_checkpoint(
        store, metadata={"feature": "auth", "author": "dev-1", "tags": ["stable"]}
    )
    updated = await store.update_checkpoint(
        cp.id,
        {
            "metadata": {
                **cp.metadata,
                "description": "Updated description",
                "tags": [*cp.metadata["tags"], "updated"],
            }
        },
    )
    assert updated.version == 2
    assert updated.metadata == {
        "feature": "auth",
        "author": "dev-1",
        "priority": "normal",
        "description": "Updated description",
        "tags": ["stable", "updated"],
    }
    replaced = await store.update_checkpoint(cp.id, metadata={"feature": "billing"})
    assert replaced.metadata == {"feature": "billing", "priority": "normal"}
    assert replaced.version == 3
    stored = await store.get_checkpoint(cp.id)
    assert stored is not None
    assert stored.metadata == replaced.metadata
    assert stored.snapshot == cp.snapshot
    assert stored.checksum == cp.checksum


async def test_update_name_branches_and_retention(store: Store) -> None:
    """Name, branches and retentionExpiresAt can be changed, and retention can be cleared."""
    cp = await new_checkpoint(store, retention_expires_at=datetime(2030, 1, 1, tzinfo=UTC))
    renamed = await store.update_checkpoint(
        cp.id, name="renamed", branches=["main", "dev"], retention_expires_at=None
    )
    assert (renamed.name, renamed.branches) == ("renamed", ["main", "dev"])
    assert renamed.retention_expires_at is None
    assert renamed.metadata == cp.metadata


async def test_update_with_current_version(store: Store) -> None:
    """An update with the current expected_version applies."""
    cp = await new_checkpoint(store)
    updated = await store.update_checkpoint(cp.id, {"name": "v2"}, expected_version=1)
    assert (updated.name, updated.version) == ("v2", 2)


async def test_update_with_stale_version_conflicts_and_writes_nothing(store: Store) -> None:
    """Updating with a stale version raises ConflictError and writes nothing."""
    cp = await new_checkpoint(store)
    await store.update_checkpoint(cp.id, {"name": "v2"})
    before = await store.history({"checkpointId": cp.id})
    with pytest.raises(ConflictError, match="version 2"):
        await store.update_checkpoint(cp.id, {"name": "v3"}, expected_version=1)
    after = await store.history({"checkpointId": cp.id})
    assert after == before
    stored = await store.get_checkpoint(cp.id, include_snapshot=False)
    assert stored is not None
    assert (stored.name, stored.version) == ("v2", 2)


async def test_update_cannot_change_the_snapshot(store: Store) -> None:
    """A snapshot in an update is rejected as invalid; snapshots are immutable."""
    cp = await new_checkpoint(store)
    with pytest.raises(InvalidRequestError, match="immutable"):
        await store.update_checkpoint(cp.id, {"snapshot": {"state": {"changed": True}}})
    stored = await store.get_checkpoint(cp.id)
    assert stored is not None
    assert (stored.snapshot, stored.version) == (cp.snapshot, 1)


async def test_update_of_a_missing_checkpoint(store: Store) -> None:
    """Updating an id that does not exist raises NotFoundError."""
    with pytest.raises(NotFoundError, match="not found"):
        await store.update_checkpoint("01J00000000000000000000000", {"name": "x"})


async def test_update_of_a_deleted_checkpoint(store: Store) -> None:
    """Updating a deleted checkpoint raises NotFoundError and appends nothing."""
    cp = await new_checkpoint(store)
    await store.delete_checkpoint(cp.id)
    with pytest.raises(NotFoundError, match=cp.id):
        await store.update_checkpoint(cp.id, {"name": "zombie"})
    assert len((await store.history({"checkpointId": cp.id})).events) == 2


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({}, "nothing to update"),
        ({"sessionId": "s-2"}, "unknown field"),
        ({"metadata": {"priority": "urgent"}}, "priority"),
        ({"name": ""}, "name"),
    ],
)
async def test_update_rejects_bad_changes(
    store: Store, changes: dict[str, Any], match: str
) -> None:
    """An empty, unknown or invalid change is an invalid request."""
    cp = await new_checkpoint(store)
    with pytest.raises(InvalidRequestError, match=match):
        await store.update_checkpoint(cp.id, changes)


# -- delete ------------------------------------------------------------------------------------


async def test_delete_then_get_and_delete_again(store: Store) -> None:
    """Deleting returns True, then the checkpoint is gone and deleting again returns False."""
    cp = await new_checkpoint(store)
    assert await store.delete_checkpoint(cp.id) is True
    assert await store.get_checkpoint(cp.id) is None
    assert await store.delete_checkpoint(cp.id) is False
    assert await store.delete_checkpoint("01J00000000000000000000000") is False


async def test_delete_keeps_the_audit_trail(store: Store) -> None:
    """After a delete the history still holds the created and deleted events with the checksum."""
    cp = await new_checkpoint(store)
    await store.delete_checkpoint(cp.id)
    history = await store.history({"checkpointId": cp.id})
    assert [e.type for e in history.events] == ["checkpoint.created", "checkpoint.deleted"]
    deleted = history.events[1]
    assert deleted.data["checksum"] == cp.checksum
    assert deleted.version == 2


async def test_delete_removes_the_snapshot_bytes(manager: CheckpointManager, db_path: Path) -> None:
    """A deleted checkpoint's blob row is physically gone from the database."""
    cp = await new_checkpoint(manager, snapshot={"secret": "delete-me-please"})
    kept = await new_checkpoint(manager, "kept")
    assert blob_count(db_path) == 2
    await manager.delete_checkpoint(cp.id)
    assert blob_count(db_path) == 1
    assert (await manager.get_checkpoint(kept.id)) is not None


async def test_deleted_bytes_leave_the_file(manager: CheckpointManager, db_path: Path) -> None:
    """Once the store is closed, a deleted snapshot's bytes appear in no database file."""
    cp = await new_checkpoint(manager, snapshot={"secret": "delete-me-please"}, compressed=False)
    await new_checkpoint(manager, "kept")
    await manager.delete_checkpoint(cp.id)
    await manager.close()
    files = sorted(db_path.parent.glob(db_path.name + "*"))
    assert db_path in files
    assert all(b"delete-me-please" not in path.read_bytes() for path in files)


# -- history and verify ------------------------------------------------------------------------


async def test_history_pages_with_after_seq_and_next(store: Store) -> None:
    """History is oldest first; ``next`` is the afterSeq of the next page, None on the last."""
    for n in range(5):
        await new_checkpoint(store, f"cp-{n}")
    first = await store.history({"limit": 2})
    second = await store.history({"afterSeq": first.next, "limit": 2})
    third = await store.history({"afterSeq": second.next, "limit": 2})
    assert [e.seq for e in first.events] == [1, 2]
    assert first.next == 2
    assert [e.seq for e in second.events] == [3, 4]
    assert [e.seq for e in third.events] == [5]
    assert third.next is None


async def test_history_last_page_exactly_full(store: Store) -> None:
    """A page that ends exactly at the last event has ``next`` None."""
    for n in range(4):
        await new_checkpoint(store, f"cp-{n}")
    page = await store.history({"afterSeq": 2, "limit": 2})
    assert ([e.seq for e in page.events], page.next) == ([3, 4], None)


async def test_history_takes_after_seq_as_a_keyword(store: Store) -> None:
    """history(after_seq=, limit=) pages like the wire form, as its docstring promises."""
    for n in range(3):
        await new_checkpoint(store, f"cp-{n}")
    page = await store.history(after_seq=1, limit=1)
    assert [e.seq for e in page.events] == [2]
    assert page.next == 2


async def test_history_takes_checkpoint_id_as_a_keyword(store: Store) -> None:
    """history(checkpoint_id=) returns only that checkpoint's events."""
    cp = await new_checkpoint(store, "a")
    await new_checkpoint(store, "b")
    history = await store.history(checkpoint_id=cp.id)
    assert [e.stream for e in history.events] == [cp.id]


async def test_history_of_a_session(store: Store) -> None:
    """history(session_id=) returns only the events of that session."""
    a = await new_checkpoint(store, "a", "s-1")
    await new_checkpoint(store, "b", "s-2")
    await store.update_checkpoint(a.id, {"name": "a2"})
    history = await store.history(session_id="s-1")
    assert [(e.type, e.stream) for e in history.events] == [
        ("checkpoint.created", a.id),
        ("checkpoint.updated", a.id),
    ]


async def test_verify_log_of_a_healthy_store(store: Store) -> None:
    """verify_log re-hashes every event and reports ok with the count."""
    cp = await new_checkpoint(store)
    await store.update_checkpoint(cp.id, {"name": "v2"})
    await store.delete_checkpoint(cp.id)
    result = await store.verify_log()
    assert (result.ok, result.events, result.first_bad_seq) == (True, 3, None)


# -- lineage -----------------------------------------------------------------------------------


async def test_lineage_of_the_seeds_chain(store: Store) -> None:
    """The original API's checkpoint chain: ancestors and descendants nearest first."""
    base = await new_checkpoint(store, "base")
    links = await chain(
        store,
        base,
        [
            {
                "name": "checkpoint-1",
                "sessionId": "s-1",
                "branches": [],
                "snapshot": {"step": 1},
                "metadata": {"feature": "feature-1"},
            },
            {
                "name": "checkpoint-2",
                "sessionId": "s-1",
                "branches": [],
                "snapshot": {"step": 2},
                "metadata": {"feature": "feature-2"},
            },
        ],
    )
    assert links[1].metadata["chainDepth"] == 2
    assert links[1].restored_from == links[0].id
    last = await store.get_lineage(links[1].id)
    assert ids(last.ancestors) == [links[0].id, base.id]
    assert last.descendants == ()
    first = await store.get_lineage(base.id)
    assert ids(first.descendants) == [links[0].id, links[1].id]
    assert first.ancestors == ()


async def test_lineage_through_restored_from(store: Store) -> None:
    """restoredFrom alone links a checkpoint to the one it came from."""
    origin = await new_checkpoint(store, "origin")
    branch = await new_checkpoint(store, "branch", "s-2", restored_from=origin.id)
    assert ids((await store.get_lineage(branch.id)).ancestors) == [origin.id]
    assert ids((await store.get_lineage(origin.id)).descendants) == [branch.id]


async def test_lineage_of_a_long_chain(store: Store) -> None:
    """A chain of 300 parent links is followed to its root, nearest first."""
    created = [await new_checkpoint(store, "link-0")]
    for n in range(1, 301):
        parent = {"parentCheckpoint": created[-1].id}
        created.append(await new_checkpoint(store, f"link-{n}", metadata=parent))
    lineage = await store.get_lineage(created[-1].id)
    assert ids(lineage.ancestors) == ids(reversed(created[:-1]))
    assert ids((await store.get_lineage(created[0].id)).descendants) == ids(created[1:])


async def test_lineage_skips_a_deleted_link(store: Store) -> None:
    """A deleted middle link is left out, and the chain continues past it."""
    root = await new_checkpoint(store, "root")
    middle = await new_checkpoint(store, "middle", metadata={"parentCheckpoint": root.id})
    leaf = await new_checkpoint(store, "leaf", metadata={"parentCheckpoint": middle.id})
    await store.delete_checkpoint(middle.id)
    assert ids((await store.get_lineage(leaf.id)).ancestors) == [root.id]
    assert ids((await store.get_lineage(root.id)).descendants) == [leaf.id]


async def test_lineage_pages_nearest_first(store: Store) -> None:
    """``limit`` and ``offset`` page both lists in the nearest-first order, ``next`` giving
    the following page's offset, until it is None."""
    root = await new_checkpoint(store, "root")
    children = [
        await new_checkpoint(store, f"child-{n}", metadata={"parentCheckpoint": root.id})
        for n in range(5)
    ]
    grandchild = await new_checkpoint(
        store, "grandchild", metadata={"parentCheckpoint": children[0].id}
    )
    whole = await store.get_lineage(root.id)
    assert ids(whole.descendants) == [*ids(children), grandchild.id]
    assert whole.next is None
    pages, offset = [], 0
    while offset is not None:
        page = await store.get_lineage(root.id, limit=4, offset=offset)
        pages.append(ids(page.descendants))
        offset = page.next
    assert pages == [ids(children[:4]), [children[4].id, grandchild.id]]
    leaf = await store.get_lineage(grandchild.id, limit=1)
    assert (ids(leaf.ancestors), leaf.descendants, leaf.next) == ([children[0].id], (), 1)
    assert (await store.get_lineage(grandchild.id, limit=1, offset=1)).ancestors[0].id == root.id


@pytest.mark.parametrize(
    ("limit", "offset", "field"), [(0, 0, "limit"), (1001, 0, "limit"), (10, -1, "offset")]
)
async def test_lineage_bounds(store: Store, limit: int, offset: int, field: str) -> None:
    """A lineage ``limit`` outside 1..1000 or a negative ``offset`` is InvalidRequestError."""
    root = await new_checkpoint(store, "root")
    with pytest.raises(InvalidRequestError, match=field):
        await store.get_lineage(root.id, limit=limit, offset=offset)


async def test_parent_that_never_existed(store: Store) -> None:
    """A parentCheckpoint or restoredFrom naming no checkpoint is NotFoundError."""
    with pytest.raises(NotFoundError, match="01J00000000000000000000000"):
        await new_checkpoint(store, metadata={"parentCheckpoint": "01J00000000000000000000000"})
    with pytest.raises(NotFoundError, match="01J00000000000000000000001"):
        await new_checkpoint(store, restored_from="01J00000000000000000000001")
    assert (await store.history()).events == ()


# -- the original API's complete example -----------------------------------------------------------

MILESTONES: list[dict[str, Any]] = [
    {
        "name": "start",
        "description": "Initial state",
        "snapshot": {"progress": 0, "completed": [], "config": {"started": True}},
    },
    {
        "name": "quarterly",
        "description": "Q1 milestones reached",
        "snapshot": {"progress": 25, "completed": [1, 2, 3], "config": {"quarterly": True}},
        "priority": Priority.NORMAL,
    },
    {
        "name": "milestone-v1.0",
        "description": "Version 1.0 release",
        "snapshot": {
            "progress": 100,
            "completed": [1, 2, 3, 4, 5, 6],
            "config": {"version": "1.0.0", "released": True, "features": ["auth", "api"]},
        },
        "priority": Priority.HIGH,
        "tags": ["release", "stable", "production"],
    },
]


async def test_the_seeds_complete_example(store: Store) -> None:
    """The original API's walkthrough: milestones, search, stats, restore, clean up old ones."""
    taken = datetime.now(UTC) - timedelta(days=10)
    created = [
        await store.create(
            {
                "name": m["name"],
                "sessionId": "director-1",
                "timestamp": taken + timedelta(minutes=n),
                "snapshot": m["snapshot"],
                "branches": ["main"],
                "metadata": {
                    "feature": "version-release",
                    "priority": m.get("priority", Priority.NORMAL),
                    "author": "release-manager",
                    "description": m["description"],
                    "tags": m.get("tags", ["checkpoint"]),
                },
            }
        )
        for n, m in enumerate(MILESTONES)
    ]
    # "milestone" is a prefix of the last term, so "milestones" in a description matches too.
    found = await store.search_checkpoints("milestone")
    assert sorted(cp.name for cp in found) == ["milestone-v1.0", "quarterly"]

    stats = await store.get_checkpoint_stats()
    assert stats.total_checkpoints == 3
    assert stats.total_size == sum(cp.size for cp in created)
    assert stats.average_size == pytest.approx(stats.total_size / 3)
    assert dict(stats.by_feature) == {"version-release": 3}
    assert dict(stats.by_priority) == {"normal": 2, "high": 1}
    assert stats.oldest_checkpoint is not None
    assert stats.oldest_checkpoint.name == "start"

    milestone = created[2]
    result = await store.restore_checkpoint(
        milestone.id,
        {
            "targetSessionId": "director-1",
            "preserveCurrentState": False,
            "mergeStrategy": "overwrite",
        },
    )
    assert (result.success, result.restored_from) == (True, milestone.id)
    assert result.state == milestone.snapshot
    assert result.backup_checkpoint_id is None

    old = await store.get_checkpoints_by_session(
        "director-1", where="timestamp < ?", params=[datetime.now(UTC) - timedelta(days=7)]
    )
    assert len(old) == 3
    for cp in old:
        if cp.name != "milestone-v1.0":
            assert await store.delete_checkpoint(cp.id)
    final = await store.get_checkpoint_stats()
    assert final.total_checkpoints == 1
    assert final.total_size == milestone.size


async def test_restore_is_recorded_in_the_history(store: Store) -> None:
    """A restore appends a checkpoint.restored event to its target session, at eventSeq."""
    cp = await new_checkpoint(store, snapshot={"state": {"step": 1}})
    await new_checkpoint(store, "later", snapshot={"state": {"step": 2}})
    result = await store.restore_checkpoint(cp.id)
    assert result.state == cp.snapshot
    assert result.target_session_id == "s-1"
    history = await store.history({"sessionId": "s-1"})
    restored = history.events[-1]
    assert (restored.type, restored.seq) == ("checkpoint.restored", result.event_seq)


async def test_validate_a_healthy_checkpoint(store: Store) -> None:
    """validate_checkpoint reports a stored checkpoint valid on every count."""
    cp = await new_checkpoint(store, snapshot={"sessions": ["s-1"], "state": {"progress": 50}})
    report = await store.validate_checkpoint(cp.id)
    assert (report.is_valid, report.checksum_valid, report.size_matches, report.schema_valid) == (
        True,
        True,
        True,
        True,
    )
    assert report.errors == ()


async def test_diff_of_two_checkpoints(store: Store) -> None:
    """diff_checkpoints lists added, removed and replaced paths as JSON Pointers."""
    a = await new_checkpoint(store, "a", snapshot={"state": {"x": 1, "gone": True}, "l": [1]})
    b = await new_checkpoint(store, "b", snapshot={"state": {"x": 2, "new": "y"}, "l": [1]})
    diff = await store.diff_checkpoints(a.id, b.id)
    assert sorted((c["path"], c["op"]) for c in diff.changes) == [
        ("/state/gone", "remove"),
        ("/state/new", "add"),
        ("/state/x", "replace"),
    ]


# -- rebuild -----------------------------------------------------------------------------------


async def test_rebuild_replays_every_event(manager: CheckpointManager, db_path: Path) -> None:
    """rebuild returns the number of events replayed and leaves every projection as it was."""
    base = await new_checkpoint(manager, "base", feature="auth", priority="high", tags=["x"])
    child = await new_checkpoint(
        manager, "child", "s-2", metadata={"priority": "low", "parentCheckpoint": base.id}
    )
    await manager.update_checkpoint(child.id, {"metadata": {"feature": "billing"}})
    gone = await new_checkpoint(manager, "gone", description="soon deleted")
    await manager.delete_checkpoint(gone.id)
    live = dump_projections(db_path)
    assert await manager.rebuild() == len(event_seqs(db_path)) == 5
    assert dump_projections(db_path) == live
    assert await manager.get_checkpoint(base.id) is not None


async def test_rebuild_keeps_metadata_key_order(manager: CheckpointManager, db_path: Path) -> None:
    """A rebuild reproduces the checkpoints view byte for byte, metadata given in any key order."""
    # Regression: the live view kept the request's key order, a rebuild the sorted keys of the
    # canonical event data.
    cp = await new_checkpoint(manager, metadata={"tags": ["b"], "feature": "auth"})
    await new_checkpoint(manager, "other", metadata={"workflowId": "wf-1", "author": "dev"})
    await manager.update_checkpoint(cp.id, {"metadata": {"stepId": "s", "feature": "billing"}})
    live = dump_projections(db_path)
    await manager.rebuild()
    assert dump_projections(db_path)["checkpoints"] == live["checkpoints"]


# -- validation --------------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "name": "valid",
    "sessionId": "s-1",
    "snapshot": {"state": {}},
    "branches": ["main"],
}


@pytest.mark.parametrize("missing", ["name", "sessionId", "snapshot", "branches"])
async def test_required_fields(store: Store, missing: str) -> None:
    """A create without a required field is an invalid request naming the field."""
    request = {key: value for key, value in VALID.items() if key != missing}
    with pytest.raises(InvalidRequestError, match=rf"{missing}: is required"):
        await store.create(request)


async def test_unknown_field(store: Store) -> None:
    """A create with a field the API does not know is an invalid request naming it."""
    with pytest.raises(InvalidRequestError, match=r"unknown field.*colour"):
        await store.create({**VALID, "colour": "blue"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 123),
        ("name", ""),
        ("name", "x" * 257),
        ("sessionId", None),
        ("snapshot", [1, 2]),
        ("snapshot", {"when": datetime(2024, 1, 1, tzinfo=UTC)}),
        ("snapshot", {"bad": float("nan")}),
        ("branches", "main"),
        ("branches", [1]),
        ("metadata", "auth"),
        ("timestamp", "yesterday"),
        ("compressed", "yes"),
        ("encrypted", 1),
        ("size", -1),
        ("size", "10"),
        ("createdBy", 7),
        ("retentionExpiresAt", 12),
        ("tags", "stable"),
        ("feature", ["auth"]),
    ],
)
async def test_wrong_types(store: Store, field: str, value: Any) -> None:
    """A field of the wrong type or length is an invalid request naming that field."""
    with pytest.raises(InvalidRequestError, match=field):
        await store.create({**VALID, field: value})
    assert (await store.history()).events == ()


async def test_name_of_256_chars_is_allowed(store: Store) -> None:
    """A name of exactly 256 characters is accepted."""
    cp = await store.create({**VALID, "name": "x" * 256})
    assert len(cp.name) == 256


async def test_bad_priority(store: Store) -> None:
    """A priority other than low, normal, high, critical is an invalid request."""
    with pytest.raises(InvalidRequestError, match="priority"):
        await store.create({**VALID, "metadata": {"priority": "urgent"}})


async def test_flat_and_nested_metadata_disagree(store: Store) -> None:
    """The same field given flat and in metadata with different values is an invalid request."""
    with pytest.raises(InvalidRequestError, match="feature"):
        await store.create({**VALID, "feature": "a", "metadata": {"feature": "b"}})


@pytest.mark.parametrize(
    "checksum",
    [
        "sha256:abc123...",
        "md5:" + "0" * 32,
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "0" * 64,
        "sha256:" + "0" * 64 + "\n",
    ],
)
async def test_malformed_checksum(store: Store, checksum: str) -> None:
    """A checksum that is not ``sha256:`` and 64 lowercase hex digits is an invalid request."""
    with pytest.raises(InvalidRequestError, match="checksum"):
        await store.create({**VALID, "checksum": checksum})
    assert (await store.history()).events == ()


async def test_wrong_checksum_is_an_integrity_error(store: Store) -> None:
    """A well-formed checksum that does not match the snapshot is rejected and nothing stored."""
    wrong = checksum_of({"state": {"other": True}})
    with pytest.raises(IntegrityError, match="does not match"):
        await store.create({**VALID, "checksum": wrong})
    assert (await store.history()).events == ()
    assert (await store.get_checkpoints_by_session("s-1")).total == 0


async def test_wrong_size_is_an_integrity_error(store: Store) -> None:
    """A supplied size that does not match the canonical encoding is rejected and nothing stored."""
    size = len(canonical_encode(VALID["snapshot"]))
    with pytest.raises(IntegrityError, match="size"):
        await store.create({**VALID, "size": size + 1, "checksum": checksum_of(VALID["snapshot"])})
    assert (await store.history()).events == ()


async def test_right_checksum_and_size_are_accepted(store: Store) -> None:
    """A supplied checksum and size that match are accepted."""
    size = len(canonical_encode(VALID["snapshot"]))
    cp = await store.create({**VALID, "size": size, "checksum": checksum_of(VALID["snapshot"])})
    assert (cp.size, cp.checksum) == (size, checksum_of(VALID["snapshot"]))


async def test_snapshot_over_the_size_limit(open_manager: OpenManager) -> None:
    """A snapshot whose canonical encoding is over max_checkpoint_size is TooLargeError."""
    manager = await open_manager(max_checkpoint_size=1024)
    with pytest.raises(TooLargeError, match="1024"):
        await new_checkpoint(manager, snapshot={"blob": "x" * 1024})
    assert (await manager.history()).events == ()
    fits = await new_checkpoint(manager, snapshot={"blob": "x" * 900})
    assert fits.size <= 1024


HOSTILE_WHERE = [
    "1=1; DROP TABLE checkpoints",
    "name = 'a'; DROP TABLE checkpoints; --",
    "name = 'a' UNION SELECT * FROM events",
    "name = 'a' -- AND compressed = 0",
    "name = 'a' /* comment */ OR 1=1",
    "nosuch = 1",
    "session_id = 's-1'",
    "lower(name) = 'a'",
    "name = (SELECT name FROM checkpoints)",
    "metadata->>'feature' = ? AND compressed = 1 OR 1=1",
    "1 = 1",
    "name = 'unterminated",
]


@pytest.mark.parametrize("where", HOSTILE_WHERE)
async def test_hostile_where_is_rejected(store: Store, where: str) -> None:
    """A filter outside the grammar is an invalid request, and the store keeps working."""
    cp = await new_checkpoint(store, feature="auth")
    params = ["auth"] * where.count("?")
    with pytest.raises(InvalidRequestError, match="where") as caught:
        await store.get_checkpoints_by_session("s-1", where=where, params=params)
    assert "position" in str(caught.value)
    page = await store.get_checkpoints_by_session(
        "s-1", where="metadata->>'feature' = ?", params=["auth"]
    )
    assert ids(page) == [cp.id]
    assert (await new_checkpoint(store, "after")).version == 1
    assert (await store.verify_log()).ok


async def test_injection_through_a_parameter_is_a_value(store: Store) -> None:
    """SQL in a parameter is compared as a plain value and matches nothing."""
    await new_checkpoint(store, "a")
    page = await store.get_checkpoints_by_session("s-1", where="name = ?", params=["a' OR '1'='1"])
    assert page.total == 0
    assert (await store.get_checkpoints_by_session("s-1")).total == 1


async def test_bad_order_by(store: Store) -> None:
    """Sorting by an unknown field or direction is an invalid request."""
    with pytest.raises(InvalidRequestError, match="orderBy"):
        await store.get_checkpoints_by_session("s-1", order_by=[("name; DROP", "asc")])
    with pytest.raises(InvalidRequestError, match="direction"):
        await store.get_checkpoints_by_session("s-1", order_by=[("name", "sideways")])
