"""Named crash points in the daemon: each leaves the before- or the after-state, never a mix,
and a retry with the same ``Nats-Msg-Id`` has one effect and gives the original reply.

Each test starts ``checkpointd serve`` with ``CHECKPOINTD_CRASH_AT=<point>@<n>`` (``n`` chosen
so that some acknowledged state exists before), drives the operation that passes the point
through ``CheckpointClient``, and sees the daemon die of SIGKILL (exit code -9) at it. Then, on
the database no process has open: the oracle (``check_store``) with what was acknowledged, and
the crashed operation's footprint, all of it or none of it. Then a daemon without the crash
point on the same state, and the retry with the same idempotency key.

Where each point leaves a create:

- ``after-append-before-commit``: before COMMIT, so absent; the retry creates it;
- ``after-commit-before-reply``: committed, never answered; the retry answers with it;
- ``after-reply-before-notify``: committed and answered; the retry's reply equals the original.
  Notifications are not durable: one not yet published when the process dies is never
  published. A subscriber sees a gap in ``seq`` and reads the missing events from ``history``
  (``after_seq``); the test checks that this recovers every create, and reports whether the
  crashed create's notification got out (the daemon flushes its connection before it dies, so
  one published before the reply went out with it).

``mid-cleanup`` dies between two expiry steps (each its own transaction, ``ExpireDue.limit``
checkpoints): the state is the one after a whole number of steps, each expired checkpoint
wholly gone and every other wholly there; the retry with the same key expires the rest, each
checkpoint once. Its reply counts what the retry expired (no reply was received before).
``mid-rebuild`` dies while the rebuild replays into its fresh views file: the live views are
as before, and the rebuild run again after the restart writes the same rows.

``projector-mid-batch`` fires in the projector, a process of the daemon's own: it dies with a
batch applied to the views but not committed, and only it dies. The daemon restarts it, it
resumes from the last batch that committed, and every read waits for it: nothing acknowledged
is lost or reads stale. A projector that dies at every batch leaves the views behind the log,
whole batches only, and reads answer ``unavailable``, never a stale answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from conftest import caught_up, dump_projections, views_file
from daemon.serving import DEADLINE, Daemon, Daemons
from natsserver import subscribed

from checkpointd import CheckpointClient
from checkpointd.errors import UnavailableError
from checkpointd.faults import ENV
from checkpointd.snapshots.canonical import canonical_encode, checksum
from checkpointd.write.commands import ExpireDue

from .oracle import check_store, wait_for_children

T = TypeVar("T")
SESSION = "crash-points"
# No cleanup loop: its start-up pass would commit too and count towards the write points.
SETTINGS = {"auto_cleanup": False}


def start(daemons: Daemons, crash_at: str) -> Daemon:
    """A daemon on a fresh state directory, armed to crash at ``crash_at`` (``point@n``)."""
    return daemons.start(SETTINGS, env={ENV: crash_at})


def restart(daemons: Daemons, crashed: Daemon) -> Daemon:
    """A daemon on ``crashed``'s state directory, with no crash point."""
    return daemons.start({**SETTINGS, "state_directory": str(crashed.state)})


@asynccontextmanager
async def client_of(daemon: Daemon) -> AsyncIterator[CheckpointClient]:
    # No retries: a request the crash left unanswered is the test's to send again.
    async with CheckpointClient(
        daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE, retries=0
    ) as client:
        yield client


def body(name: str, **extra: Any) -> dict[str, Any]:
    snapshot = {"sessions": [SESSION], "state": {"name": name, "notes": f"{name} " * 400}}
    return {
        "name": name,
        "sessionId": SESSION,
        "snapshot": snapshot,
        "branches": ["main"],
        "metadata": {"feature": "faults", "tags": ["crash"]},
        **extra,
    }


def sent_checksum(request: dict[str, Any]) -> str:
    return checksum(canonical_encode(request["snapshot"]))


async def crash_during(daemon: Daemon, operation: Awaitable[T], *, answered: bool) -> T | None:
    """Run ``operation`` until the daemon dies of SIGKILL; its reply if ``answered``.

    A reply sent before the crash was flushed to the server, so it arrives (bounded wait);
    otherwise there is none to wait for: the request is abandoned once the daemon is gone.
    """
    task = asyncio.ensure_future(operation)
    code = await asyncio.to_thread(daemon.wait)
    assert code == -signal.SIGKILL, daemon.diagnostics()
    await asyncio.to_thread(wait_for_children, daemon.children)
    if answered:
        async with asyncio.timeout(DEADLINE):
            return await task
    assert not task.done(), f"a reply came from a crash before the reply: {task}"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def footprint(db_path: Path, name: str, key: str) -> dict[str, int]:
    """Every trace one create leaves: its checkpoint row and FTS entry (in the views, caught
    up with the log), its create event, blob and idempotency key (in the log), each counted:
    all 1 for a create that happened, all 0 otherwise."""
    caught_up(db_path)
    with closing(sqlite3.connect(views_file(db_path))) as views:
        rows = views.execute("SELECT id, seq FROM checkpoints WHERE name = ?", (name,)).fetchall()
        fts = views.execute(
            "SELECT count(*) FROM checkpoints_fts WHERE checkpoints_fts MATCH ?",
            (f'name:"{name}"',),
        ).fetchone()[0]
    ids = [r[0] for r in rows] or [""]
    seqs = [r[1] for r in rows] or [0]
    with closing(sqlite3.connect(db_path)) as conn:
        return {
            "checkpoint": len(rows),
            "event": conn.execute(
                "SELECT count(*) FROM events WHERE stream = ? AND type = 'checkpoint.created'",
                (ids[0],),
            ).fetchone()[0],
            "blob": conn.execute("SELECT count(*) FROM blobs WHERE seq = ?", (seqs[0],)).fetchone()[
                0
            ],
            "fts": fts,
            "key": conn.execute(
                "SELECT count(*) FROM idempotency WHERE key = ?", (key,)
            ).fetchone()[0],
        }


def counts(db_path: Path) -> tuple[int, int, int]:
    """Events (in the log), checkpoints, and the checkpoints the stats projection counts (in
    the views, caught up with the log)."""
    caught_up(db_path)
    with closing(sqlite3.connect(db_path)) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    with closing(sqlite3.connect(views_file(db_path))) as views:
        live = views.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        stats = views.execute("SELECT checkpoints FROM stats_totals").fetchone()[0]
    return events, live, stats


def whole(trace: dict[str, int], present: bool) -> None:
    expected = dict.fromkeys(trace, 1 if present else 0)
    assert trace == expected, f"a partial create: {trace}"


# -- the write points ---------------------------------------------------------------------------


async def third_create_crashed(
    daemons: Daemons, point: str
) -> tuple[Daemon, str, dict[str, Any], dict[str, str]]:
    """Two creates acknowledged, then a third, sent with its key, during which the daemon dies
    at ``point`` without replying; the oracle on what is left. Returns the dead daemon, the
    third's key and request, and the acknowledged ``{id: checksum}``."""
    daemon = start(daemons, f"{point}@3")
    key, request = uuid.uuid4().hex, body("third")
    async with client_of(daemon) as client:
        acked = [await client.create(body(name)) for name in ("first", "second")]
        lost = await crash_during(
            daemon, client.create(request, idempotency_key=key), answered=False
        )
    assert lost is None
    before = {c.id: c.checksum for c in acked}
    await check_store(daemon.db_path, acked=before)
    return daemon, key, request, before


async def test_after_append_before_commit_leaves_the_create_out_and_its_retry_makes_it(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Killed with the create's rows written but not committed: nothing of it survives; the
    retry with its key creates it, once."""
    daemon, key, request, before = await third_create_crashed(daemons, "after-append-before-commit")
    whole(footprint(daemon.db_path, "third", key), present=False)
    assert counts(daemon.db_path) == (2, 2, 2)  # the before-state

    await retry_creates_once(
        daemons, daemon, request=request, key=key, acked=before, figures=figures, found=None
    )


async def test_after_commit_before_reply_keeps_the_create_and_its_retry_answers_with_it(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Killed after COMMIT, before anyone was told: the create is wholly there; the retry
    with its key answers with that checkpoint and creates nothing."""
    daemon, key, request, before = await third_create_crashed(daemons, "after-commit-before-reply")
    whole(footprint(daemon.db_path, "third", key), present=True)
    assert counts(daemon.db_path) == (3, 3, 3)  # the after-state
    with closing(sqlite3.connect(views_file(daemon.db_path))) as views:
        found = views.execute(
            "SELECT id, checksum FROM checkpoints WHERE name = 'third'"
        ).fetchone()
    assert found[1] == sent_checksum(request)

    await retry_creates_once(
        daemons, daemon, request=request, key=key, acked=before, figures=figures, found=found[0]
    )


async def retry_creates_once(
    daemons: Daemons,
    crashed: Daemon,
    *,
    request: dict[str, Any],
    key: str,
    acked: dict[str, str],
    figures: dict[str, Any],
    found: str | None,
) -> None:
    """Restart without the crash point; send ``request`` again with ``key``, twice: one
    checkpoint, the one ``found`` after the crash if any; both retries answer alike."""
    daemon = restart(daemons, crashed)
    async with client_of(daemon) as client:
        retried = await client.create(request, idempotency_key=key)
        again = await client.create(request, idempotency_key=key)
    assert again == retried
    assert retried.checksum == sent_checksum(request)
    if found is not None:
        assert retried.id == found
    assert await asyncio.to_thread(daemon.stop) == 0

    acked = {**acked, retried.id: retried.checksum}
    verdict = await check_store(daemon.db_path, acked=acked)
    whole(footprint(daemon.db_path, request["name"], key), present=True)
    assert counts(daemon.db_path) == (3, 3, 3)
    figures.update(
        rounds=1,
        operations=5,
        acknowledged=len(acked),
        losses=0,
        crashed_state="after" if found else "before",
        events=verdict.events,
    )


def projector_restarts(daemon: Daemon) -> int:
    """How many times the daemon logged that its projector stopped and was restarted."""
    return sum(1 for r in daemon.logs() if r.get("event") == "the projector stopped; restarting it")


def views_position(db_path: Path) -> int:
    """The last log position the views file has committed (read as a restart would find it)."""
    with closing(sqlite3.connect(views_file(db_path))) as views:
        row = views.execute("SELECT seq FROM projection_position").fetchone()
    return 0 if row is None else int(row[0])


async def test_projector_mid_batch_kills_only_the_projector_and_its_successor_resumes(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """The projector killed with a batch applied to the views but not committed: the daemon
    lives on, restarts it, and the successor applies the batch from the last commit; every
    acknowledged create reads back (each read waits for the views), nothing is lost, and the
    views equal a rebuild."""
    # Every projector process dies at the second batch it applies.
    daemon = start(daemons, "projector-mid-batch@2")
    key = uuid.uuid4().hex
    batch = [body(f"batch-{n}") for n in range(3)]
    async with client_of(daemon) as client:
        first = await client.create(body("first"))
        # The read waits for the views to reach event 1: the projector's first batch.
        assert (await client.get_checkpoint(first.id)).checksum == first.checksum
        # Acknowledged once in the log; events 2-4 are the projector's second batch, where it
        # dies. Its successor starts from event 1 and applies them.
        created = await client.create_batch(batch, idempotency_key=key)
        for cp in created:
            assert (await client.get_checkpoint(cp.id)).checksum == cp.checksum
        again = await client.create_batch(batch, idempotency_key=key)
    assert again == created
    assert [c.checksum for c in created] == [sent_checksum(item) for item in batch]
    assert daemon.process.poll() is None, daemon.diagnostics()
    restarts = projector_restarts(daemon)
    assert restarts >= 1, daemon.diagnostics()
    assert await asyncio.to_thread(daemon.stop) == 0

    acked = {c.id: c.checksum for c in [first, *created]}
    verdict = await check_store(daemon.db_path, acked=acked)
    assert counts(daemon.db_path) == (4, 4, 4)
    for item in batch:
        whole(footprint(daemon.db_path, item["name"], key), present=True)
    figures.update(
        rounds=1,
        operations=5 + len(created),
        acknowledged=len(acked),
        losses=0,
        projector_restarts=restarts,
        events=verdict.events,
    )


async def test_a_projector_dying_at_every_batch_leaves_whole_batches_and_no_stale_read(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Every projector process killed mid-batch: writes are still acknowledged (the log has
    them), reads answer ``unavailable`` rather than from views that lack them, the daemon
    stops cleanly, and the views file holds whole batches only: it is behind the log and
    equals a rebuild of the log up to its position (the oracle). The next open catches up."""
    daemon = daemons.start(SETTINGS)
    async with client_of(daemon) as client:
        acked = [await client.create(body(name)) for name in ("first", "second")]
        assert (await client.get_checkpoint(acked[1].id)).checksum == acked[1].checksum
    assert await asyncio.to_thread(daemon.stop) == 0
    assert views_position(daemon.db_path) == 2

    daemon = daemons.start(
        {**SETTINGS, "state_directory": str(daemon.state), "read_timeout": 1.0},
        env={ENV: "projector-mid-batch@1"},
    )
    key = uuid.uuid4().hex
    async with client_of(daemon) as client:
        third = await client.create(body("third"), idempotency_key=key)
        with pytest.raises(UnavailableError):
            await client.get_checkpoint(third.id)
        with pytest.raises(UnavailableError):
            await client.get_checkpoint(acked[0].id)  # the views are behind what it wrote
        assert await client.create(body("third"), idempotency_key=key) == third
    assert daemon.process.poll() is None, daemon.diagnostics()
    restarts = projector_restarts(daemon)
    assert restarts >= 1, daemon.diagnostics()
    assert await asyncio.to_thread(daemon.stop) == 0
    assert views_position(daemon.db_path) == 2  # the batch of event 3 never committed

    acknowledged = {c.id: c.checksum for c in [*acked, third]}
    verdict = await check_store(daemon.db_path, acked=acknowledged)
    whole(footprint(daemon.db_path, "third", key), present=True)
    assert counts(daemon.db_path) == (3, 3, 3)
    figures.update(
        rounds=1,
        operations=8,
        acknowledged=len(acknowledged),
        losses=0,
        projector_restarts=restarts,
        crashed_state="views behind the log by one batch",
        events=verdict.events,
    )


async def test_after_reply_before_notify_the_retry_gives_the_original_reply_and_history_fills_the_gap(  # noqa: E501
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Killed once the reply is out, before the notifications: the create is there, the retry
    with its key gets exactly the reply received, and a subscriber recovers every created
    event from ``history`` after the last ``seq`` it was notified of."""
    daemon = start(daemons, "after-reply-before-notify@3")  # the third reply
    key, request = uuid.uuid4().hex, body("third")
    notified: dict[int, str] = {}
    listener = await nats.connect(daemon.url)
    try:
        async with (
            subscribed(listener, f"{daemon.prefix}.events.created.>") as created_events,
            client_of(daemon) as client,
        ):
            acked = [await client.create(body(name)) for name in ("first", "second")]
            original = await crash_during(
                daemon, client.create(request, idempotency_key=key), answered=True
            )
            # The daemon flushed before dying: what it published is at the server, and our own
            # round trip brings it all in.
            await listener.flush()
            while created_events.pending_msgs:
                message = await created_events.next_msg(timeout=DEADLINE)
                event = json.loads(message.data)
                notified[event["seq"]] = event["checkpointId"]
    finally:
        await listener.close()
    assert original is not None

    acknowledged = {c.id: c.checksum for c in [*acked, original]}
    await check_store(daemon.db_path, acked=acknowledged)
    whole(footprint(daemon.db_path, "third", key), present=True)
    assert counts(daemon.db_path) == (3, 3, 3)

    daemon = restart(daemons, daemon)
    async with client_of(daemon) as client:
        retried = await client.create(request, idempotency_key=key)
        # The subscriber's recovery: everything after the last seq it saw without a gap.
        seen = 0
        while seen + 1 in notified:
            seen += 1
        history = await client.history(session_id=SESSION, after_seq=seen)
    assert retried == original
    assert 3 not in notified, "the crash point is before the notification is published"
    recovered = {e.seq: e.stream for e in history.events if e.type == "checkpoint.created"}
    everything = {**notified, **recovered}
    assert everything == {1: acked[0].id, 2: acked[1].id, 3: original.id}
    assert await asyncio.to_thread(daemon.stop) == 0

    verdict = await check_store(daemon.db_path, acked=acknowledged)
    assert counts(daemon.db_path) == (3, 3, 3)
    figures.update(
        rounds=1,
        operations=4,
        acknowledged=len(acknowledged),
        losses=0,
        crashed_state="after",
        crashed_notification="lost, recovered from history",
        events=verdict.events,
    )


# -- cleanup and rebuild ------------------------------------------------------------------------


async def test_mid_cleanup_leaves_whole_steps_and_the_retry_expires_the_rest_once(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Killed between two expiry steps: each step's checkpoints are wholly expired and the
    rest wholly there; the retry with the same key expires the rest, each checkpoint once."""
    step = ExpireDue(now=datetime.now(UTC)).limit
    total = step + step // 5  # more than one step's worth
    daemon = start(daemons, "mid-cleanup@1")
    past = datetime.now(UTC) - timedelta(seconds=1)  # already due: no clock to wait on
    key = uuid.uuid4().hex
    acked: dict[str, str] = {}
    async with client_of(daemon) as client:
        for first in range(0, total, 100):
            batch = [
                body(f"due-{n}", retentionExpiresAt=past)
                for n in range(first, min(first + 100, total))
            ]
            acked.update({c.id: c.checksum for c in await client.create_batch(batch)})
        kept = await client.create(body("kept"))  # retention: none, so never due
        lost = await crash_during(
            daemon, client.delete_expired_checkpoints(idempotency_key=key), answered=False
        )
    assert lost is None
    assert len(acked) == total

    expired = expired_events(daemon.db_path)
    assert len(expired) == step, "not a whole number of steps"
    assert len(set(expired)) == len(expired)
    await check_store(daemon.db_path, acked={kept.id: kept.checksum}, deleted=expired)
    events, live, _ = counts(daemon.db_path)
    assert (events, live) == (total + 1 + step, total + 1 - step)
    assert blob_count(daemon.db_path) == live  # an expired checkpoint's bytes are gone too

    daemon = restart(daemons, daemon)
    async with client_of(daemon) as client:
        first_reply = await client.delete_expired_checkpoints(idempotency_key=key)
        second_reply = await client.delete_expired_checkpoints(idempotency_key=key)
    assert first_reply == second_reply == total - step
    assert await asyncio.to_thread(daemon.stop) == 0

    expired = expired_events(daemon.db_path)
    assert sorted(expired) == sorted(acked), "each due checkpoint expired exactly once"
    verdict = await check_store(daemon.db_path, acked={kept.id: kept.checksum}, deleted=expired)
    assert counts(daemon.db_path) == (2 * total + 1, 1, 1)
    figures.update(
        rounds=1,
        operations=total // 100 + 1 + 1 + 3,
        acknowledged=total + 1,
        losses=0,
        crashed_state=f"after step 1 of {-(-total // step)}",
        expired=len(expired),
        events=verdict.events,
    )


def expired_events(db_path: Path) -> list[str]:
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT stream FROM events WHERE type = 'checkpoint.expired'")
        return [row[0] for row in rows]


def blob_count(db_path: Path) -> int:
    with closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute("SELECT count(*) FROM blobs").fetchone()[0])


async def test_mid_rebuild_leaves_the_projections_as_they_were(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Killed in the middle of a rebuild's replay: its fresh views file was never swapped in,
    so every projection is as before; the rebuild run again after the restart writes the same
    rows."""
    daemon = start(daemons, "mid-rebuild@3")
    async with client_of(daemon) as client:
        acked = [await client.create(body(f"cp-{n}")) for n in range(5)]
        await client.update_checkpoint(acked[0].id, {"name": "renamed"})
        lost = await crash_during(daemon, client.rebuild(), answered=False)
    assert lost is None

    before = {c.id: c.checksum for c in acked}
    await check_store(daemon.db_path, acked=before)
    crashed = dump_projections(daemon.db_path)

    daemon = restart(daemons, daemon)
    async with client_of(daemon) as client:
        assert await client.rebuild() == 6
    assert await asyncio.to_thread(daemon.stop) == 0
    assert dump_projections(daemon.db_path) == crashed
    verdict = await check_store(daemon.db_path, acked=before)
    figures.update(
        rounds=1,
        operations=8,
        acknowledged=len(before),
        losses=0,
        crashed_state="before (= after)",
        events=verdict.events,
    )
