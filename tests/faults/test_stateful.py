"""Scenario 8, stateful: random sequences of API calls against an in-memory model of the API.

A Hypothesis ``RuleBasedStateMachine`` creates, updates (with and without an expected version),
deletes, gets, lists by session, searches by a name word, restores (overwrite or merge, into the
checkpoint's own session or another, with or without a backup), moves a fake clock and expires.
After every step the store must agree with the model on every checkpoint ever created (name,
session, version, checksum, snapshot, presence) and ``verify_log`` must pass; after every example
the oracle runs on the closed database file.

It runs against the in-process ``CheckpointManager`` on a real SQLite file (a fresh directory per
example), and against ``CheckpointClient`` through a ``CheckpointService`` and the session's real
nats-server. Rules are synchronous (Hypothesis drives them), so the machine owns an event loop
(``asyncio.Runner``) and runs each call to completion on it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from conftest import FakeClock, serving
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from natsserver import NatsServer

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.errors import ConflictError, NotFoundError
from checkpointd.snapshots import canonical_encode, checksum

from .oracle import check_store

T = TypeVar("T")

SESSIONS = ("s0", "s1", "s2")
# Name words: none is a prefix of another or of any other indexed word (session ids, the
# backups' "backup before restore of ..." names and descriptions, ULIDs), so a search for one
# finds exactly the names that hold it.
WORDS = ("amber", "cobalt", "indigo", "jade", "umber")

json_scalars = st.one_of(st.integers(-5, 5), st.booleans(), st.sampled_from(["x", "y", ""]))
states = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(
        json_scalars,
        st.dictionaries(st.sampled_from(["a", "d"]), json_scalars, max_size=2),
        st.lists(json_scalars, max_size=2),
    ),
    max_size=3,
)
snapshots = st.builds(lambda state: {"state": state}, states)
names = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
expiries = st.one_of(st.none(), st.integers(1, 4))  # hours from now


@dataclass
class Stored:
    """What the model knows of one checkpoint."""

    id: str
    name: str
    session_id: str
    snapshot: dict[str, Any]
    checksum: str
    version: int = 1
    expires_hours: int | None = None  # hours since the clock's start; None: never


@dataclass
class Session:
    """A session's current state, and the checkpoint it came from (None: from a restore, which
    holds values of the checkpoints in ``sources``)."""

    state: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    sources: frozenset[str] = frozenset()

    def holds(self) -> frozenset[str]:
        """The checkpoints whose values this state holds."""
        return frozenset({self.source}) if self.source is not None else self.sources


def deep_merge(current: Any, checkpoint: Any) -> Any:
    """Restore's ``merge``: recurse into objects only, the checkpoint wins every conflict."""
    if isinstance(current, Mapping) and isinstance(checkpoint, Mapping):
        merged = dict(current)
        for key, value in checkpoint.items():
            merged[key] = deep_merge(current[key], value) if key in current else value
        return merged
    return checkpoint


class Model:
    """The API's observable state, kept by hand."""

    def __init__(self) -> None:
        self.live: dict[str, Stored] = {}
        self.created: list[str] = []  # every id ever created, in creation order
        self.deleted: set[str] = set()
        self.sessions: dict[str, Session] = {}
        self.hours = 0  # how far the clock has moved

    def add(self, stored: Stored) -> None:
        self.live[stored.id] = stored
        self.created.append(stored.id)
        self.sessions[stored.session_id] = Session(dict(stored.snapshot), stored.id)

    def remove(self, checkpoint_id: str) -> None:
        """A delete or expiry: every session whose state holds the checkpoint's values (its own,
        or a restored state) falls back to its newest remaining checkpoint."""
        self.live.pop(checkpoint_id)
        self.deleted.add(checkpoint_id)
        for session_id, session in list(self.sessions.items()):
            if checkpoint_id not in session.holds():
                continue
            remaining = self.in_session(session_id)
            newest = self.live[remaining[0]] if remaining else None
            self.sessions[session_id] = (
                Session() if newest is None else Session(dict(newest.snapshot), newest.id)
            )

    def in_session(self, session_id: str) -> list[str]:
        """Live ids of a session, newest first (the clock only moves forward, so creation order
        is timestamp order, and ties are broken by creation order too)."""
        return [
            i
            for i in reversed(self.created)
            if i in self.live and self.live[i].session_id == session_id
        ]

    def expiring(self) -> bool:
        return any(s.expires_hours is not None for s in self.live.values())

    def due(self) -> list[str]:
        return [
            i
            for i, s in self.live.items()
            if s.expires_hours is not None and s.expires_hours <= self.hours
        ]


class StoreMachine(RuleBasedStateMachine):
    """The API under test (``api``) against ``Model``; see the module docstring."""

    target: ClassVar[str] = "manager"  # or "client"
    nats_url: ClassVar[str] = ""
    figures: ClassVar[dict[str, int]] = {}

    checkpoints = Bundle("checkpoints")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.directory = Path(tempfile.mkdtemp(prefix="cpd-stateful-"))
        self.db_path = self.directory / "cp.db"
        self.clock = FakeClock()
        self.model = Model()
        self.stack = AsyncExitStack()
        self.api: Any = self.runner.run(self.open())
        self.figures["examples"] = self.figures.get("examples", 0) + 1

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """One API call (or a few gathered), run to completion on the machine's loop."""
        self.count("operations")
        return self.runner.run(coroutine)

    async def open(self) -> Any:
        manager = CheckpointManager(database_path=str(self.db_path), clock=self.clock)
        await self.stack.enter_async_context(manager)
        if self.target == "manager":
            return manager
        prefix = await self.stack.enter_async_context(serving(manager, self.nats_url))
        client = CheckpointClient(self.nats_url, prefix=prefix, request_timeout=30)
        return await self.stack.enter_async_context(client)

    def teardown(self) -> None:
        try:
            self.runner.run(self.stack.aclose())
            acked = {i: s.checksum for i, s in self.model.live.items()}
            deleted = self.model.deleted
            verdict = self.runner.run(check_store(self.db_path, acked=acked, deleted=deleted))
            self.figures["events"] = self.figures.get("events", 0) + verdict.events
        finally:
            self.runner.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def count(self, what: str) -> None:
        self.figures[what] = self.figures.get(what, 0) + 1

    # -- writes ---------------------------------------------------------------------------------

    @initialize(
        target=checkpoints,
        items=st.lists(
            st.tuples(names, st.sampled_from(SESSIONS), snapshots, expiries), min_size=1, max_size=4
        ),
    )
    def create_some(self, items: list[tuple[str, str, dict[str, Any], int | None]]) -> Any:
        return multiple(*(self.create(*item) for item in items))

    @rule(
        target=checkpoints,
        name=names,
        session_id=st.sampled_from(SESSIONS),
        snapshot=snapshots,
        expires_in=expiries,
    )
    def create(
        self, name: str, session_id: str, snapshot: dict[str, Any], expires_in: int | None
    ) -> str:
        fields: dict[str, Any] = {}
        if expires_in is not None:
            fields["retention_expires_at"] = self.clock.now() + timedelta(hours=expires_in)
        created = self.run(
            self.api.create(
                name=name, session_id=session_id, snapshot=snapshot, branches=["main"], **fields
            )
        )
        expected = checksum(canonical_encode(snapshot))
        assert (created.name, created.session_id, created.version) == (name, session_id, 1)
        assert created.checksum == expected
        hours = None if expires_in is None else self.model.hours + expires_in
        self.model.add(Stored(created.id, name, session_id, snapshot, expected, 1, hours))
        self.count("writes")
        return str(created.id)

    @rule(
        checkpoint_id=checkpoints,
        name=names,
        expect=st.sampled_from(["none", "current", "stale"]),
        expires_in=expiries,
    )
    def update(self, checkpoint_id: str, name: str, expect: str, expires_in: int | None) -> None:
        stored = self.model.live.get(checkpoint_id)
        version = None
        if expect == "current":
            version = stored.version if stored else 1
        elif expect == "stale":
            version = stored.version + 1 if stored else 1
        changes: dict[str, Any] = {"name": name}
        if expires_in is not None:
            changes["retentionExpiresAt"] = self.clock.now() + timedelta(hours=expires_in)
        call = self.api.update_checkpoint(checkpoint_id, changes, expected_version=version)
        if stored is None:
            with pytest.raises(NotFoundError):
                self.run(call)
            return
        if expect == "stale":
            with pytest.raises(ConflictError, match=f"at version {stored.version}"):
                self.run(call)
            return
        updated = self.run(call)
        stored.name, stored.version = name, stored.version + 1
        if expires_in is not None:
            stored.expires_hours = self.model.hours + expires_in
        assert (updated.name, updated.version, updated.checksum) == (
            name,
            stored.version,
            stored.checksum,
        )
        self.count("writes")

    @rule(checkpoint_id=checkpoints)
    def delete(self, checkpoint_id: str) -> None:
        existed = checkpoint_id in self.model.live
        assert self.run(self.api.delete_checkpoint(checkpoint_id)) is existed
        if existed:
            self.model.remove(checkpoint_id)
            self.count("writes")

    @rule(
        target=checkpoints,
        checkpoint_id=checkpoints,
        into=st.one_of(st.none(), st.sampled_from(SESSIONS)),
        strategy=st.sampled_from(["overwrite", "merge"]),
        backup=st.booleans(),
    )
    def restore(self, checkpoint_id: str, into: str | None, strategy: str, backup: bool) -> Any:
        stored = self.model.live.get(checkpoint_id)
        call = self.api.restore_checkpoint(
            checkpoint_id,
            target_session_id=into,
            merge_strategy=strategy,
            preserve_current_state=backup,
        )
        if stored is None:
            with pytest.raises(NotFoundError):
                self.run(call)
            return multiple()
        result = self.run(call)
        target = into or stored.session_id
        prior = self.model.sessions.get(target, Session())
        current = prior.state
        merged = (
            stored.snapshot if strategy == "overwrite" else deep_merge(current, stored.snapshot)
        )
        assert result.target_session_id == target
        assert result.state == merged
        self.count("writes")
        made: Any = multiple()
        if backup and current:
            # The backup holds the session's state as it was: the model's view of it, checked.
            assert result.backup_checkpoint_id is not None
            copy = self.run(self.api.get_checkpoint(result.backup_checkpoint_id))
            assert copy.snapshot == current
            name = f"backup before restore of {checkpoint_id}"
            self.model.add(
                Stored(copy.id, name, target, dict(current), checksum(canonical_encode(current)))
            )
            made = multiple(copy.id)
        else:
            assert result.backup_checkpoint_id is None
        self.model.sessions[target] = Session(dict(merged), None, prior.holds() | {checkpoint_id})
        return made

    @precondition(lambda self: self.model.expiring())
    @rule(hours=st.integers(1, 3))
    def advance_clock(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))
        self.model.hours += hours

    @precondition(lambda self: self.model.expiring())
    @rule()
    def delete_expired(self) -> None:
        due = self.model.due()
        assert self.run(self.api.delete_expired_checkpoints()) == len(due)
        for checkpoint_id in due:
            self.model.remove(checkpoint_id)
            self.count("writes")

    # -- reads ----------------------------------------------------------------------------------

    @rule(session_id=st.sampled_from(SESSIONS))
    def list_session(self, session_id: str) -> None:
        page = self.run(self.api.get_checkpoints_by_session(session_id, page_size=1000))
        expected = self.model.in_session(session_id)
        assert [cp.id for cp in page.items] == expected
        assert page.total == len(expected)

    @rule(word=st.sampled_from(WORDS), session_id=st.one_of(st.none(), st.sampled_from(SESSIONS)))
    def search(self, word: str, session_id: str | None) -> None:
        request: dict[str, Any] = {"query": word + " ", "pagination": {"pageSize": 1000}}
        if session_id is not None:
            request["filters"] = {"sessionId": session_id}
        page = self.run(self.api.search_checkpoints(request))
        expected = {
            i
            for i, s in self.model.live.items()
            if word in s.name.split() and session_id in (None, s.session_id)
        }
        assert {cp.id for cp in page.items} == expected
        assert page.total == len(expected)

    @invariant()
    def store_equals_model(self) -> None:
        found = self.run(self.get_all(self.model.created))
        for checkpoint_id, got in zip(self.model.created, found, strict=True):
            stored = self.model.live.get(checkpoint_id)
            if stored is None:
                assert got is None, f"{checkpoint_id} was deleted but is still there"
                continue
            assert got is not None, f"{checkpoint_id} is lost"
            assert (got.name, got.session_id, got.version, got.checksum) == (
                stored.name,
                stored.session_id,
                stored.version,
                stored.checksum,
            )
            assert got.snapshot == stored.snapshot
        verified = self.run(self.api.verify_log())
        assert verified.ok, verified

    async def get_all(self, ids: list[str]) -> list[Any]:
        return list(await asyncio.gather(*(self.api.get_checkpoint(i) for i in ids)))


def run_machine(
    target: str, figures: dict[str, Any], *, examples: int, steps: int, nats_url: str = ""
) -> None:
    """Run ``StoreMachine`` against ``target`` for ``examples`` sequences of up to ``steps``."""
    counts: dict[str, int] = {}
    machine = type(
        f"StoreMachine_{target}",
        (StoreMachine,),
        {"target": target, "nats_url": nats_url, "figures": counts},
    )
    chosen = settings(
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        max_examples=examples,
        stateful_step_count=steps,
    )
    run_state_machine_as_test(machine, settings=chosen)
    figures.update(
        rounds=counts.get("examples", 0),
        operations=counts.get("operations", 0),
        acknowledged=counts.get("writes", 0),
        events=counts.get("events", 0),
        losses=0,  # a lost write fails the invariant or the oracle, which fails the test
    )


def test_the_manager_behaves_as_the_model(figures: dict[str, Any]) -> None:
    """Random API sequences on CheckpointManager agree with the model after every step, and
    each example's file passes the oracle."""
    run_machine("manager", figures, examples=25, steps=30)


def test_the_client_behaves_as_the_model(nats_server: NatsServer, figures: dict[str, Any]) -> None:
    """The same sequences through CheckpointClient, a CheckpointService and real nats-server."""
    run_machine("client", figures, examples=15, steps=30, nats_url=nats_server.url)


@pytest.mark.slow
def test_the_manager_behaves_as_the_model_long(figures: dict[str, Any]) -> None:
    """The manager variant with 300 examples of up to 60 steps."""
    run_machine("manager", figures, examples=300, steps=60)


@pytest.mark.slow
def test_the_client_behaves_as_the_model_long(
    nats_server: NatsServer, figures: dict[str, Any]
) -> None:
    """The client variant with 300 examples of up to 60 steps (a minute or two)."""
    run_machine("client", figures, examples=300, steps=60, nats_url=nats_server.url)
