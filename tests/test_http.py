"""The daemon's HTTP endpoints over a real socket: probes, Prometheus metrics, and bad input.

The store is a real CheckpointManager, served on the session's nats-server by a real
CheckpointService for the request metrics; requests are real HTTP/1.1 over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from conftest import OpenManager
from natsserver import NatsServer
from prometheus_client.parser import text_string_to_metric_families

from checkpointd import CheckpointClient, CheckpointManager
from checkpointd.daemon.http import MAX_LINE, HttpServer, Response
from checkpointd.daemon.probes import Probes
from checkpointd.daemon.service import CheckpointService
from checkpointd.daemon.settings import SettingsError, load
from checkpointd.errors import NotFoundError

DEADLINE = 30.0
DASHBOARD = Path(__file__).parent.parent / "config" / "grafana-dashboard.json"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.body)
        return value


async def send(port: int, raw: bytes) -> Reply:
    """Send ``raw`` bytes as the request and read the whole reply (the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("ascii").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def get(port: int, path: str, method: str = "GET") -> Reply:
    return await send(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


@dataclass
class Served:
    manager: CheckpointManager
    probes: Probes
    port: int
    service: CheckpointService
    client: CheckpointClient


@pytest.fixture
async def served_http(open_manager: OpenManager, nats_server: NatsServer) -> AsyncIterator[Served]:
    """A manager with its probes on a free port, and its service (not yet attached)."""
    manager = await open_manager()
    probes = Probes(manager)
    server = HttpServer(probes.routes(), "127.0.0.1", 0)
    await server.start()
    nc = await nats.connect(nats_server.url)
    prefix = "http.checkpoint"
    service = CheckpointService(manager, nc, prefix=prefix, queue_group="http-test")
    await service.start()
    try:
        async with CheckpointClient(nats_server.url, prefix=prefix) as client:
            yield Served(manager, probes, server.port, service, client)
    finally:
        probes.detach()
        await service.stop()
        await nc.close()
        await server.stop()


async def test_healthz_answers_alive_and_readyz_waits_for_the_service(served_http: Served) -> None:
    """/healthz is 200 from the start; /readyz is 503 until the service serves, then 200 with
    the log and views positions, and 503 again once the store is closed."""
    port = served_http.port
    alive = await get(port, "/healthz")
    assert alive.status == 200
    assert alive.json()["status"] == "alive"
    assert alive.headers["content-type"] == "application/json"

    early = await get(port, "/readyz")
    assert early.status == 503
    assert "NATS service" in str(early.json()["problems"])

    served_http.probes.attach(served_http.service)
    await served_http.client.create(name="a", session_id="s", snapshot={}, branches=[])
    ready = await get(port, "/readyz")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "logSeq": 1, "viewsSeq": 1}

    await served_http.manager.close()
    closed = await get(port, "/readyz")
    assert closed.status == 503
    assert "writer" in str(closed.json()["problems"])


def samples(reply: Reply) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text reply, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_requests_by_endpoint_and_code_and_show_the_store(
    served_http: Served,
) -> None:
    """/metrics, in the Prometheus text format, counts requests by endpoint and status code
    with latency histograms, and shows the log head, the views' lag and what is stored."""
    served_http.probes.attach(served_http.service)
    client = served_http.client
    for i in range(2):
        await client.create(name=f"n{i}", session_id="s", snapshot={"i": i}, branches=[])
    with pytest.raises(NotFoundError):
        await client.update_checkpoint("missing", {"name": "x"})

    reply = await get(served_http.port, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(reply)
    assert found[("checkpointd_requests_total", (("code", "200"), ("endpoint", "create")))] == 2
    assert found[("checkpointd_requests_total", (("code", "404"), ("endpoint", "update")))] == 1
    bucket = (
        "checkpointd_request_duration_seconds_bucket",
        (("endpoint", "create"), ("le", "+Inf")),
    )
    assert found[bucket] == 2
    assert found[("checkpointd_log_head_seq", ())] == 2
    assert found[("checkpointd_projection_lag_events", ())] == 0
    assert found[("checkpointd_checkpoints", ())] == 2
    assert found[("checkpointd_snapshot_bytes", (("form", "canonical"),))] > 0
    assert found[("checkpointd_database_bytes", (("file", "log"),))] > 0
    assert found[("checkpointd_notification_backlog", ())] == 0
    assert found[("checkpointd_transfers", (("direction", "upload"),))] == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /healthz HTTP/9.9\r\n\r\n", 400),
        (b"GET /" + b"a" * (MAX_LINE + 10) + b" HTTP/1.1\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 405),
        (b"GET /nothing-here HTTP/1.1\r\n\r\n", 404),
        (b"GET /healthz?verbose=1 HTTP/1.0\n\n", 200),
        (b"GET /readyz HTTP/1.1\r\n\xff\xfe\r\n\r\n", 400),
    ],
)
async def test_bad_requests_get_an_error_status_and_the_server_goes_on(
    served_http: Served, raw: bytes, status: int
) -> None:
    """Malformed, oversized, unknown and unsupported requests are answered with their status
    and a JSON error, and the next request is served as usual."""
    reply = await send(served_http.port, raw)
    assert reply.status == status
    assert reply.json()
    assert (await get(served_http.port, "/healthz")).status == 200


async def test_head_gets_the_headers_without_the_body(served_http: Served) -> None:
    """HEAD answers the status and Content-Length of GET, with no body."""
    reply = await get(served_http.port, "/healthz", method="HEAD")
    assert reply.status == 200
    assert int(reply.headers["content-length"]) > 0
    assert reply.body == b""


async def test_a_stalled_client_is_dropped_and_holds_no_one_up() -> None:
    """A client that never finishes its request does not delay others, and is disconnected."""

    async def ok() -> Response:
        return Response.json(200, {"ok": True})

    server = HttpServer({"/": ok}, "127.0.0.1", 0, timeout=0.5)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\n")  # and never the blank line
        await writer.drain()
        assert (await get(server.port, "/")).status == 200
        async with asyncio.timeout(DEADLINE):
            assert await reader.read() == b""  # closed by the server, without a reply
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()


async def test_the_shipped_grafana_dashboard_queries_only_metrics_the_daemon_serves(
    served_http: Served,
) -> None:
    """Every metric a panel of config/grafana-dashboard.json queries is in /metrics."""
    served_http.probes.attach(served_http.service)
    await served_http.client.create(name="n", session_id="s", snapshot={}, branches=[])
    served = {name for name, _ in samples(await get(served_http.port, "/metrics"))}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"checkpointd_[a-z_]+", target["expr"])
    }
    assert queried
    assert queried <= served, queried - served


def test_http_listen_is_off_by_default_and_a_bare_port_means_loopback(tmp_path: Path) -> None:
    """No ``[http]`` serves no HTTP; a port alone listens on loopback; a bad value is refused
    naming the key and where it came from."""
    assert load(None, environ={}).http.listen is None
    config = tmp_path / "c.toml"
    config.write_text("[http]\nlisten = 9464\n", encoding="utf-8")
    assert load(str(config), environ={}).http.address() == ("127.0.0.1", 9464)
    ipv6 = load(None, environ={"CHECKPOINTD_HTTP_LISTEN": "[::1]:0"})
    assert ipv6.http.address() == ("::1", 0)
    for bad in ("x:y", "host:", "70000", ":9464"):
        with pytest.raises(SettingsError, match=r"CHECKPOINTD_HTTP_LISTEN.*http\.listen"):
            load(None, environ={"CHECKPOINTD_HTTP_LISTEN": bad})
