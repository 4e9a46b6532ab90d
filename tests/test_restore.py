"""Restore, lineage and diff: putting a session back at a checkpoint's state, and what that leaves.

As documented (README, docs/protocol.md):
a restore combines the target session's current state (``current_state`` in
the request, else the session's newest checkpoint or last restore) with the checkpoint's state by
``overwrite`` (the default), ``merge`` (checkpoint wins) or ``keep-original`` (current wins),
reporting every conflicting path. It validates before writing, and writes the optional backup
and the ``checkpoint.restored`` event together, or nothing. Tests on ``store`` use only the
public API (a session's current state is read with ``session_state``); tests that pass Python
callables or look into the SQLite file use ``manager``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    OpenManager,
    blob_count,
    damage_blob,
    dump_projections,
    event_seqs,
    session_state,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.errors import CheckpointError, IntegrityError, InvalidRequestError, NotFoundError
from checkpointd.results import RestoreResult

Store = Any  # CheckpointManager now; CheckpointClient in the contract suite

CURRENT: dict[str, Any] = {
    "sessions": ["s-1"],
    "state": {
        "progress": 40,
        "config": {"mode": "fast", "retries": 3},
        "pending": ["a"],
        "onlyCurrent": 1,
    },
}
SAVED: dict[str, Any] = {
    "sessions": ["s-1"],
    "state": {
        "progress": 20,
        "config": {"mode": "safe", "depth": 2},
        "pending": ["a", "b"],
        "onlyCheckpoint": True,
    },
}
MERGED: dict[str, Any] = {
    "sessions": ["s-1"],
    "state": {
        "progress": 20,
        "config": {"mode": "safe", "retries": 3, "depth": 2},
        "pending": ["a", "b"],
        "onlyCurrent": 1,
        "onlyCheckpoint": True,
    },
}
KEPT: dict[str, Any] = {
    "sessions": ["s-1"],
    "state": {
        "progress": 40,
        "config": {"mode": "fast", "retries": 3, "depth": 2},
        "pending": ["a"],
        "onlyCurrent": 1,
        "onlyCheckpoint": True,
    },
}


CONFLICTS: list[dict[str, Any]] = [
    {"path": "/state/config/mode", "current": "fast", "checkpoint": "safe"},
    {"path": "/state/pending", "current": ["a"], "checkpoint": ["a", "b"]},
    {"path": "/state/progress", "current": 40, "checkpoint": 20},
]


def conflicts(resolution: str) -> list[dict[str, Any]]:
    """The conflicts between CURRENT and SAVED, sorted by path, all settled by ``resolution``."""
    return [{**conflict, "resolution": resolution} for conflict in CONFLICTS]


STRATEGIES = [
    ("overwrite", SAVED, "checkpoint"),
    ("merge", MERGED, "checkpoint"),
    ("keep-original", KEPT, "current"),
]


async def make(
    store: Store,
    name: str,
    session_id: str = "s-1",
    snapshot: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Checkpoint:
    fields.setdefault("branches", ["main"])
    snapshot = {"sessions": [session_id], "state": {"step": name}} if snapshot is None else snapshot
    return await store.create(name=name, session_id=session_id, snapshot=snapshot, **fields)


async def saved_then_current(store: Store, session_id: str = "s-1") -> Checkpoint:
    """SAVED checkpointed in the session, then CURRENT as its newest checkpoint; returns SAVED's."""
    saved = await make(store, "saved", session_id, SAVED)
    await make(store, "current", session_id, CURRENT)
    return saved


def ids(checkpoints: Any) -> list[str]:
    return [cp.id for cp in checkpoints]


async def all_events(store: Store) -> list[Any]:
    return list((await store.history(limit=1000)).events)


# -- strategies --------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "expected", "resolution"), STRATEGIES)
async def test_each_strategy_with_a_given_current_state(
    store: Store, strategy: str, expected: dict[str, Any], resolution: str
) -> None:
    """With current_state given, each strategy yields its exact state and reports each conflict."""
    saved = await make(store, "saved", "s-1", SAVED)
    result = await store.restore_checkpoint(
        saved.id, current_state=CURRENT, merge_strategy=strategy
    )
    assert result.state == expected
    assert list(result.conflicts) == conflicts(resolution)
    assert await session_state(store, "s-1") == expected


@pytest.mark.parametrize(("strategy", "expected", "resolution"), STRATEGIES)
async def test_each_strategy_with_the_sessions_newest_checkpoint(
    store: Store, strategy: str, expected: dict[str, Any], resolution: str
) -> None:
    """Without current_state, the session's newest checkpoint is the current state to merge with."""
    saved = await saved_then_current(store)
    assert await session_state(store, "s-1") == CURRENT
    result = await store.restore_checkpoint(saved.id, merge_strategy=strategy)
    assert result.state == expected
    assert list(result.conflicts) == conflicts(resolution)
    assert await session_state(store, "s-1") == expected


async def test_overwrite_is_the_default(store: Store) -> None:
    """A restore without a strategy overwrites: the checkpoint's state wins every conflict."""
    saved = await saved_then_current(store)
    result = await store.restore_checkpoint(saved.id)
    assert result.state == SAVED
    assert list(result.conflicts) == conflicts("checkpoint")


async def test_restoring_twice_starts_from_the_first_restore(store: Store) -> None:
    """A session's current state after a restore is the restored state, the base of the next one."""
    saved = await saved_then_current(store)
    await store.restore_checkpoint(saved.id, merge_strategy="keep-original")
    again = await store.restore_checkpoint(saved.id, merge_strategy="keep-original", dry_run=True)
    assert again.state == KEPT
    assert [c["path"] for c in again.conflicts] == [c["path"] for c in conflicts("current")]


async def test_a_restore_without_conflicts(store: Store) -> None:
    """Restoring the session's own newest checkpoint changes nothing and reports no conflict."""
    current = await make(store, "current", "s-1", CURRENT)
    result = await store.restore_checkpoint(current.id, merge_strategy="merge")
    assert (result.state, result.conflicts) == (CURRENT, ())


# -- the result and what is written -------------------------------------------------------------


async def test_the_result_fields(store: Store) -> None:
    """The result says it succeeded, from which checkpoint, into which session, and at which seq."""
    saved = await saved_then_current(store)
    result = await store.restore_checkpoint(saved.id, merge_strategy="merge")
    assert isinstance(result, RestoreResult)
    assert result.success is True
    assert result.restored_from == saved.id
    assert result.target_session_id == "s-1"
    assert result.state == MERGED
    assert result.warnings == ()
    assert result.backup_checkpoint_id is None
    assert isinstance(result.event_seq, int)


async def test_a_restored_event_is_in_the_sessions_history(store: Store) -> None:
    """history(session_id=...) holds one checkpoint.restored event whose seq is result.event_seq."""
    saved = await saved_then_current(store)
    result = await store.restore_checkpoint(saved.id, merge_strategy="merge")
    events = (await store.history(session_id="s-1")).events
    restored = [e for e in events if e.type == "checkpoint.restored"]
    assert [e.seq for e in restored] == [result.event_seq]
    (event,) = restored
    assert event.session_id == "s-1"
    assert event.data["checkpointId"] == saved.id
    assert events[-1] == event


async def test_preserve_current_state_backs_up_the_sessions_state(store: Store) -> None:
    """preserveCurrentState saves the previous state as a checkpoint of the target session."""
    saved = await saved_then_current(store)
    result = await store.restore_checkpoint(
        saved.id, merge_strategy="merge", preserve_current_state=True
    )
    assert result.backup_checkpoint_id is not None
    backup = await store.get_checkpoint(result.backup_checkpoint_id)
    assert backup is not None
    assert (backup.session_id, backup.snapshot) == ("s-1", CURRENT)
    listed = await store.get_checkpoints_by_session("s-1")
    assert result.backup_checkpoint_id in ids(listed)
    assert await session_state(store, "s-1") == MERGED


async def test_preserve_current_state_backs_up_a_given_current_state(store: Store) -> None:
    """With current_state given, the backup holds exactly that state."""
    saved = await make(store, "saved", "s-1", SAVED)
    given_state = {"sessions": ["s-1"], "state": {"progress": 99}}
    result = await store.restore_checkpoint(
        saved.id, current_state=given_state, preserve_current_state=True
    )
    assert result.backup_checkpoint_id is not None
    backup = await store.get_checkpoint(result.backup_checkpoint_id)
    assert backup is not None
    assert backup.snapshot == given_state


async def test_preserving_an_empty_session_makes_no_backup(store: Store) -> None:
    """A session without a state gets no backup, and a warning says so."""
    saved = await make(store, "saved", "s-1", SAVED)
    result = await store.restore_checkpoint(
        saved.id, target_session_id="s-new", preserve_current_state=True
    )
    assert result.backup_checkpoint_id is None
    assert any("s-new" in warning for warning in result.warnings)
    assert await session_state(store, "s-new") == SAVED


async def test_restore_into_another_session_leaves_the_source_untouched(store: Store) -> None:
    """Branching into a second session changes that session only."""
    saved = await saved_then_current(store)
    other = {"sessions": ["s-2"], "state": {"progress": 70, "config": {"mode": "slow"}}}
    await make(store, "other", "s-2", other)
    source_list = ids(await store.get_checkpoints_by_session("s-1"))
    source_history = (await store.history(session_id="s-1")).events

    result = await store.restore_checkpoint(
        saved.id, target_session_id="s-2", merge_strategy="merge", preserve_current_state=True
    )
    assert result.target_session_id == "s-2"
    assert result.state == {
        "sessions": ["s-1"],
        "state": {**SAVED["state"], "config": {"mode": "safe", "depth": 2}},
    }
    backup = await store.get_checkpoint(result.backup_checkpoint_id)
    assert backup is not None
    assert (backup.session_id, backup.snapshot) == ("s-2", other)
    assert ids(await store.get_checkpoints_by_session("s-1")) == source_list
    assert (await store.history(session_id="s-1")).events == source_history
    assert await session_state(store, "s-1") == CURRENT
    assert await session_state(store, "s-2") == result.state


async def test_dry_run_writes_nothing(store: Store) -> None:
    """dry_run returns the would-be result, with no event seq and no backup, and writes nothing."""
    saved = await saved_then_current(store)
    before = await all_events(store)
    result = await store.restore_checkpoint(
        saved.id, merge_strategy="merge", preserve_current_state=True, dry_run=True
    )
    assert (result.state, list(result.conflicts)) == (MERGED, conflicts("checkpoint"))
    assert (result.event_seq, result.backup_checkpoint_id) == (None, None)
    assert await all_events(store) == before
    assert len(await store.get_checkpoints_by_session("s-1")) == 2
    assert await session_state(store, "s-1") == CURRENT


# -- validation and refusals -------------------------------------------------------------------

OVERDONE = {"sessions": ["s-1"], "state": {"progress": 150}}


async def test_schema_validation_refuses_and_writes_nothing(store: Store) -> None:
    """validate_schema with a schema-invalid checkpoint raises IntegrityError and writes nothing."""
    bad = await make(store, "overdone", "s-1", OVERDONE)
    before = await all_events(store)
    with pytest.raises(IntegrityError, match="/state/progress"):
        await store.restore_checkpoint(
            bad.id, validation={"validate_schema": True}, preserve_current_state=True
        )
    assert await all_events(store) == before


async def test_schema_failure_without_rollback_proceeds_with_warnings(store: Store) -> None:
    """With rollback_on_error false, a schema failure becomes a warning and the restore goes on."""
    bad = await make(store, "overdone", "s-1", OVERDONE)
    result = await store.restore_checkpoint(
        bad.id, validation={"validate_schema": True}, rollback_on_error=False
    )
    assert result.success is True
    assert result.event_seq is not None
    assert result.state == OVERDONE
    assert any(w.startswith("/state/progress") for w in result.warnings)


async def test_without_schema_validation_a_schema_failure_restores(store: Store) -> None:
    """Schema validation is off by default: the invalid snapshot restores as it is."""
    bad = await make(store, "overdone", "s-1", OVERDONE)
    result = await store.restore_checkpoint(bad.id)
    assert result.state == OVERDONE


@pytest.mark.parametrize("encrypted", [False, True])
async def test_a_damaged_blob_refuses_the_restore_and_writes_nothing(
    manager: CheckpointManager, db_path: Path, encrypted: bool
) -> None:
    """A damaged snapshot is IntegrityError naming the checkpoint; no event, blob or backup."""
    await make(manager, "current", "s-1", CURRENT)
    saved = await make(manager, "saved", "s-2", SAVED, compressed=False, encrypted=encrypted)
    damage_blob(db_path, saved.id)
    seqs, blobs = event_seqs(db_path), blob_count(db_path)
    with pytest.raises(IntegrityError, match=saved.id):
        await manager.restore_checkpoint(
            saved.id, target_session_id="s-1", preserve_current_state=True
        )
    assert (event_seqs(db_path), blob_count(db_path)) == (seqs, blobs)


async def test_a_missing_checkpoint_is_not_found(store: Store) -> None:
    """Restoring an id that does not exist, or was deleted, raises NotFoundError."""
    with pytest.raises(NotFoundError, match="01J00000000000000000000000"):
        await store.restore_checkpoint("01J00000000000000000000000")
    gone = await make(store, "gone")
    await store.delete_checkpoint(gone.id)
    with pytest.raises(NotFoundError, match=gone.id):
        await store.restore_checkpoint(gone.id)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mergeStrategy": "replace"}, "not one of"),
        ({"mergeStrategy": "MERGE"}, "not one of"),
        ({"conflictResolution": {"strategy": "keep_original"}}, "not one of"),
        ({"mergeStrategy": "merge", "conflictResolution": {"strategy": "overwrite"}}, "disagree"),
        ({"mergeStrategy": "overwrite", "conflictResolution": {"strategy": "merge"}}, "disagree"),
        ({"preserveCurrentState": "yes"}, "preserveCurrentState"),
        ({"notify": 1}, "notify"),
        ({"timeout": 0}, "timeout"),
        ({"currentState": ["not", "an", "object"]}, "currentState"),
        ({"validation": {"validateEverything": True}}, "validateEverything"),
        ({"strategy": "merge"}, "unknown"),
    ],
)
async def test_malformed_options_are_refused(
    store: Store, options: dict[str, Any], match: str
) -> None:
    """Unknown or disagreeing strategies and wrong-typed options are InvalidRequestError."""
    saved = await make(store, "saved", "s-1", SAVED)
    before = await all_events(store)
    with pytest.raises(InvalidRequestError, match=match):
        await store.restore_checkpoint(saved.id, options)
    assert await all_events(store) == before


async def test_disagreeing_strategies_as_keywords_are_refused(store: Store) -> None:
    """merge_strategy and conflict_resolution.strategy must agree in the keyword form too."""
    saved = await make(store, "saved", "s-1", SAVED)
    with pytest.raises(InvalidRequestError, match="disagree"):
        await store.restore_checkpoint(
            saved.id, merge_strategy="merge", conflict_resolution={"strategy": "keep-original"}
        )


async def test_agreeing_strategies_are_accepted(store: Store) -> None:
    """Giving the same strategy in both places is allowed, and conflictResolution alone works."""
    saved = await saved_then_current(store)
    both = await store.restore_checkpoint(
        saved.id,
        merge_strategy="keep-original",
        conflict_resolution={"strategy": "keep-original"},
        dry_run=True,
    )
    alone = await store.restore_checkpoint(
        saved.id, conflict_resolution={"strategy": "keep-original"}, dry_run=True
    )
    assert both.state == alone.state == KEPT


# -- the original API's options mapping ------------------------------------------------------------


async def test_the_seeds_options_mapping(store: Store) -> None:
    """The original API's RestoreOptions mapping merges, backs up and validates as it says."""
    saved = await saved_then_current(store)
    result = await store.restore_checkpoint(
        saved.id,
        {
            "targetSessionId": "s-1",
            "mergeStrategy": "merge",
            "preserveCurrentState": True,
            "timeout": 300000,
            "conflictResolution": {"strategy": "merge"},
            "validation": {
                "validateIntegrity": True,
                "validateChecksum": True,
                "validateSchema": True,
            },
            "rollbackOnError": True,
            "notify": True,
        },
    )
    assert (result.success, result.restored_from, result.target_session_id) == (
        True,
        saved.id,
        "s-1",
    )
    assert result.state == MERGED
    assert list(result.conflicts) == conflicts("checkpoint")
    assert result.backup_checkpoint_id is not None
    backup = await store.get_checkpoint(result.backup_checkpoint_id)
    assert backup is not None
    assert backup.snapshot == CURRENT
    assert await session_state(store, "s-1") == MERGED


async def test_options_mapping_and_keywords_together_are_refused(store: Store) -> None:
    """An options mapping and keyword options at once is an InvalidRequestError."""
    saved = await make(store, "saved", "s-1", SAVED)
    with pytest.raises(InvalidRequestError, match="not both"):
        await store.restore_checkpoint(saved.id, {"mergeStrategy": "merge"}, dry_run=True)


@pytest.mark.parametrize("notify", [True, False])
async def test_the_notify_flag_is_accepted(store: Store, notify: bool) -> None:
    """notify true or false is accepted in both forms and does not change the result."""
    saved = await saved_then_current(store)
    by_keyword = await store.restore_checkpoint(saved.id, merge_strategy="merge", notify=notify)
    by_mapping = await store.restore_checkpoint(
        saved.id, {"mergeStrategy": "merge", "notify": notify}
    )
    assert by_keyword.state == by_mapping.state == MERGED


# -- custom resolvers (Python callables: in-process only) --------------------------------------

RESOLVER_CURRENT = {"state": {"a": 1, "b": 5, "c": "same", "e": 9}}
RESOLVER_SAVED = {"state": {"a": 2, "b": 3, "c": "same", "d": 0}}


async def test_a_two_parameter_resolver_settles_each_conflict(manager: CheckpointManager) -> None:
    """resolver(current, checkpoint) settles each conflict (custom); merge does the rest."""
    saved = await make(manager, "saved", "s-1", RESOLVER_SAVED)

    def add(current: int, checkpoint: int) -> int:
        return current + checkpoint

    result = await manager.restore_checkpoint(
        saved.id, current_state=RESOLVER_CURRENT, merge_strategy="merge", custom_resolver=add
    )
    assert result.state == {"state": {"a": 3, "b": 8, "c": "same", "d": 0, "e": 9}}
    assert list(result.conflicts) == [
        {"path": "/state/a", "current": 1, "checkpoint": 2, "resolution": "custom"},
        {"path": "/state/b", "current": 5, "checkpoint": 3, "resolution": "custom"},
    ]
    assert await session_state(manager, "s-1") == result.state


async def test_a_three_parameter_resolver_gets_the_path(manager: CheckpointManager) -> None:
    """resolver(path, current, checkpoint) gets JSON Pointers; overwrite drops current-only keys."""
    saved = await make(manager, "saved", "s-1", RESOLVER_SAVED)
    calls: list[tuple[str, Any, Any]] = []

    def by_path(path: str, current: Any, checkpoint: Any) -> str:
        calls.append((path, current, checkpoint))
        return path

    result = await manager.restore_checkpoint(
        saved.id, current_state=RESOLVER_CURRENT, custom_resolver=by_path
    )
    assert sorted(calls) == [("/state/a", 1, 2), ("/state/b", 5, 3)]
    assert result.state == {"state": {"a": "/state/a", "b": "/state/b", "c": "same", "d": 0}}
    assert [c["resolution"] for c in result.conflicts] == ["custom", "custom"]


async def test_a_resolver_in_the_options_mapping(manager: CheckpointManager) -> None:
    """conflictResolution.customResolver in the original API's mapping works like the keyword."""
    saved = await make(manager, "saved", "s-1", RESOLVER_SAVED)

    def larger(current: int, checkpoint: int) -> int:
        return max(current, checkpoint)

    result = await manager.restore_checkpoint(
        saved.id,
        {
            "currentState": RESOLVER_CURRENT,
            "conflictResolution": {"strategy": "keep-original", "customResolver": larger},
        },
    )
    assert result.state == {"state": {"a": 2, "b": 5, "c": "same", "d": 0, "e": 9}}


async def test_a_failing_resolver_refuses_the_restore_and_writes_nothing(
    manager: CheckpointManager, db_path: Path
) -> None:
    """A resolver that raises is an InvalidRequestError naming the path; nothing is written."""
    saved = await make(manager, "saved", "s-1", RESOLVER_SAVED)
    seqs = event_seqs(db_path)

    def broken(current: Any, checkpoint: Any) -> Any:
        return current / 0

    with pytest.raises(InvalidRequestError, match="/state/a: ZeroDivisionError"):
        await manager.restore_checkpoint(
            saved.id, current_state=RESOLVER_CURRENT, custom_resolver=broken
        )
    assert event_seqs(db_path) == seqs


async def test_a_resolver_of_the_wrong_shape_is_refused(manager: CheckpointManager) -> None:
    """A resolver taking one argument is an InvalidRequestError."""
    saved = await make(manager, "saved", "s-1", RESOLVER_SAVED)
    with pytest.raises(InvalidRequestError, match="custom resolver"):
        await manager.restore_checkpoint(
            saved.id, current_state=RESOLVER_CURRENT, custom_resolver=lambda value: value
        )


# -- encryption --------------------------------------------------------------------------------


def blobs_containing(db_path: Path, marker: bytes) -> list[int]:
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT seq, data FROM blobs ORDER BY seq").fetchall()
    return [seq for seq, data in rows if marker in bytes(data)]


async def test_restoring_an_encrypted_checkpoint_keeps_its_content_encrypted(
    manager: CheckpointManager, db_path: Path
) -> None:
    """Restoring a checkpoint created with encrypted=True never writes its content in plaintext."""
    secret = {"sessions": ["s-1"], "state": {"note": "launch-codes-4242"}}
    cp = await make(manager, "secret", "s-1", secret, encrypted=True, compressed=False)
    assert blobs_containing(db_path, b"launch-codes-4242") == []
    await manager.restore_checkpoint(cp.id, preserve_current_state=True)
    assert blobs_containing(db_path, b"launch-codes-4242") == []


async def test_an_encrypted_current_state_stays_encrypted_through_a_restore(
    manager: CheckpointManager, db_path: Path
) -> None:
    """A session whose current state is an encrypted checkpoint never has it written in plaintext,
    whether backed up or merged into the restored state."""
    plain = await make(manager, "plain", "s-1", {"state": {"progress": 1}}, compressed=False)
    secret = {"state": {"note": "launch-codes-4242"}}
    await make(manager, "secret", "s-1", secret, encrypted=True, compressed=False)
    result = await manager.restore_checkpoint(
        plain.id, merge_strategy="merge", preserve_current_state=True
    )
    assert result.state == {"state": {"progress": 1, "note": "launch-codes-4242"}}
    assert blobs_containing(db_path, b"launch-codes-4242") == []


# -- lineage and diff --------------------------------------------------------------------------


async def test_a_checkpoint_taken_right_after_a_restore_descends_from_it(store: Store) -> None:
    """The next checkpoint of a restored session has the restored checkpoint as its ancestor."""
    saved = await saved_then_current(store)
    await store.restore_checkpoint(saved.id, merge_strategy="merge")
    following = await make(store, "following", "s-1")
    assert ids((await store.get_lineage(following.id)).ancestors) == [saved.id]
    assert following.id in ids((await store.get_lineage(saved.id)).descendants)


async def test_a_restored_session_still_links_its_next_checkpoint_after_reopening(
    open_manager: OpenManager,
) -> None:
    """Reopened on a session left at a restored state, the next checkpoint descends from it."""
    manager = await open_manager()
    saved = await saved_then_current(manager)
    await manager.restore_checkpoint(saved.id, merge_strategy="merge")
    await manager.close()
    reopened = await open_manager()
    following = await make(reopened, "following", "s-1")
    assert ids((await reopened.get_lineage(following.id)).ancestors) == [saved.id]


async def test_a_rebuilt_store_links_checkpoints_taken_after_a_restore(
    manager: CheckpointManager,
) -> None:
    """After a rebuild, creates in a session at a restored state still link to the source."""
    saved = await saved_then_current(manager)
    await manager.restore_checkpoint(saved.id, merge_strategy="merge")
    await manager.rebuild()
    following = await make(manager, "following", "s-1")
    assert ids((await manager.get_lineage(following.id)).ancestors) == [saved.id]


async def test_a_failed_rebuild_leaves_restore_lineage_working(
    manager: CheckpointManager, db_path: Path
) -> None:
    """A rebuild that fails half way is a CheckpointError and leaves the live views serving,
    unchanged, and restore links are still recorded after."""
    saved = await saved_then_current(manager)
    await manager.restore_checkpoint(saved.id, merge_strategy="merge")
    live = dump_projections(db_path)
    with closing(sqlite3.connect(db_path)) as db:  # an undecodable event makes replay fail
        db.execute("DROP TRIGGER events_no_update")
        db.execute("UPDATE events SET data = x'c1' WHERE seq = 1")
        db.commit()
    with pytest.raises(CheckpointError):
        await manager.rebuild()
    assert dump_projections(db_path) == live
    assert (await manager.get_checkpoint(saved.id, include_snapshot=False)) is not None
    following = await make(manager, "following", "s-1")
    assert ids((await manager.get_lineage(following.id)).ancestors) == [saved.id]


async def test_a_checkpoint_in_a_branched_session_descends_from_the_restored_one(
    store: Store,
) -> None:
    """After branching into another session, that session's next checkpoint descends from it."""
    root = await make(store, "root", "s-1")
    saved = await make(store, "saved", "s-1", SAVED, metadata={"parentCheckpoint": root.id})
    await store.restore_checkpoint(saved.id, target_session_id="s-2")
    branched = await make(store, "branched", "s-2")
    assert ids((await store.get_lineage(branched.id)).ancestors) == [saved.id, root.id]
    assert ids((await store.get_lineage(root.id)).descendants) == [saved.id, branched.id]


async def test_a_restore_with_backup_links_the_next_checkpoint_not_the_backup(
    store: Store,
) -> None:
    """The backup a restore makes is not the restored checkpoint's descendant; the next one is."""
    saved = await saved_then_current(store)
    result = await store.restore_checkpoint(saved.id, preserve_current_state=True)
    following = await make(store, "following", "s-1")
    descendants = ids((await store.get_lineage(saved.id)).descendants)
    assert descendants == [following.id]
    assert result.backup_checkpoint_id not in descendants


async def test_a_chain_of_500_parent_and_restore_links(store: Store) -> None:
    """Lineage through 500 alternating parentCheckpoint and restoredFrom links is followed whole."""
    chain = [await make(store, "link-0")]
    for n in range(1, 501):
        link: dict[str, Any] = (
            {"metadata": {"parentCheckpoint": chain[-1].id}}
            if n % 2
            else {"restored_from": chain[-1].id}
        )
        chain.append(await make(store, f"link-{n}", **link))
    lineage = await store.get_lineage(chain[-1].id)
    assert ids(lineage.ancestors) == ids(reversed(chain[:-1]))
    assert lineage.descendants == ()
    assert ids((await store.get_lineage(chain[0].id)).descendants) == ids(chain[1:])
    middle = await store.get_lineage(chain[250].id)
    assert (len(middle.ancestors), len(middle.descendants)) == (250, 250)


DIFF_BEFORE = {
    "sessions": ["s-1"],
    "state": {"progress": 10, "config": {"mode": "fast", "old": 1}, "pending": ["x"]},
}
DIFF_AFTER = {
    "sessions": ["s-1"],
    "state": {"progress": 50, "config": {"mode": "fast", "new": 2}, "pending": ["x", "y"]},
    "extra": {"k": "v"},
}


async def test_diff_lists_adds_removes_and_replaces_by_json_pointer(store: Store) -> None:
    """diff_checkpoints(a, b) gives the changes from a to b, sorted by path, sides as the op has."""
    a = await make(store, "a", "s-1", DIFF_BEFORE)
    b = await make(store, "b", "s-1", DIFF_AFTER)
    diff = await store.diff_checkpoints(a.id, b.id)
    assert list(diff.changes) == [
        {"path": "/extra", "op": "add", "after": {"k": "v"}},
        {"path": "/state/config/new", "op": "add", "after": 2},
        {"path": "/state/config/old", "op": "remove", "before": 1},
        {"path": "/state/pending", "op": "replace", "before": ["x"], "after": ["x", "y"]},
        {"path": "/state/progress", "op": "replace", "before": 10, "after": 50},
    ]
    backwards = await store.diff_checkpoints(b.id, a.id)
    assert [(c["path"], c["op"]) for c in backwards.changes] == [
        ("/extra", "remove"),
        ("/state/config/new", "remove"),
        ("/state/config/old", "add"),
        ("/state/pending", "replace"),
        ("/state/progress", "replace"),
    ]
    assert (await store.diff_checkpoints(a.id, a.id)).changes == ()


async def test_diff_of_a_missing_checkpoint_is_not_found(store: Store) -> None:
    """diff_checkpoints naming a checkpoint that does not exist raises NotFoundError."""
    a = await make(store, "a")
    with pytest.raises(NotFoundError, match="01J00000000000000000000000"):
        await store.diff_checkpoints(a.id, "01J00000000000000000000000")


# -- rebuild -----------------------------------------------------------------------------------


async def test_a_rebuild_after_restores_equals_the_live_projections(
    manager: CheckpointManager, db_path: Path
) -> None:
    """Restores, backups, branches and the checkpoints after them rebuild into the same views."""
    saved = await saved_then_current(manager)
    await manager.restore_checkpoint(saved.id, merge_strategy="merge", preserve_current_state=True)
    await make(manager, "after restore", "s-1")
    await manager.restore_checkpoint(
        saved.id, target_session_id="s-2", merge_strategy="keep-original"
    )
    await manager.restore_checkpoint(
        saved.id, current_state=CURRENT, target_session_id="s-3", preserve_current_state=True
    )
    await make(manager, "after branch", "s-2")
    restored_last = await make(manager, "restored last", "s-4")
    await manager.restore_checkpoint(restored_last.id, target_session_id="s-1")
    await manager.delete_checkpoint(saved.id)
    states = {s: await session_state(manager, s) for s in ("s-1", "s-2", "s-3", "s-4")}
    live = dump_projections(db_path)

    assert await manager.rebuild() == len(event_seqs(db_path))
    assert dump_projections(db_path) == live
    assert {s: await session_state(manager, s) for s in states} == states


# -- properties --------------------------------------------------------------------------------

_sessions: Iterator[int] = itertools.count()
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner),
    max_leaves=8,
)
states = st.dictionaries(st.sampled_from("abcd"), values, max_size=4)
PROPERTY = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def leaf_paths(state: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[Any]:
    """(path, value) for every value in ``state`` that is not an object."""
    for key, value in state.items():
        if isinstance(value, Mapping):
            yield from leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def at_path(state: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        state = state[key]
    return state


def as_json(value: Any) -> str:
    """Canonical JSON text: keeps ``1``, ``1.0``, ``True`` and ``-0.0`` apart, as the store does."""
    return json.dumps(value, sort_keys=True)


async def restorable(manager: CheckpointManager, snapshot: dict[str, Any]) -> Checkpoint:
    return await make(manager, "prop", f"prop-{next(_sessions)}", snapshot)


@PROPERTY
@given(current=states, checkpoint=states)
async def test_overwrite_yields_the_checkpoints_state(
    manager: CheckpointManager, current: dict[str, Any], checkpoint: dict[str, Any]
) -> None:
    """Whatever the current state, an overwrite restore leaves the session at the checkpoint's."""
    cp = await restorable(manager, checkpoint)
    result = await manager.restore_checkpoint(cp.id, current_state=current)
    assert as_json(result.state) == as_json(checkpoint)
    assert as_json(await session_state(manager, cp.session_id)) == as_json(checkpoint)


@PROPERTY
@given(current=states, checkpoint=states)
async def test_keep_original_never_changes_a_current_leaf(
    manager: CheckpointManager, current: dict[str, Any], checkpoint: dict[str, Any]
) -> None:
    """keep-original leaves every non-object value of the current state exactly as it was."""
    cp = await restorable(manager, checkpoint)
    result = await manager.restore_checkpoint(
        cp.id, current_state=current, merge_strategy="keep-original", dry_run=True
    )
    for path, value in leaf_paths(current):
        assert as_json(at_path(result.state, path)) == as_json(value), path
    assert all(c["resolution"] == "current" for c in result.conflicts)


@PROPERTY
@given(current=states, checkpoint=states)
async def test_merge_is_deterministic(
    manager: CheckpointManager, current: dict[str, Any], checkpoint: dict[str, Any]
) -> None:
    """The same merge twice, or with the current state's keys in another order, gives one result."""
    cp = await restorable(manager, checkpoint)
    reordered = dict(reversed(current.items()))
    results = [
        await manager.restore_checkpoint(
            cp.id, current_state=state, merge_strategy="merge", dry_run=True
        )
        for state in (current, current, reordered)
    ]
    first = results[0]
    for other in results[1:]:
        assert as_json(other.state) == as_json(first.state)
        assert as_json(list(other.conflicts)) == as_json(list(first.conflicts))


async def test_a_restore_racing_a_create_merges_with_the_state_the_create_left(
    manager: CheckpointManager,
) -> None:
    """A checkpoint created in the target session while a restore is being prepared is not
    lost: the restore is planned again from the new state and merges with it."""
    source = await make(manager, "source", "s-1", {"state": {"v": 2}})
    await make(manager, "before", "s-1", {"state": {"v": 1}})
    racing: list[asyncio.Task[Checkpoint]] = []

    def resolver(current: Any, checkpoint: Any) -> Any:
        # Runs after the session's state was read and before the restore is written: a create
        # queued now reaches the writer first.
        if not racing:
            racing.append(
                asyncio.ensure_future(make(manager, "racing", "s-1", {"state": {"v": 1, "r": 1}}))
            )
        return checkpoint

    result = await manager.restore_checkpoint(
        source.id, merge_strategy="merge", custom_resolver=resolver
    )
    await racing[0]
    assert result.state == {"state": {"v": 2, "r": 1}}
    assert await session_state(manager, "s-1") == result.state
