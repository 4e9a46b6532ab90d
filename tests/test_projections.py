"""Projections under random command sequences: live views equal a rebuild, and stats a recount.

Each Hypothesis example runs a random sequence of creates, updates, deletes, expiries,
batches, restores, pending writes, session copies, prunes and deletes by metadata (some of
them failing, some of them concurrent so they share a group commit) on a fresh database, then
checks one property of the resulting views.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, caught_up, dump_projections, views_file
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointd import Checkpoint, CheckpointManager, Priority
from checkpointd.clock import parse_timestamp
from checkpointd.errors import CheckpointError

SESSIONS = ("s-1", "s-2", "s-3")
FEATURES = (None, "auth", "billing")
TAGS = ("stable", "beta", "hotfix")


@dataclass(frozen=True)
class Create:
    session: str
    feature: str | None
    priority: str
    tags: tuple[str, ...]
    retention_days: int | None
    description: str | None

    def request(self, name: str, now: datetime) -> dict[str, Any]:
        metadata: dict[str, Any] = {"priority": self.priority}
        if self.feature is not None:
            metadata["feature"] = self.feature
        if self.tags:
            metadata["tags"] = list(self.tags)
        if self.description is not None:
            metadata["description"] = self.description
        request: dict[str, Any] = {
            "name": name,
            "sessionId": self.session,
            "snapshot": {"name": name, "pad": "z" * (len(name) * 37 % 300)},
            "branches": ["main"],
            "metadata": metadata,
        }
        if self.retention_days is not None:
            request["retentionExpiresAt"] = now + timedelta(days=self.retention_days)
        return request


@dataclass(frozen=True)
class Update:
    target: int
    name: str | None
    feature: str | None
    priority: str
    expected_version: int | None


@dataclass(frozen=True)
class Delete:
    target: int


@dataclass(frozen=True)
class Expire:
    days: int


@dataclass(frozen=True)
class Batch:
    items: tuple[Create, ...]
    bad_item: int | None  # index of an item given a wrong checksum: the batch must fail whole


@dataclass(frozen=True)
class Restore:
    target: int
    session: str | None  # None: the checkpoint's own session
    strategy: str
    preserve: bool


@dataclass(frozen=True)
class PutWrites:
    target: int
    task: str
    writes: tuple[tuple[int, str], ...]  # (index, value): a negative index replaces


@dataclass(frozen=True)
class CopySession:
    source: str
    target: str


@dataclass(frozen=True)
class Prune:
    session: str
    keep: int


@dataclass(frozen=True)
class DeleteByFeature:
    features: tuple[str, ...]
    session: str | None


@dataclass(frozen=True)
class Together:
    """Commands submitted at once, so the writer commits them in one group."""

    ops: tuple[Any, ...]


creates = st.builds(
    Create,
    session=st.sampled_from(SESSIONS),
    feature=st.sampled_from(FEATURES),
    priority=st.sampled_from([p.value for p in Priority]),
    tags=st.lists(st.sampled_from(TAGS), unique=True, max_size=2).map(tuple),
    retention_days=st.one_of(st.none(), st.integers(1, 20)),
    description=st.one_of(st.none(), st.sampled_from(["nightly build", "release candidate"])),
)
updates = st.builds(
    Update,
    target=st.integers(0, 50),
    name=st.one_of(st.none(), st.sampled_from(["renamed", "milestone"])),
    feature=st.sampled_from(FEATURES),
    priority=st.sampled_from([p.value for p in Priority]),
    expected_version=st.one_of(st.none(), st.integers(1, 3)),
)
deletes = st.builds(Delete, target=st.integers(0, 50))
expiries = st.builds(Expire, days=st.integers(1, 10))
batches = st.builds(
    Batch,
    items=st.lists(creates, min_size=1, max_size=5).map(tuple),
    bad_item=st.one_of(st.none(), st.integers(0, 4)),
)
restores = st.builds(
    Restore,
    target=st.integers(0, 50),
    session=st.one_of(st.none(), st.sampled_from(SESSIONS)),
    strategy=st.sampled_from(["overwrite", "merge", "keep-original"]),
    preserve=st.booleans(),
)


put_writes = st.builds(
    PutWrites,
    target=st.integers(0, 50),
    task=st.sampled_from(["t1", "t2"]),
    writes=st.lists(
        st.tuples(st.integers(-2, 3), st.sampled_from(["v", "w" * 40])), min_size=1, max_size=4
    ).map(tuple),
)
copies = st.builds(
    CopySession, source=st.sampled_from(SESSIONS), target=st.sampled_from(["c-1", "c-2"])
)
prunes = st.builds(Prune, session=st.sampled_from([*SESSIONS, "c-1"]), keep=st.integers(0, 2))
feature_deletes = st.builds(
    DeleteByFeature,
    features=st.lists(st.sampled_from(["auth", "billing"]), min_size=1, max_size=2).map(tuple),
    session=st.one_of(st.none(), st.sampled_from(SESSIONS)),
)


def command_lists(*extra: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    single = [creates, creates, updates, deletes, expiries, batches, *extra]
    together = st.builds(
        Together,
        ops=st.lists(
            st.one_of(creates, updates, deletes, batches, *extra), min_size=2, max_size=8
        ).map(tuple),
    )
    return st.lists(st.one_of(*single, together), min_size=5, max_size=40)


commands = command_lists()
# Restores move a session's state away from its newest checkpoint, so the sessions property
# below uses the sequences without them; the rebuild and stats properties use them, and
# pending writes and the commands on whole sessions (copy, prune, delete by metadata) too.
commands_with_everything = command_lists(restores, put_writes, copies, prunes, feature_deletes)


@dataclass
class Run:
    """What a command sequence did: every checkpoint id it created, in order."""

    manager: CheckpointManager
    clock: FakeClock
    created: list[str] = field(default_factory=list)

    def pick(self, target: int) -> str:
        return self.created[target % len(self.created)] if self.created else "01J0000000000000"

    def next_name(self) -> str:
        return f"cp-{len(self.created)}-{self.clock.now():%j}"

    async def create(self, op: Create) -> None:
        cp = await self.manager.create(op.request(self.next_name(), self.clock.now()))
        self.created.append(cp.id)

    async def update(self, op: Update) -> None:
        changes: dict[str, Any] = {"metadata": _metadata(op.feature, op.priority)}
        if op.name is not None:
            changes["name"] = op.name
        await self.manager.update_checkpoint(
            self.pick(op.target), changes, expected_version=op.expected_version
        )

    async def batch(self, op: Batch) -> None:
        now, name = self.clock.now(), self.next_name()
        items = [c.request(f"{name}-{n}", now) for n, c in enumerate(op.items)]
        if op.bad_item is not None:
            items[op.bad_item % len(items)]["checksum"] = "sha256:" + "0" * 64
        created: list[Checkpoint] = await self.manager.create_batch(items)
        self.created.extend(cp.id for cp in created)

    async def run(self, op: object) -> None:
        match op:
            case Create():
                await self.create(op)
            case Update():
                await self.update(op)
            case Delete(target):
                await self.manager.delete_checkpoint(self.pick(target))
            case Expire(days):
                self.clock.advance(timedelta(days=days))
                await self.manager.delete_expired_checkpoints()
            case Batch():
                await self.batch(op)
            case Restore(target, session, strategy, preserve):
                await self.manager.restore_checkpoint(
                    self.pick(target),
                    target_session_id=session,
                    merge_strategy=strategy,
                    preserve_current_state=preserve,
                )
            case PutWrites(target, task, writes):
                items = [(index, "channel", value) for index, value in writes]
                await self.manager.put_writes(self.pick(target), task, items)
            case CopySession(source, target):
                copied = await self.manager.copy_session(source, target)
                self.created.extend(copied.ids.values())
            case Prune(session, keep):
                await self.manager.prune_session(session, keep)
            case DeleteByFeature(features, session):
                await self.manager.delete_by_metadata("feature", list(features), session)
            case Together(ops):
                await asyncio.gather(*(self.run(o) for o in ops), return_exceptions=True)


def _metadata(feature: str | None, priority: str) -> dict[str, Any]:
    # Priority first: not the canonical (sorted) key order, which a rebuild must reproduce.
    return {"priority": priority} if feature is None else {"priority": priority, "feature": feature}


async def play(db_path: Path, ops: list[object], check: Callable[[CheckpointManager], Any]) -> None:
    """Run ``ops`` on a fresh store at ``db_path`` (refused commands are expected), then check."""
    clock = FakeClock()
    async with CheckpointManager(database_path=str(db_path), clock=clock) as manager:
        run = Run(manager, clock)
        refused: set[str] = set()
        for op in ops:
            try:
                await run.run(op)
            except CheckpointError as exc:
                refused.add(exc.code)
        assert refused <= {"conflict", "not_found", "integrity"}
        await check(manager)


def fresh_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("projections") / "cp.db"


EXAMPLES = settings(max_examples=25, deadline=None)


@EXAMPLES
@given(ops=commands_with_everything)
def test_live_projections_equal_a_rebuild(
    tmp_path_factory: pytest.TempPathFactory, ops: list[object]
) -> None:
    """After any command sequence, rebuilding from event 0 reproduces every view exactly."""
    db_path = fresh_db(tmp_path_factory)

    async def check(manager: CheckpointManager) -> None:
        live = dump_projections(db_path)
        with closing(sqlite3.connect(db_path)) as conn:
            (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
        assert await manager.rebuild() == events
        assert dump_projections(db_path) == live

    asyncio.run(play(db_path, ops, check))


RECOUNT_TOTALS = (
    "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0) FROM checkpoints"
)
RECOUNT_COUNTS = """
    SELECT 'feature', feature, count(*) FROM checkpoints WHERE feature IS NOT NULL GROUP BY feature
    UNION ALL SELECT 'priority', priority, count(*) FROM checkpoints GROUP BY priority
    UNION ALL SELECT 'session', session_id, count(*) FROM checkpoints GROUP BY session_id
"""


@EXAMPLES
@given(ops=commands_with_everything)
def test_stats_equal_a_recount(tmp_path_factory: pytest.TempPathFactory, ops: list[object]) -> None:
    """The maintained stats counters, and get_checkpoint_stats, equal a recount from scratch."""
    db_path = fresh_db(tmp_path_factory)

    async def check(manager: CheckpointManager) -> None:
        caught_up(db_path)
        with closing(sqlite3.connect(views_file(db_path))) as conn:
            totals = conn.execute(
                "SELECT checkpoints, total_size, stored_size FROM stats_totals"
            ).fetchall()
            counts = conn.execute("SELECT dimension, key, n FROM stats_counts").fetchall()
            recount = conn.execute(RECOUNT_TOTALS).fetchall()
            by = sorted(conn.execute(RECOUNT_COUNTS).fetchall())
            edges = conn.execute(
                "SELECT min(timestamp), max(timestamp) FROM checkpoints"
            ).fetchone()
        assert totals == recount
        assert sorted(counts) == by
        assert all(n > 0 for _, _, n in counts)
        stats = await manager.get_checkpoint_stats()
        ((count, size, stored),) = recount
        assert (stats.total_checkpoints, stats.total_size, stats.stored_size) == (
            count,
            size,
            stored,
        )
        assert stats.average_size == (size / count if count else 0.0)
        assert dict(stats.by_feature) == {k: n for d, k, n in by if d == "feature"}
        assert dict(stats.by_priority) == {k: n for d, k, n in by if d == "priority"}
        assert dict(stats.by_session) == {k: n for d, k, n in by if d == "session"}
        oldest, newest = stats.oldest_checkpoint, stats.newest_checkpoint
        if count == 0:
            assert (oldest, newest) == (None, None)
        else:
            assert oldest is not None
            assert newest is not None
            assert (oldest.timestamp, newest.timestamp) == tuple(map(parse_timestamp, edges))

    asyncio.run(play(db_path, ops, check))


@EXAMPLES
@given(ops=commands)
def test_sessions_point_at_their_newest_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, ops: list[object]
) -> None:
    """Each session's current checkpoint is the newest live checkpoint created in it."""
    db_path = fresh_db(tmp_path_factory)

    async def check(manager: CheckpointManager) -> None:
        caught_up(db_path)
        with closing(sqlite3.connect(views_file(db_path))) as conn:
            current = dict(conn.execute("SELECT session_id, checkpoint_id FROM sessions"))
            newest = dict(
                conn.execute(
                    "SELECT session_id, id FROM checkpoints c WHERE seq ="
                    " (SELECT max(seq) FROM checkpoints WHERE session_id = c.session_id)"
                )
            )
        assert {s: cp for s, cp in current.items() if cp is not None} == newest
        for session_id, checkpoint_id in newest.items():
            page = await manager.get_checkpoints_by_session(session_id, page_size=1000)
            assert checkpoint_id in {cp.id for cp in page}

    asyncio.run(play(db_path, ops, check))
