"""SIGKILL the daemon during 64-way concurrent creates: nothing acknowledged is ever lost.

Each round, 64 writers in this process create checkpoints through ``CheckpointClient`` against a
``checkpointd serve`` process: snapshots of 4-256 KB, random sizes, half of them random text
that does not compress (so the blob is as big as the snapshot), half encrypted. Every create
carries an idempotency key (its ``Nats-Msg-Id``) and goes into a ledger with the checksum of
what was sent; the reply, once it arrives, makes it acknowledged.

The kill moment: a random number of acknowledgements into the round, then a random delay of a
few milliseconds (both from a seed printed with the test and kept in its figures; set
``FAULTS_SEED`` to replay one). After the kill, on the database no process has open:

- the oracle (``check_store``) with every create ever acknowledged;
- every unacknowledged create (sent, no reply) is wholly present (its idempotency key, its
  checkpoint with the checksum of what was sent, the create event behind both) or wholly absent;
- after ``daemons.restart``, each is sent again with its own key: the reply names the checkpoint
  already there, or creates it; either way one checkpoint per request (checked at the next
  oracle, and at the end: as many checkpoints as requests).

Then the next round starts on the same state directory.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon.serving import DEADLINE, Daemon, Daemons, children_of

from checkpointd import CheckpointClient
from checkpointd.errors import UnavailableError
from checkpointd.models import Checkpoint
from checkpointd.snapshots.canonical import canonical_encode, checksum

from .oracle import check_store, log_and_views, wait_for_children

WORKERS = 64
KEY = "0123456789abcdef" * 4  # 64 hex digits: a raw AES-256 key
MIN_SIZE, MAX_SIZE = 4 * 1024, 256 * 1024
PER_WORKER = 500  # a bound on one writer's creates per round; a round ends far sooner
ACKS_BEFORE_KILL = (8, 96)  # the kill comes this many acknowledgements into a round...
DELAY_AFTER = (0.0, 0.03)  # ...and then this many seconds later


def seed() -> int:
    """The run's seed: ``FAULTS_SEED`` if set, else a fresh one (printed; in the figures)."""
    given = os.environ.get("FAULTS_SEED")
    value = int(given) if given else random.SystemRandom().randrange(2**32)
    print(f"FAULTS_SEED={value}")
    return value


@dataclass
class Sent:
    """One create request: its key, its body, the checksum of its snapshot, and the reply."""

    key: str
    round: int
    body: dict[str, Any]
    checksum: str
    reply: Checkpoint | None = None

    @property
    def name(self) -> str:
        return str(self.body["name"])


@dataclass
class Ledger:
    """Every create sent, by idempotency key, and the round's running figures."""

    sent: dict[str, Sent] = field(default_factory=dict)
    acks_this_round: int = 0
    acks_under_load: int = 0
    present: int = 0
    absent: int = 0
    retried: int = 0

    def acked(self) -> dict[str, str]:
        return {s.reply.id: s.reply.checksum for s in self.sent.values() if s.reply is not None}

    def unacknowledged(self) -> list[Sent]:
        return [s for s in self.sent.values() if s.reply is None]


def request(rng: random.Random, round_: int, worker: int, n: int) -> Sent:
    """A create of a 4-256 KB snapshot: random text half the time, repetitive otherwise."""
    size = rng.randint(MIN_SIZE, MAX_SIZE)
    if rng.random() < 0.5:
        text = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    else:
        text = (f"round {round_} worker {worker} step {n}; " * (size // 24 + 1))[:size]
    snapshot = {
        "sessions": [f"k{worker % 8}"],
        "state": {"round": round_, "worker": worker, "n": n, "text": text},
    }
    body = {
        "name": f"r{round_}-w{worker}-{n}",
        "sessionId": f"k{worker % 8}",
        "snapshot": snapshot,
        "branches": ["main"],
        "metadata": {"feature": f"f{worker % 3}", "tags": ["sigkill", f"round-{round_}"]},
        "encrypted": rng.random() < 0.5,
    }
    return Sent(uuid.uuid4().hex, round_, body, checksum(canonical_encode(snapshot)))


@dataclass
class Round:
    """One round's load: the writers, until the daemon is killed under them."""

    client: CheckpointClient
    ledger: Ledger
    number: int
    seed: int
    kill_after: int
    killed: bool = False
    failures: list[BaseException] = field(default_factory=list)
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    async def writer(self, worker: int) -> None:
        rng = random.Random(f"{self.seed}-{self.number}-{worker}")
        for n in range(PER_WORKER):
            sent = request(rng, self.number, worker, n)
            self.ledger.sent[sent.key] = sent
            try:
                reply = await self.client.create(sent.body, idempotency_key=sent.key)
            except UnavailableError as exc:
                if not self.killed:  # refused while the daemon was up: a failure
                    self.failures.append(exc)
                    self.enough.set()
                return
            assert reply.checksum == sent.checksum, (sent.name, reply.checksum, sent.checksum)
            assert reply.name == sent.name
            sent.reply = reply
            self.ledger.acks_this_round += 1
            self.ledger.acks_under_load += 1
            if self.ledger.acks_this_round >= self.kill_after:
                self.enough.set()
        self.enough.set()  # ran out of work: the kill comes now


async def load_and_kill(daemon: Daemon, round_: Round, delay: float) -> None:
    """Run the writers; SIGKILL the daemon ``delay`` seconds after the round's target ack."""
    writers = [asyncio.create_task(round_.writer(w)) for w in range(WORKERS)]
    try:
        async with asyncio.timeout(DEADLINE):
            await round_.enough.wait()
        assert not round_.failures, round_.failures

        children: dict[int, str] = {}

        def kill() -> None:
            round_.killed = True
            children.update(children_of(daemon.pid))  # its projector, restarted or not
            daemon.send(signal.SIGKILL)

        # Not a wait for anything: the kill is scheduled at a random moment after the ack.
        asyncio.get_running_loop().call_later(delay, kill)
        code = await asyncio.to_thread(daemon.wait)
        assert code == -signal.SIGKILL, daemon.diagnostics()
        await asyncio.to_thread(wait_for_children, children)
    finally:
        # Whatever was sent and not answered by now is unacknowledged: stop waiting for it.
        for task in writers:
            task.cancel()
        results = await asyncio.gather(*writers, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    errors = [e for e in errors if not isinstance(e, asyncio.CancelledError)]
    assert not errors, errors


def classify(db_path: Path, ledger: Ledger) -> dict[str, tuple[str, str]]:
    """Each unacknowledged create wholly present or wholly absent; the present ones by key.

    Present: its idempotency key is recorded, pointing at a create event for a checkpoint of
    its name and the checksum of what was sent. Absent: none of these.
    """
    found: dict[str, tuple[str, str]] = {}
    with closing(log_and_views(db_path)) as conn:
        for sent in ledger.unacknowledged():
            rows = conn.execute(
                "SELECT id, checksum, seq FROM checkpoints WHERE name = ?", (sent.name,)
            ).fetchall()
            keyed = conn.execute(
                "SELECT e.stream, e.type FROM idempotency i JOIN events e ON e.seq = i.seq"
                " WHERE i.key = ?",
                (sent.key,),
            ).fetchall()
            assert len(rows) <= 1, f"{sent.name}: {len(rows)} checkpoints"
            if not rows:
                assert keyed == [], f"{sent.name}: key recorded, checkpoint missing: {keyed}"
                ledger.absent += 1
                continue
            ((checkpoint_id, stored, _),) = rows
            assert keyed == [(checkpoint_id, "checkpoint.created")], (sent.name, keyed)
            assert stored == sent.checksum, f"{sent.name}: {stored} is not what was sent"
            found[sent.key] = (checkpoint_id, stored)
            ledger.present += 1
    return found


def one_per_request(db_path: Path) -> int:
    """The number of checkpoints, having checked that no request made two."""
    with closing(log_and_views(db_path)) as conn:
        doubles = conn.execute(
            "SELECT name, count(*) FROM checkpoints GROUP BY name HAVING count(*) > 1"
        ).fetchall()
        assert doubles == [], f"requests that made more than one checkpoint: {doubles[:10]}"
        return int(conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0])


def lost(db_path: Path, acked: dict[str, str]) -> list[str]:
    with closing(log_and_views(db_path)) as conn:
        stored = dict(conn.execute("SELECT id, checksum FROM checkpoints"))
    return [i for i, c in acked.items() if stored.get(i) != c]


async def retry(
    client: CheckpointClient, ledger: Ledger, found: dict[str, tuple[str, str]]
) -> None:
    """Send every unacknowledged create again with its own key: one checkpoint each."""
    pending = ledger.unacknowledged()
    replies = await asyncio.gather(*(client.create(s.body, idempotency_key=s.key) for s in pending))
    for sent, reply in zip(pending, replies, strict=True):
        if sent.key in found:  # it was committed before the kill: the same checkpoint back
            assert (reply.id, reply.checksum) == found[sent.key], sent.name
        assert reply.checksum == sent.checksum, sent.name
        sent.reply = reply
    ledger.retried += len(pending)


async def run_rounds(daemons: Daemons, rounds: int, figures: dict[str, Any]) -> None:
    run_seed = seed()
    figures["seed"] = run_seed
    ledger = Ledger()
    losses = 0
    # A key without enable_encryption: each create chooses (enable_encryption refuses plaintext).
    daemon = daemons.start({}, env={"CHECKPOINTD_ENCRYPTION_KEY": KEY})
    for number in range(1, rounds + 1):
        rng = random.Random(f"{run_seed}-{number}")
        kill_after, delay = rng.randint(*ACKS_BEFORE_KILL), rng.uniform(*DELAY_AFTER)
        print(f"round {number}: kill {delay * 1000:.1f} ms after ack {kill_after}")
        ledger.acks_this_round = 0
        async with CheckpointClient(
            daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE, retries=0
        ) as client:
            await load_and_kill(daemon, Round(client, ledger, number, run_seed, kill_after), delay)

        # The oracle first: it sees the views as the kill left them, then catches them up.
        await check_store(daemon.db_path, acked=ledger.acked(), encryption_key=KEY)
        missing = lost(daemon.db_path, ledger.acked())
        losses += len(missing)
        assert missing == [], f"round {number}: acknowledged creates lost: {missing[:10]}"
        one_per_request(daemon.db_path)
        found = classify(daemon.db_path, ledger)

        daemon = daemons.restart(daemon)
        async with CheckpointClient(
            daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE
        ) as client:
            await retry(client, ledger, found)
            if number == rounds:  # the last retries acknowledged: all of them on a clean stop
                assert await asyncio.to_thread(daemon.stop) == 0, daemon.diagnostics()

    verdict = await check_store(daemon.db_path, acked=ledger.acked(), encryption_key=KEY)
    assert one_per_request(daemon.db_path) == len(ledger.sent) == verdict.checkpoints
    figures.update(
        rounds=rounds,
        operations=len(ledger.sent) + ledger.retried,
        acknowledged=ledger.acks_under_load,
        losses=losses,
        unacknowledged_present=ledger.present,
        unacknowledged_absent=ledger.absent,
        retried=ledger.retried,
        checkpoints=verdict.checkpoints,
        events=verdict.events,
    )


@pytest.mark.parametrize("rounds", [3, pytest.param(25, marks=pytest.mark.slow)])
async def test_sigkill_of_the_daemon_loses_no_acknowledged_create(
    daemons: Daemons, figures: dict[str, Any], rounds: int
) -> None:
    """Killed at random moments under 64 concurrent creates, round after round on one state
    directory: every acknowledged create survives, every other one is all there or not at
    all, and its retry with the same key makes exactly one checkpoint."""
    await run_rounds(daemons, rounds, figures)
