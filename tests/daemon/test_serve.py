"""``checkpointd serve`` as a process: served, restarted, stopped under load, killed, watched.

Each test starts the real command (``python -m checkpointd serve --config FILE``) with a
systemd-style notify socket and talks to it the way its users do: ``CheckpointClient``, raw
nats-py, the notify datagrams, its stderr, its database file once it has stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from natsserver import NatsServer, free_port, start_nats_server, subscribed

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.errors import NotFoundError, UnavailableError

from .serving import DEADLINE, Daemon, Daemons, port_is_closed, run_cli, wait_gone

MAIN = ["main"]
KEY = "00112233445566778899aabbccddeeff" * 2  # 64 hex digits: a raw key, no KDF

# Where the daemon's NATS comes from: the session's nats-server, or its own embedded one.
SERVERS = [
    pytest.param(lambda: {}, id="nats-url"),
    pytest.param(lambda: {"nats": {"embedded_port": free_port()}}, id="embedded"),
]
Settings = Callable[[], dict[str, Any]]


def start(daemons: Daemons, settings: dict[str, Any], **options: Any) -> Daemon:
    """A daemon on the session's server, or on its embedded one when the settings say so."""
    embedded = "embedded_port" in settings.get("nats", {})
    return daemons.start(settings, nats_url=None if embedded else True, **options)


@asynccontextmanager
async def client_of(daemon: Daemon, **options: Any) -> AsyncIterator[CheckpointClient]:
    options.setdefault("request_timeout", DEADLINE)
    async with CheckpointClient(daemon.url, prefix=daemon.prefix, **options) as client:
        yield client


def snapshot(step: int) -> dict[str, Any]:
    return {"sessions": ["s"], "state": {"step": step, "notes": f"step {step} done"}}


async def stop(daemon: Daemon, sig: signal.Signals = signal.SIGTERM) -> int:
    """Signal the daemon and wait for its exit off the event loop (clients keep running)."""
    return await asyncio.to_thread(daemon.stop, sig)


# -- serving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", SERVERS)
async def test_a_client_round_trips_through_the_served_daemon(
    daemons: Daemons, settings: Settings
) -> None:
    """Create, get, search and restore through CheckpointClient answer as the API promises."""
    daemon = start(daemons, settings())
    async with client_of(daemon) as client:
        first = await client.create(
            name="alpha milestone", session_id="s1", snapshot=snapshot(1), branches=MAIN
        )
        second = await client.create(
            name="beta",
            session_id="s1",
            snapshot=snapshot(2),
            branches=MAIN,
        )
        got = await client.get_checkpoint(first.id)
        found = await client.search_checkpoints("milestone", 10)
        restored = await client.restore_checkpoint(first.id, dry_run=True)
        page = await client.get_checkpoints_by_session("s1")

    assert got is not None
    assert (got.id, got.name, got.snapshot) == (first.id, "alpha milestone", snapshot(1))
    assert [c.id for c in found.items] == [first.id]
    assert restored.success
    assert restored.state == snapshot(1)
    assert {c.id for c in page.items} == {first.id, second.id}


async def test_a_raw_json_create_is_answered_in_json(daemons: Daemons) -> None:
    """A plain nats-py request on <prefix>.create with a JSON body gets a JSON checkpoint back."""
    daemon = daemons.start()
    request = {
        "name": "raw",
        "sessionId": "raw-session",
        "snapshot": snapshot(7),
        "branches": MAIN,
    }
    nc = await nats.connect(daemon.url)
    try:
        reply = await nc.request(
            f"{daemon.prefix}.create", json.dumps(request).encode(), timeout=DEADLINE
        )
    finally:
        await nc.close()

    assert (reply.headers or {}).get("Content-Type") == "application/json"
    created = json.loads(reply.data)
    assert (created["name"], created["sessionId"], created["version"]) == ("raw", "raw-session", 1)
    async with client_of(daemon) as client:
        stored = await client.get_checkpoint(created["id"])
    assert stored is not None
    assert stored.snapshot == snapshot(7)


async def test_the_embedded_server_answers_srv_ping_and_stops_with_the_daemon(
    daemons: Daemons,
) -> None:
    """With no NATS URL the daemon serves on its own nats-server, which exits with it."""
    port = free_port()
    daemon = daemons.start({"nats": {"embedded_port": port}}, nats_url=None)
    assert daemon.url == f"nats://127.0.0.1:{port}"
    server_pid = daemon.embedded_nats_pid()
    nc = await nats.connect(daemon.url)
    try:
        pong = json.loads((await nc.request("$SRV.PING.checkpointd", b"", timeout=DEADLINE)).data)
    finally:
        await nc.close()
    assert pong["name"] == "checkpointd"
    assert pong["type"] == "io.nats.micro.v1.ping_response"

    assert await stop(daemon) == 0
    assert wait_gone(server_pid)
    assert port_is_closed(port)
    assert (daemon.state / "nats" / "nats-server.conf").is_file()  # under the state directory
    assert not (daemon.state / "nats" / "jetstream").exists()  # JetStream off: nothing stored


@pytest.mark.parametrize("settings", SERVERS)
async def test_a_restarted_daemon_finds_the_data(daemons: Daemons, settings: Settings) -> None:
    """What a daemon acknowledged is served by the next one on the same state directory."""
    daemon = start(daemons, settings())
    async with client_of(daemon) as client:
        created = [
            await client.create(
                name=f"kept {i}", session_id="restart", snapshot=snapshot(i), branches=MAIN
            )
            for i in range(3)
        ]
    assert await stop(daemon) == 0

    again = daemons.restart(daemon)
    async with client_of(again) as client:
        stored = [await client.get_checkpoint(c.id) for c in created]
        found = await client.search_checkpoints("kept", 10)
        history = await client.history(session_id="restart")
        verified = await client.verify_log()
    assert [(c.id, c.snapshot) for c in stored if c] == [
        (c.id, snapshot(i)) for i, c in enumerate(created)
    ]
    assert {c.id for c in found.items} == {c.id for c in created}
    assert [e.type for e in history.events] == ["checkpoint.created"] * 3
    assert verified.ok


async def test_flags_and_the_environment_alone_configure_serve(
    daemons: Daemons, nats_server: NatsServer, tmp_path: Path
) -> None:
    """serve --db --nats-url, with STATE_DIRECTORY and CHECKPOINTD_*, needs no config file."""
    prefix = f"t{uuid.uuid4().hex[:12]}.bare"
    state, database = tmp_path / "var-lib", tmp_path / "elsewhere" / "flagged.db"
    env = {"STATE_DIRECTORY": str(state), "CHECKPOINTD_NATS_SUBJECT_PREFIX": prefix}
    args = ["--db", str(database), "--nats-url", nats_server.url]
    daemon = daemons.start_bare(args, env, prefix=prefix, state=state)
    async with client_of(daemon) as client:
        created = await client.create(name="bare", session_id="b", snapshot={}, branches=MAIN)
    assert await stop(daemon) == 0

    async with CheckpointManager(database_path=str(database)) as manager:
        assert await manager.get_checkpoint(created.id) is not None
    assert not (state / "checkpointd.db").exists()


async def test_the_daemon_serves_again_after_its_nats_server_restarts(daemons: Daemons) -> None:
    """A NATS server that goes away and comes back: the daemon reconnects and serves on."""
    server = start_nats_server()
    try:
        daemon = daemons.start(nats_url=server.url)
        async with client_of(daemon) as client:
            before = await client.create(name="before", session_id="r", snapshot={}, branches=MAIN)
        server.stop()
        daemon.notify.expect("STATUS=NATS disconnected; reconnecting", daemon.process)
        server = start_nats_server(port=server.port)
        # Sent once the server has the daemon's subscriptions again (expect's deadline bounds it).
        daemon.notify.expect(f"STATUS=serving on {server.url} (reconnected)", daemon.process)
        async with client_of(daemon) as client:
            assert await client.get_checkpoint(before.id) is not None
            await client.create(name="after", session_id="r", snapshot={}, branches=MAIN)
        assert await stop(daemon) == 0
    finally:
        server.stop()


# -- stopping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
async def test_a_stop_signal_under_load_exits_0_and_loses_no_acknowledged_write(
    daemons: Daemons, sig: signal.Signals
) -> None:
    """Stopped during 64 concurrent creates, the daemon exits 0, kept every create it answered
    and published each one's notification before it left."""
    daemon = daemons.start()
    acknowledged: dict[str, dict[str, Any]] = {}
    notified: set[str] = set()
    refused: list[str] = []
    enough = asyncio.Event()

    async def writer(client: CheckpointClient, n: int) -> None:
        for i in range(100_000):
            body = {"writer": n, "i": i, "state": {"n": n, "i": i}}
            try:
                created = await client.create(
                    name=f"w{n}-{i}", session_id=f"w{n}", snapshot=body, branches=MAIN
                )
            except UnavailableError as exc:  # the daemon has stopped taking requests
                refused.append(exc.message)
                return
            acknowledged[created.id] = body
            if len(acknowledged) >= 256:
                enough.set()

    listener = await nats.connect(daemon.url)
    # Short waits: a request the stopping daemon dropped unanswered is simply not acknowledged.
    async with (
        subscribed(listener, f"{daemon.prefix}.events.created.>") as created_events,
        client_of(daemon, request_timeout=10, retries=1) as client,
    ):
        writers = [asyncio.create_task(writer(client, n)) for n in range(64)]
        async with asyncio.timeout(DEADLINE):
            await enough.wait()
        code = await stop(daemon, sig)
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*writers)
        # The daemon flushed its connection before exiting, so the server has routed every
        # notification to us already; a round trip of our own brings them all in.
        await listener.flush()
        while created_events.pending_msgs:
            message = await created_events.next_msg(timeout=DEADLINE)
            notified.add(json.loads(message.data)["checkpointId"])
    await listener.close()

    assert code == 0, daemon.diagnostics()
    states = daemon.notify.states()
    assert "READY=1" in states
    assert "STOPPING=1" in states[states.index("READY=1") :]
    assert len(refused) == 64  # every writer ran until the daemon refused it
    assert set(acknowledged) <= notified
    async with CheckpointManager(database_path=str(daemon.db_path)) as manager:
        for checkpoint_id, body in acknowledged.items():
            stored = await manager.get_checkpoint(checkpoint_id)
            assert stored is not None, f"acknowledged {checkpoint_id} was lost"
            assert stored.snapshot == body
        assert (await manager.verify_log()).ok
        total = (await manager.get_checkpoint_stats()).total_checkpoints
    assert total >= len(acknowledged)
    assert len(notified) == total  # a notification for each create committed, answered or not


async def test_requests_already_delivered_are_answered_when_the_daemon_stops(
    daemons: Daemons,
) -> None:
    """A stop drains: requests the daemon had received are answered, none left to time out.

    With max_inflight 1, 64 concurrent callers keep requests queued inside the daemon, so the
    stop always finds some; a caller whose request was dropped would wait for its timeout
    ("no reply"), where one that came too late is refused at once ("no ... service answers").
    """
    daemon = daemons.start({"max_inflight": 1})
    outcomes: list[str] = []
    enough = asyncio.Event()

    async def caller(client: CheckpointClient, n: int) -> None:
        for i in range(100_000):
            try:
                await client.create(
                    name=f"q{n}-{i}", session_id=f"q{n}", snapshot=snapshot(i), branches=MAIN
                )
            except UnavailableError as exc:
                outcomes.append(exc.message)
                return
            if i == 2:
                enough.set()

    # No retries: a dropped request shows as its own timeout, not as a retry's refusal.
    async with client_of(daemon, request_timeout=15, retries=0) as client:
        callers = [asyncio.create_task(caller(client, n)) for n in range(64)]
        async with asyncio.timeout(DEADLINE):
            await enough.wait()
        assert await stop(daemon) == 0
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*callers)

    dropped = [message for message in outcomes if "no reply" in message]
    assert dropped == [], f"{len(dropped)} of 64 requests went unanswered at the stop"


def test_a_stop_while_nats_is_away_still_exits_0(daemons: Daemons) -> None:
    """SIGTERM while the daemon's NATS server is down: nothing to drain, a clean exit 0."""
    server = start_nats_server()
    try:
        daemon = daemons.start(nats_url=server.url)
    finally:
        server.stop()

    assert daemon.stop() == 0, daemon.diagnostics()
    assert "STOPPING=1" in daemon.notify.states()


def test_a_stop_while_still_connecting_to_nats_exits_0(daemons: Daemons) -> None:
    """SIGTERM before READY, while connecting, is a stop that was asked for: exit 0, not 69.

    The "server" accepts the connection and never speaks, so the daemon is certainly inside
    its connect (within a connect_timeout of 20 s) when the signal comes.
    """
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(DEADLINE)
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        daemon = daemons.start({"nats": {"url": url, "connect_timeout": 20.0}}, ready=False)
        connection, _ = silent.accept()
        with connection:
            daemon.send(signal.SIGTERM)
            code = daemon.wait()

    assert code == 0, daemon.diagnostics()
    assert "READY=1" not in daemon.notify.states()


async def test_a_second_daemon_on_the_same_database_exits_75_naming_the_holder(
    daemons: Daemons,
) -> None:
    """The database's lock turns a second daemon away (75) with the first one's pid."""
    first = daemons.start()
    second = daemons.start({"database_path": str(first.db_path)}, ready=False)

    assert second.wait() == 75
    assert f"pid {first.pid}" in second.stderr()
    assert "READY=1" not in second.notify.states()
    async with client_of(first) as client:  # the first one serves on, undisturbed
        assert await client.health() >= 0


async def test_a_killed_daemon_takes_its_embedded_server_along_and_recovers_on_restart(
    daemons: Daemons,
) -> None:
    """SIGKILL leaves no nats-server behind (parent-death signal); the data survives the crash."""
    daemon = daemons.start({"nats": {"embedded_port": 0}}, nats_url=None)
    server_pid = daemon.embedded_nats_pid()
    port = int(daemon.url.rsplit(":", 1)[1])
    async with client_of(daemon) as client:
        created = await client.create(
            name="before the crash", session_id="k", snapshot=snapshot(1), branches=MAIN
        )

    assert await stop(daemon, signal.SIGKILL) == -signal.SIGKILL
    assert wait_gone(server_pid), f"nats-server {server_pid} outlived its killed daemon"
    assert port_is_closed(port)

    again = daemons.restart(daemon)
    async with client_of(again) as client:
        stored = await client.get_checkpoint(created.id)
        assert (await client.verify_log()).ok
    assert stored is not None
    assert stored.snapshot == snapshot(1)


async def test_the_daemon_exits_69_when_its_embedded_server_dies(daemons: Daemons) -> None:
    """The embedded nats-server is part of the daemon: when it is killed the daemon stops (69)."""
    daemon = daemons.start({"nats": {"embedded_port": 0}}, nats_url=None)
    server_pid = daemon.embedded_nats_pid()
    os.kill(server_pid, signal.SIGKILL)
    assert await asyncio.to_thread(daemon.wait) == 69, daemon.diagnostics()


# -- systemd ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrapper",
    [
        pytest.param((), id="no-WATCHDOG_PID"),
        # sh execs the daemon, so $$ is the daemon's own pid: WATCHDOG_PID names it.
        pytest.param(("sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"), id="WATCHDOG_PID-is-it"),
    ],
)
def test_watchdog_pings_arrive_when_systemd_asks_for_them(
    daemons: Daemons, wrapper: tuple[str, ...]
) -> None:
    """With WATCHDOG_USEC set (and WATCHDOG_PID unset or the daemon's), WATCHDOG=1 keeps coming."""
    daemon = daemons.start(env={"WATCHDOG_USEC": "400000"}, wrapper=wrapper)
    for _ in range(2):
        assert daemon.notify.expect("WATCHDOG=1", daemon.process)
    assert daemon.stop() == 0
    states = daemon.notify.states()
    assert states.index("READY=1") < states.index("WATCHDOG=1") < states.index("STOPPING=1")


# -- background loops ---------------------------------------------------------------------------


async def test_metrics_are_published_and_count_the_creates(daemons: Daemons) -> None:
    """With enable_metrics the daemon publishes JSON figures on <prefix>.metrics on its own."""
    daemon = daemons.start({"enable_metrics": True, "metrics_interval": 0.5})
    nc = await nats.connect(daemon.url)
    try:
        metrics = await nc.subscribe(f"{daemon.prefix}.metrics")
        await nc.flush()
        async with client_of(daemon) as client:
            for i in range(5):
                await client.create(
                    name=f"m{i}", session_id="metrics", snapshot=snapshot(i), branches=MAIN
                )
        creates = 0
        async with asyncio.timeout(DEADLINE):
            while True:
                document = json.loads((await metrics.next_msg(timeout=DEADLINE)).data)
                creates += document["requests"]["byEndpoint"].get("create", {}).get("count", 0)
                if creates >= 5 and document["checkpoints"]["total"] >= 5:
                    break
    finally:
        await nc.close()

    assert creates == 5
    assert document["checkpoints"]["total"] == 5
    assert document["checkpoints"]["sessions"] == 1
    assert document["requests"]["total"] >= 5
    assert document["requests"]["errors"] == 0
    assert document["events"]["lastSeq"] >= 5
    assert document["database"]["bytes"] > 0


async def test_the_cleanup_loop_expires_checkpoints_without_being_asked(daemons: Daemons) -> None:
    """A checkpoint past its retention (fractional days) is expired by the loop on its own."""
    # 0.00001 days is 0.864 s: every checkpoint without a date of its own expires that soon.
    daemon = daemons.start({"default_retention_days": 0.00001, "cleanup_interval": 0.2})
    async with (
        client_of(daemon) as client,
        client.notifications("expired", "retention") as expired,
    ):
        short = await client.create(
            name="short", session_id="retention", snapshot=snapshot(1), branches=MAIN
        )
        kept = await client.create(
            name="kept",
            session_id="retention",
            snapshot=snapshot(2),
            branches=MAIN,
            retention_expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        async with asyncio.timeout(DEADLINE):
            notification = await anext(expired)
        assert notification.checkpoint_id == short.id
        assert await client.get_checkpoint(short.id) is None
        assert await client.get_checkpoint(kept.id) is not None


# -- logs and secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param("nats://alice:url-pa55w0rd@", id="url"),
        # nats-py reads a URL without a scheme as nats:// + it, credentials and all.
        pytest.param("alice:url-pa55w0rd@", id="url-without-scheme"),
    ],
)
async def test_logs_are_json_lines_without_any_secret(daemons: Daemons, credentials: str) -> None:
    """Off a terminal every stderr line is JSON, even at debug level; no secret shows anywhere.

    Secrets: the encryption key (from CHECKPOINTD_ENCRYPTION_KEY) and the password in the NATS
    URL (the session's server has no authentication, so it accepts any).
    """
    env = {"CHECKPOINTD_ENCRYPTION_KEY": KEY}
    assert daemons.nats_url is not None
    url = daemons.nats_url.replace("nats://", credentials)
    settings = {"enable_encryption": True, "log_level": "debug", "nats": {"url": url}}
    daemon = daemons.start(settings, env=env, args=["--log-format", "auto"])
    async with client_of(daemon) as client:
        created = await client.create(
            name="sealed", session_id="secret", snapshot=snapshot(1), branches=MAIN
        )
        stored = await client.get_checkpoint(created.id)
        with pytest.raises(NotFoundError, match="no-such-checkpoint"):
            await client.restore_checkpoint("no-such-checkpoint")
    assert await stop(daemon) == 0

    assert stored is not None
    assert stored.encrypted
    records = daemon.logs()
    assert {"serving", "stopped"} <= {r.get("event") for r in records}
    assert all({"event", "level", "timestamp"} <= set(r) for r in records)
    secrets = (KEY.encode(), bytes.fromhex(KEY), b"url-pa55w0rd")
    written = [p for p in daemon.workdir.rglob("*") if p.is_file() and p != daemon.config]
    for path in written:  # its stderr, the database, the embedded server's files
        data = path.read_bytes()
        assert not any(secret in data for secret in secrets), path
    assert not any(secret.decode("latin-1") in "".join(daemon.notify.seen) for secret in secrets)

    assert daemon.config is not None
    for show in (["config", "show"], ["config", "show", "--json"]):
        shown = run_cli(*show, "--config", str(daemon.config), cwd=daemon.workdir, env=env)
        assert shown.returncode == 0, shown.stderr
        assert KEY not in shown.stdout + shown.stderr
        assert "***" in shown.stdout


# -- cannot start -------------------------------------------------------------------------------


def test_an_unreachable_nats_server_exits_69_naming_it(daemons: Daemons) -> None:
    """No NATS at the configured URL: exit 69, the URL in the message, never READY."""
    url = f"nats://127.0.0.1:{free_port()}"
    daemon = daemons.start({"nats": {"url": url, "connect_timeout": 1.0}}, ready=False)

    assert daemon.wait() == 69
    assert url in daemon.stderr()
    assert "READY=1" not in daemon.notify.states()


def test_an_embedded_port_in_use_exits_69(daemons: Daemons, nats_server: NatsServer) -> None:
    """The embedded server cannot listen on a taken port: exit 69 with its reason, never READY."""
    settings = {"nats": {"embedded_port": nats_server.port}}
    daemon = daemons.start(settings, nats_url=None, ready=False)

    assert daemon.wait() == 69
    assert "address already in use" in daemon.stderr()
    assert "READY=1" not in daemon.notify.states()


def test_an_unusable_state_directory_exits_78_with_a_logged_reason(
    daemons: Daemons, tmp_path: Path
) -> None:
    """A state directory that cannot be created: exit 78, one JSON log line naming it, no READY."""
    (tmp_path / "plain-file").write_text("")
    state = tmp_path / "plain-file" / "state"
    daemon = daemons.start({"state_directory": str(state)}, ready=False)

    assert daemon.wait() == 78, daemon.diagnostics()
    assert "Traceback" not in daemon.stderr()
    assert any(str(state) in json.dumps(record) for record in daemon.logs())
    assert "READY=1" not in daemon.notify.states()
