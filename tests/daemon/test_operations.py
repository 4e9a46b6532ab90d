"""Operating a running daemon: backup while it serves, restore with it stopped, export for an
auditor, and its HTTP endpoints (probes and Prometheus metrics) over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

from natsserver import free_port

from checkpointd import CheckpointClient

from .serving import DEADLINE, Daemon, Daemons, run_cli

WRITERS = 64


@asynccontextmanager
async def client_of(daemon: Daemon) -> AsyncIterator[CheckpointClient]:
    async with CheckpointClient(daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE) as c:
        yield c


def created(path: Path | str) -> dict[str, int]:
    """Checkpoint id to the seq of its create event, read from a log file (read-only)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT stream, seq FROM events WHERE type = 'checkpoint.created'")
        return dict(rows.fetchall())


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of ``GET path`` (an error status is an answer too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def cli(daemon: Daemon, *args: str) -> Any:
    """``checkpointd ARGS --config`` the daemon's config, ``--json``; its parsed output."""
    assert daemon.config is not None
    ran = run_cli(*args, "--config", str(daemon.config), "--json", cwd=daemon.workdir)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


async def test_a_backup_under_64_writers_restores_into_a_daemon_that_serves_it(
    daemons: Daemons, tmp_path: Path
) -> None:
    """``checkpointd backup`` while 64 clients write holds every write acknowledged before it
    and exactly the writes up to the seq it prints; restored (daemon stopped, refused while it
    runs), the next daemon serves exactly those."""
    daemon = daemons.start()
    backed_up = asyncio.Event()
    acknowledged: set[str] = set()
    async with client_of(daemon) as client:

        async def writer(n: int) -> None:
            i = 0
            while not backed_up.is_set() or i < 5:
                cp = await client.create(
                    name=f"w{n}-{i}", session_id=f"s{n}", snapshot={"i": i}, branches=[]
                )
                acknowledged.add(cp.id)
                if len(acknowledged) >= WRITERS:
                    enough.set()
                i += 1

        enough = asyncio.Event()
        writers = [asyncio.ensure_future(writer(n)) for n in range(WRITERS)]
        reached = asyncio.ensure_future(enough.wait())
        done, _ = await asyncio.wait(
            [reached, *writers], timeout=60, return_when=asyncio.FIRST_COMPLETED
        )
        assert reached in done, [w.exception() for w in writers if w.done()] or "no progress"
        before = set(acknowledged)
        made = await asyncio.to_thread(cli, daemon, "backup", str(tmp_path / "b.db"))
        backed_up.set()
        await asyncio.gather(*writers)

    live, copied = created(daemon.db_path), created(made["path"])
    assert before <= set(copied)
    assert set(copied) == {cid for cid, seq in live.items() if seq <= made["seq"]}
    assert len(live) > len(copied)

    refused = run_cli("restore-backup", made["path"], "--config", str(daemon.config), cwd=tmp_path)
    assert refused.returncode == 75
    assert "stop the daemon" in refused.stderr
    assert await asyncio.to_thread(daemon.stop) == 0

    restored = cli(daemon, "restore-backup", made["path"])
    assert restored["seq"] == made["seq"]
    assert restored["replaced"]
    again = daemons.restart(daemon)
    async with client_of(again) as client:
        stats = await client.get_checkpoint_stats()
        some = sorted(copied)[:20]
        got = [await client.get_checkpoint(cid) for cid in some]
        gone = sorted(set(live) - set(copied))[0]
        assert await client.get_checkpoint(gone) is None
    assert stats.total_checkpoints == len(copied)
    assert [cp.id for cp in got if cp is not None] == some


async def test_an_export_of_a_serving_daemon_verifies_offline(
    daemons: Daemons, tmp_path: Path
) -> None:
    """``checkpointd export --snapshots`` beside a running daemon writes JSON Lines that
    ``checkpointd verify --file`` accepts without the database, and rejects once edited."""
    daemon = daemons.start()
    async with client_of(daemon) as client:
        for i in range(3):
            await client.create(name=f"n{i}", session_id="s", snapshot={"i": i}, branches=[])
    export = tmp_path / "audit.jsonl"
    assert daemon.config is not None
    config = ["--config", str(daemon.config)]
    ran = run_cli("export", "--snapshots", "--output", str(export), *config, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["seq"] for line in lines if "type" in line] == [1, 2, 3]
    assert [line["snapshot"]["value"] for line in lines if "snapshot" in line] == [
        {"i": 0},
        {"i": 1},
        {"i": 2},
    ]

    piped = run_cli("export", *config, cwd=tmp_path)  # to stdout, not a terminal: no bar
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    events = [json.loads(line) for line in piped.stdout.splitlines() if '"type"' in line]
    assert events == [line for line in lines if "type" in line]

    # The auditor has the file alone: no config, no database.
    checked = run_cli("verify", "--file", str(export), "--json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["events"] == 3

    export.write_text(export.read_text().replace('"n1"', '"n9"'))
    failed = run_cli("verify", "--file", str(export), "--json", cwd=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["firstBadSeq"] == 2


async def test_http_endpoints_of_a_running_daemon(daemons: Daemons) -> None:
    """With ``http.listen`` set, the daemon answers /healthz and /readyz with JSON and /metrics
    in the Prometheus text format, counting the requests it served."""
    port = free_port()
    daemon = daemons.start({"http": {"listen": str(port)}})  # a port alone: loopback
    async with client_of(daemon) as client:
        await client.create(name="n", session_id="s", snapshot={}, branches=[])

    status, kind, body = await asyncio.to_thread(http_get, port, "/healthz")
    assert (status, kind, json.loads(body)["status"]) == (200, "application/json", "alive")
    status, _, body = await asyncio.to_thread(http_get, port, "/readyz")
    assert status == 200
    assert json.loads(body) == {"status": "ready", "logSeq": 1, "viewsSeq": 1}
    status, kind, body = await asyncio.to_thread(http_get, port, "/metrics")
    assert status == 200
    assert kind.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'checkpointd_requests_total{code="200",endpoint="create"} 1.0' in text
    assert "checkpointd_log_head_seq 1.0" in text
    status, _, _ = await asyncio.to_thread(http_get, port, "/nothing")
    assert status == 404
    listening = [r for r in daemon.logs() if r.get("event") == "HTTP endpoints listening"]
    assert listening[0]["host"] == "127.0.0.1"


def test_an_http_address_in_use_stops_the_start_with_78(daemons: Daemons) -> None:
    """A daemon that cannot listen where ``http.listen`` says exits 78 naming the setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemons.start({"http": {"listen": f"127.0.0.1:{port}"}}, ready=False)
        assert daemon.wait() == 78
    assert "http.listen" in daemon.stderr()
    assert "cannot listen there" in daemon.stderr()
