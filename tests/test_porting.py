"""What a program ported from the original API's TypeScript API relies on, line by line.

Tests on ``store`` run against CheckpointManager and, over a real NATS server, CheckpointClient
(the contract suite); tests on ``manager`` cover what only exists in-process (settings, the
background loops, a custom resolver) or look into the database file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import FakeClock, OpenManager, event_seqs, serving
from natsserver import NatsServer

from checkpointd import Checkpoint, CheckpointClient, CheckpointManager, Priority
from checkpointd.errors import (
    ConfigError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)

Store = Any  # CheckpointManager or CheckpointClient
T = TypeVar("T")
DEADLINE = 10.0  # seconds a background step may take to show up (a hang guard)


async def make(store: Store, name: str, session_id: str = "s-1", **fields: Any) -> Checkpoint:
    fields.setdefault("snapshot", {"state": {"name": name}})
    fields.setdefault("branches", ["main"])
    return await store.create(name=name, session_id=session_id, **fields)


async def first(iterator: AsyncIterator[T]) -> T:
    async with asyncio.timeout(DEADLINE):
        return await anext(iterator)


async def collect(iterator: AsyncIterator[T]) -> list[T]:
    return [item async for item in iterator]


def ids(checkpoints: Any) -> list[str]:
    return [cp.id for cp in checkpoints]


# -- lineage of an unknown id --------------------------------------------------------------------


async def test_lineage_of_an_id_that_never_existed_is_not_found(store: Store) -> None:
    """get_lineage of an id that never existed raises NotFoundError, as every verb taking an id."""
    with pytest.raises(NotFoundError, match="never-was"):
        await store.get_lineage("never-was")


async def test_lineage_of_a_deleted_checkpoint_is_still_read(store: Store) -> None:
    """A deleted checkpoint existed: its lineage lists its live relatives."""
    root = await make(store, "root")
    middle = await make(store, "middle", metadata={"parentCheckpoint": root.id})
    leaf = await make(store, "leaf", metadata={"parentCheckpoint": middle.id})
    await store.delete_checkpoint(middle.id)
    lineage = await store.get_lineage(middle.id)
    assert (ids(lineage.ancestors), ids(lineage.descendants)) == ([root.id], [leaf.id])


# -- the checkpoint's metadata inside the snapshot -----------------------------------------------

SEED_SNAPSHOT = {
    "sessions": ["s-1"],
    "state": {"progress": 75},
    "metadata": {
        "feature": "user-authentication",
        "priority": "high",
        "author": "developer-1",
        "tags": ["stable", "milestone"],
        "version": "1.0.0",
    },
}


async def test_metadata_inside_the_snapshot_is_lifted(store: Store) -> None:
    """Without metadata of its own, a create takes the original API's keys of
    snapshot.metadata as its
    metadata (the others stay snapshot content) and stores the snapshot unchanged."""
    cp = await make(store, "milestone", snapshot=SEED_SNAPSHOT)
    expected = {k: v for k, v in SEED_SNAPSHOT["metadata"].items() if k != "version"}
    assert cp.metadata == expected
    assert cp.priority is Priority.HIGH
    assert ids(await store.get_checkpoints_by_feature("user-authentication")) == [cp.id]
    assert ids(await store.search_checkpoints("developer")) == [cp.id]
    stored = await store.get_checkpoint(cp.id)
    assert stored is not None
    assert (stored.snapshot, stored.metadata) == (SEED_SNAPSHOT, expected)


@pytest.mark.parametrize(
    "own",
    [{"metadata": {"feature": "billing"}}, {"feature": "billing"}, {"author": "someone"}],
    ids=["metadata", "flat-feature", "flat-author"],
)
async def test_metadata_of_its_own_wins_over_the_snapshots(store: Store, own: Any) -> None:
    """A create with top-level or flat metadata keeps it and lifts nothing from the snapshot."""
    cp = await make(store, "own", snapshot=SEED_SNAPSHOT, **own)
    assert "user-authentication" not in cp.metadata.values()
    assert cp.metadata["priority"] == "normal"


async def test_a_bad_value_inside_the_snapshots_metadata_names_it(store: Store) -> None:
    """A lifted value of the wrong kind is refused, naming snapshot.metadata.<key>."""
    snapshot = {"state": {}, "metadata": {"priority": "urgent"}}
    with pytest.raises(InvalidRequestError, match=r"snapshot\.metadata\.priority"):
        await make(store, "bad", snapshot=snapshot)


# -- client-supplied ids -------------------------------------------------------------------------


async def test_a_client_supplied_id_is_used(store: Store) -> None:
    """A create may give its id; get_checkpoint('base-123') then finds it."""
    cp = await make(store, "base", id="base-123")
    assert cp.id == "base-123"
    found = await store.get_checkpoint("base-123")
    assert found is not None
    assert (found.name, found.snapshot) == ("base", {"state": {"name": "base"}})
    child = await make(store, "child", metadata={"parentCheckpoint": "base-123"})
    assert ids((await store.get_lineage(child.id)).ancestors) == ["base-123"]


async def test_an_id_that_exists_or_existed_is_a_conflict(store: Store) -> None:
    """An id in use, deleted or expired is a ConflictError; the refused create writes nothing."""
    await make(store, "live", id="live:1")
    await make(store, "gone", id="gone.1")
    await store.delete_checkpoint("gone.1")
    past = datetime(2024, 1, 1, tzinfo=UTC)  # before the fake clock's now
    await make(store, "expired", id="expired_1", retention_expires_at=past)
    assert await store.delete_expired_checkpoints() == 1
    before = (await store.history(limit=1000)).events
    for taken in ("live:1", "gone.1", "expired_1"):
        with pytest.raises(ConflictError, match=taken):
            await make(store, "again", id=taken)
    assert (await store.history(limit=1000)).events == before


@pytest.mark.parametrize(
    "bad", ["", "x" * 129, "has space", "naïve", "a/b", "session:s-1", 42], ids=repr
)
async def test_a_malformed_id_is_refused(store: Store, bad: Any) -> None:
    """An id outside 1-128 characters of [A-Za-z0-9._:-] (or in the reserved session: space) is
    an InvalidRequestError naming the field."""
    with pytest.raises(InvalidRequestError, match=r"^id: "):
        await make(store, "bad", id=bad)


async def test_an_id_of_128_characters_is_allowed(store: Store) -> None:
    """128 characters of the allowed set make an id."""
    long_id = "A-z0.9_:" * 16
    assert (await make(store, "long", id=long_id)).id == long_id


async def test_a_batch_giving_an_id_twice_writes_nothing(store: Store) -> None:
    """Two creates of one batch with the same id are refused before anything is written."""
    items = [
        {"name": n, "sessionId": "s-1", "id": "twin", "snapshot": {}, "branches": []}
        for n in ("a", "b")
    ]
    with pytest.raises(InvalidRequestError, match="twin"):
        await store.create_batch(items)
    assert (await store.history()).events == ()


async def test_a_batch_reusing_an_existing_id_writes_nothing(store: Store) -> None:
    """A batch item whose id exists is a ConflictError, and the batch's other items are not kept."""
    await make(store, "taken", id="taken")
    before = (await store.history()).events
    items = [
        {"name": "new", "sessionId": "s-1", "id": "new", "snapshot": {}, "branches": []},
        {"name": "dup", "sessionId": "s-1", "id": "taken", "snapshot": {}, "branches": []},
    ]
    with pytest.raises(ConflictError, match="taken"):
        await store.create_batch(items)
    assert (await store.history()).events == before
    assert await store.get_checkpoint("new") is None


# -- the original API's configuration mapping ------------------------------------------------------


async def test_the_seeds_configuration_mapping_is_accepted(tmp_path: Path) -> None:
    """CheckpointManager({...}) takes the original API's camelCase configuration (ms)."""
    manager = CheckpointManager(
        {
            "databasePath": str(tmp_path / "orchestration.db"),
            "enableCompression": True,
            "compressionAlgorithm": "gzip",
            "enableFTS": True,
            "autoCleanup": True,
            "cleanupInterval": 86_400_000,
            "enableMetrics": False,
            "metricsInterval": 60_000,
            "maxCheckpointSize": 100 * 1024 * 1024,
        }
    )
    assert manager.config.cleanup_interval == 86_400.0
    assert manager.config.metrics_interval == 60.0
    async with manager:
        cp = await make(manager, "start")
        assert await manager.get_checkpoint(cp.id) is not None


def test_keyword_durations_stay_seconds() -> None:
    """Keyword arguments keep their seconds; snake_case names in a mapping are seconds too."""
    assert CheckpointManager(cleanup_interval=5).config.cleanup_interval == 5
    assert CheckpointManager({"cleanup_interval": 5}).config.cleanup_interval == 5


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"databasePth": "x.db"}, "'databasePth'.*unknown setting"),
        ({"databasePath": "a.db", "database_path": "b.db"}, "given twice"),
        ({"compressionAlgorithm": "brotli"}, "'compressionAlgorithm'.*one of"),
        ({"cleanupInterval": "daily"}, "'cleanupInterval'.*milliseconds"),
        ({"encryptionKey": 7}, r"'encryptionKey' = \*\*\*"),
    ],
    ids=["unknown", "twice", "bad-choice", "bad-duration", "secret-hidden"],
)
def test_a_bad_configuration_mapping_fails_at_construction(config: Any, says: str) -> None:
    """An unknown key or a bad value is a ConfigError naming the key as given, before open()."""
    with pytest.raises(ConfigError, match=says):
        CheckpointManager(config)


# -- the background loops, metrics and in-process notifications ----------------------------------


def loop_tasks(what: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"checkpointd {what}"]


async def test_the_cleanup_loop_expires_checkpoints_while_open(
    open_manager: OpenManager, clock: FakeClock
) -> None:
    """With auto_cleanup (the default) the manager expires what is due on its own."""
    manager = await open_manager(cleanup_interval=0.05)
    async with manager.notifications("expired", "s-1") as expired:
        due = await make(manager, "due", retention_expires_at=clock.now() - timedelta(days=1))
        kept = await make(manager, "kept", retention_expires_at=clock.now() + timedelta(days=1))
        notification = await first(expired)
    assert notification.checkpoint_id == due.id
    assert await manager.get_checkpoint(due.id) is None
    assert await manager.get_checkpoint(kept.id) is not None


async def test_close_cancels_the_loops(open_manager: OpenManager) -> None:
    """The loops live while the manager is open and are gone once it closes."""
    manager = await open_manager(enable_metrics=True, on_metrics=lambda document: None)
    assert len(loop_tasks("cleanup")) == len(loop_tasks("metrics")) == 1
    await manager.close()
    assert loop_tasks("cleanup") == loop_tasks("metrics") == []


async def test_auto_cleanup_off_runs_no_loop(open_manager: OpenManager) -> None:
    """auto_cleanup=False starts no cleanup loop."""
    await open_manager(auto_cleanup=False)
    assert loop_tasks("cleanup") == []


async def test_metrics_are_the_daemons_document(manager: CheckpointManager) -> None:
    """metrics() gives the document the daemon publishes, with the store's figures."""
    await make(manager, "a")
    await make(manager, "b", "s-2")
    document = await manager.metrics()
    assert set(document) == {
        "at",
        "intervalSeconds",
        "requests",
        "events",
        "checkpoints",
        "database",
    }
    assert document["checkpoints"]["total"] == 2
    assert document["checkpoints"]["sessions"] == 2
    assert document["events"]["lastSeq"] == 2
    assert document["requests"]["total"] == 0


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
async def test_on_metrics_gets_a_document_every_interval(
    open_manager: OpenManager, kind: str
) -> None:
    """With enable_metrics, on_metrics (plain or async) is handed the document every interval."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def later(document: dict[str, Any]) -> None:
        await received.put(document)

    callback: Callable[[dict[str, Any]], Any] = received.put_nowait if kind == "plain" else later
    manager = await open_manager(enable_metrics=True, metrics_interval=0.05, on_metrics=callback)
    await make(manager, "a")
    async with asyncio.timeout(DEADLINE):
        while (await received.get())["checkpoints"]["total"] != 1:
            pass


def test_on_metrics_without_enable_metrics_is_refused() -> None:
    """An on_metrics callback with metrics disabled is a ConfigError, not a silent no-op."""
    with pytest.raises(ConfigError, match="enable_metrics"):
        CheckpointManager(on_metrics=print)


async def test_notifications_by_type_and_session(store: Store) -> None:
    """notifications(type, session) yields that type's notifications for that session only."""
    async with store.notifications("created", "s-1") as created:
        await make(store, "elsewhere", "s-2")
        cp = await make(store, "here", "s-1")
        notification = await first(created)
    assert (notification.type, notification.checkpoint_id) == ("created", cp.id)
    assert (notification.session_id, notification.data["name"]) == ("s-1", "here")


async def test_restore_notify_false_sends_no_restored_notification(store: Store) -> None:
    """A restore with notify=False publishes nothing; one with notify (the default) does."""
    cp = await make(store, "saved")
    async with store.notifications("restored", "s-1") as restored:
        quiet = await store.restore_checkpoint(cp.id, notify=False)
        loud = await store.restore_checkpoint(cp.id)
        notification = await first(restored)
    assert notification.seq == loud.event_seq != quiet.event_seq
    assert notification.data["state"] == {"state": {"name": "saved"}}


async def test_in_process_notifications_end_when_the_manager_closes(
    manager: CheckpointManager,
) -> None:
    """An in-process stream ends (StopAsyncIteration) once its manager closes."""
    async with manager.notifications() as stream:
        await manager.close()
        assert await collect(stream) == []


async def test_notifications_need_an_open_manager(db_path: Path) -> None:
    """Subscribing on a manager that is not open is an UnavailableError; a bad type is refused."""
    manager = CheckpointManager(database_path=str(db_path))
    with pytest.raises(InvalidRequestError, match="restored"):
        manager.notifications("restore")
    with pytest.raises(UnavailableError, match="not open"):
        async with manager.notifications():
            pass


# -- walking every page --------------------------------------------------------------------------


async def test_iter_checkpoints_by_session_walks_every_page(store: Store) -> None:
    """iter_checkpoints_by_session yields every checkpoint, page after page, in list order."""
    created = [await make(store, f"cp-{n}") for n in range(25)]
    walked = await collect(store.iter_checkpoints_by_session("s-1", page_size=10))
    assert ids(walked) == ids(reversed(created))
    options = {"where": "name LIKE ?", "params": ["cp-1%"], "pagination": {"pageSize": 4}}
    matching = await collect(store.iter_checkpoints_by_session("s-1", options))
    assert sorted(cp.name for cp in matching) == ["cp-1", *(f"cp-1{n}" for n in range(10))]


async def test_iter_checkpoints_by_feature_walks_every_page(store: Store) -> None:
    """iter_checkpoints_by_feature yields every checkpoint of the feature."""
    created = [await make(store, f"cp-{n}", feature="auth") for n in range(7)]
    await make(store, "other", feature="billing")
    walked = await collect(store.iter_checkpoints_by_feature("auth", page_size=3, page=1))
    assert sorted(ids(walked)) == sorted(ids(created))


async def test_iter_history_follows_next_to_the_end(store: Store) -> None:
    """iter_history yields every event oldest first, however small each page."""
    for n in range(12):
        await make(store, f"cp-{n}")
    events = await collect(store.iter_history(limit=5))
    assert [event.seq for event in events] == list(range(1, 13))
    later = await collect(store.iter_history(after_seq=10, limit=1))
    assert [event.seq for event in later] == [11, 12]


# -- search --------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["🙂", ":", "-- ;", "()"])
async def test_text_without_terms_matches_nothing(store: Store, query: str) -> None:
    """Text with no indexable term matches nothing rather than listing everything."""
    await make(store, "milestone")
    page = await store.search_checkpoints(query)
    assert (ids(page), page.total) == ([], 0)


@pytest.mark.parametrize("query", ["", "*", "  "])
async def test_an_empty_query_lists_by_filters(store: Store, query: str) -> None:
    """An empty query (or '*') lists the checkpoints matching the filters."""
    a = await make(store, "a")
    await make(store, "b", "s-2")
    page = await store.search_checkpoints({"query": query, "filters": {"sessionId": "s-1"}})
    assert ids(page) == [a.id]


async def test_text_search_with_fts_disabled_is_an_error(
    open_manager: OpenManager, nats_server: NatsServer
) -> None:
    """With enable_fts=False a text search is an InvalidRequestError naming enable_fts, in-process
    and over NATS; listing by filters still works."""
    manager = await open_manager(enable_fts=False)
    cp = await make(manager, "milestone")
    async with (
        serving(manager, nats_server.url) as prefix,
        CheckpointClient(nats_server.url, prefix=prefix) as client,
    ):
        for store in (manager, client):
            with pytest.raises(InvalidRequestError, match="enable_fts"):
                await store.search_checkpoints("milestone")
            assert ids(await store.search_checkpoints("")) == [cp.id]


# -- branches ------------------------------------------------------------------------------------


async def test_search_filters_by_branches(store: Store) -> None:
    """filters.branches keeps the checkpoints holding every branch listed."""
    await make(store, "main", branches=["main"])
    both = await make(store, "both", branches=["main", "feature-x"])
    await make(store, "dev", branches=["dev"])
    page = await store.search_checkpoints({"filters": {"branches": ["main", "feature-x"]}})
    assert ids(page) == [both.id]
    assert len(await store.search_checkpoints({"filters": {"branches": ["main"]}})) == 2


async def test_where_tests_branch_membership(store: Store) -> None:
    """'? IN branches' and '? NOT IN branches' filter a list by the branches it holds."""
    main = await make(store, "main", branches=["main"])
    both = await make(store, "both", branches=["main", "feature-x"])
    dev = await make(store, "dev", branches=["dev"])
    page = await store.get_checkpoints_by_session(
        "s-1", where="'main' IN branches AND ? NOT IN branches", params=["feature-x"]
    )
    assert ids(page) == [main.id]
    page = await store.get_checkpoints_by_session(
        "s-1", where="? IN branches OR name = 'dev'", params=["feature-x"]
    )
    assert sorted(ids(page)) == sorted([both.id, dev.id])


@pytest.mark.parametrize(
    ("where", "params", "says"),
    [
        ("branches = ?", ["main"], "branches is a list"),
        ("? IN branches", [1], "holds strings"),
        ("? IN name", ["x"], "list column"),
    ],
)
async def test_branches_used_otherwise_is_refused(
    store: Store, where: str, params: list[Any], says: str
) -> None:
    """branches can only be tested for membership, with a string."""
    with pytest.raises(InvalidRequestError, match=says):
        await store.get_checkpoints_by_session("s-1", where=where, params=params)


# -- chainDepth ----------------------------------------------------------------------------------


async def test_chain_depth_is_computed_from_the_parent(store: Store) -> None:
    """chainDepth is the parent's plus one; a checkpoint without a parent keeps its metadata."""
    root = await make(store, "root")
    child = await make(store, "child", metadata={"parentCheckpoint": root.id})
    grandchild = await make(store, "grandchild", metadata={"parentCheckpoint": child.id})
    assert "chainDepth" not in root.metadata
    assert (child.metadata["chainDepth"], grandchild.metadata["chainDepth"]) == (1, 2)
    stored = await store.get_checkpoint(grandchild.id)
    assert stored is not None
    assert stored.metadata == grandchild.metadata


async def test_chain_depth_counts_through_a_deleted_parent(store: Store) -> None:
    """A deleted parent's depth still counts: the links outlive it."""
    root = await make(store, "root")
    middle = await make(store, "middle", metadata={"parentCheckpoint": root.id})
    await store.delete_checkpoint(middle.id)
    leaf = await make(store, "leaf", metadata={"parentCheckpoint": middle.id})
    assert leaf.metadata["chainDepth"] == 2


@pytest.mark.parametrize(("given", "with_parent"), [(5, True), (0, True), (3, False)])
async def test_a_chain_depth_that_disagrees_is_refused(
    store: Store, given: int, with_parent: bool
) -> None:
    """A given chainDepth other than the computed one is an InvalidRequestError; nothing written."""
    root = await make(store, "root")
    before = (await store.history()).events
    metadata: dict[str, Any] = {"chainDepth": given}
    if with_parent:
        metadata["parentCheckpoint"] = root.id
    with pytest.raises(InvalidRequestError, match=r"metadata\.chainDepth"):
        await make(store, "wrong", metadata=metadata)
    assert (await store.history()).events == before


async def test_an_agreeing_chain_depth_is_kept(store: Store) -> None:
    """The original chain (chainDepth: chain.length + 1) and a root's chainDepth 0 are accepted."""
    root = await make(store, "root", metadata={"chainDepth": 0})
    child = await make(store, "c", metadata={"parentCheckpoint": root.id, "chainDepth": 1})
    assert (root.metadata["chainDepth"], child.metadata["chainDepth"]) == (0, 1)


async def test_an_update_settles_chain_depth_too(store: Store) -> None:
    """Metadata replaced by an update gets its chainDepth computed, and a wrong one is refused."""
    root = await make(store, "root")
    child = await make(store, "child", metadata={"parentCheckpoint": root.id})
    other = await make(store, "other")
    moved = await store.update_checkpoint(other.id, {"metadata": {"parentCheckpoint": child.id}})
    assert moved.metadata["chainDepth"] == 2
    with pytest.raises(InvalidRequestError, match=r"metadata\.chainDepth"):
        await store.update_checkpoint(
            other.id, {"metadata": {"parentCheckpoint": root.id, "chainDepth": 7}}
        )


# -- restore: an async resolver ------------------------------------------------------------------

CURRENT = {"state": {"a": 1, "b": 5, "c": "same"}}
SAVED = {"state": {"a": 2, "b": 3, "c": "same"}}


async def test_a_coroutine_resolver_is_awaited(manager: CheckpointManager) -> None:
    """custom_resolver may be a coroutine function: each conflict's answer is awaited."""
    saved = await make(manager, "saved", snapshot=SAVED)
    calls: list[str] = []

    async def resolve(path: str, current: int, checkpoint: int) -> int:
        calls.append(path)
        await asyncio.sleep(0)
        return current * 100 + checkpoint

    result = await manager.restore_checkpoint(
        saved.id, current_state=CURRENT, merge_strategy="merge", custom_resolver=resolve
    )
    assert result.state == {"state": {"a": 102, "b": 503, "c": "same"}}
    assert calls == ["/state/a", "/state/b"]
    assert {c["resolution"] for c in result.conflicts} == {"custom"}


async def test_a_failing_coroutine_resolver_writes_nothing(
    manager: CheckpointManager, db_path: Path
) -> None:
    """A coroutine resolver that raises is an InvalidRequestError naming the path; no write."""
    saved = await make(manager, "saved", snapshot=SAVED)
    seqs = event_seqs(db_path)

    async def broken(current: int, checkpoint: int) -> int:
        raise ValueError("no")

    with pytest.raises(InvalidRequestError, match="/state/a: ValueError"):
        await manager.restore_checkpoint(saved.id, current_state=CURRENT, custom_resolver=broken)
    assert event_seqs(db_path) == seqs
