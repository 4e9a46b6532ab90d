"""The daemon's HTTP endpoints (with ``http.listen`` set): ``/healthz``, ``/readyz``, ``/metrics``.

- ``/healthz``: alive. 200 ``{"status": "alive"}`` whenever the daemon's event loop answers;
  it does not look at the store, so a long views rebuild never gets the daemon restarted.
- ``/readyz``: serving. 200 ``{"status": "ready", "logSeq", "viewsSeq"}`` when the NATS
  service is up, the writer answers (``CheckpointManager.health``) and the views reach the log
  head, each within ``READY_WAIT`` seconds; else 503 ``{"status": "unavailable", "problems":
  [...]}`` (while starting, catching up, stopping, or when the writer has stopped).
- ``/metrics``: the Prometheus text format (``daemon.prometheus``).

They listen from the moment the store is open (before NATS), so an orchestrator sees a daemon
that is alive but not yet ready while its views catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import structlog

from checkpointd.daemon.http import HttpServer, Response
from checkpointd.daemon.prometheus import CONTENT_TYPE, PrometheusExporter
from checkpointd.daemon.service import CheckpointService
from checkpointd.daemon.settings import HttpSettings
from checkpointd.errors import CheckpointError, ConfigError
from checkpointd.manager import CheckpointManager

log = structlog.get_logger("checkpointd.http")
READY_WAIT = 2.0


class Probes:
    """The three routes over one daemon's store, and its service once ``attach``-ed."""

    def __init__(self, manager: CheckpointManager) -> None:
        self._manager = manager
        self.exporter = PrometheusExporter(manager)
        self._service: CheckpointService | None = None

    def attach(self, service: CheckpointService) -> None:
        """The service is serving: count its requests, and be ready."""
        self._service = self.exporter.service = service
        service.metrics.listeners.append(self.exporter.observe)

    def detach(self) -> None:
        """The service is stopping: not ready any more. Idempotent."""
        service, self._service = self._service, None
        self.exporter.service = None
        if service is not None and self.exporter.observe in service.metrics.listeners:
            service.metrics.listeners.remove(self.exporter.observe)

    def routes(self) -> dict[str, Callable[[], Awaitable[Response]]]:
        return {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.metrics}

    async def healthz(self) -> Response:
        return Response.json(200, {"status": "alive", "pid": os.getpid()})

    async def readyz(self) -> Response:
        problems: list[str] = []
        if self._service is None:
            problems.append("the NATS service is not serving (starting or stopping)")
        head = self._manager.log_head
        try:
            async with asyncio.timeout(READY_WAIT):
                head = await self._manager.health()
        except (CheckpointError, TimeoutError) as exc:
            problems.append(f"writer: {_reason(exc)}")
        else:
            try:
                await self._manager.wait_for_views(head, within=READY_WAIT)
            except CheckpointError as exc:
                problems.append(f"views: {exc.message}")
        body = {"logSeq": head, "viewsSeq": self._manager.views_position}
        if problems:
            return Response.json(503, {"status": "unavailable", "problems": problems, **body})
        return Response.json(200, {"status": "ready", **body})

    async def metrics(self) -> Response:
        await self.exporter.refresh()
        return Response(200, self.exporter.render(), CONTENT_TYPE)


async def serve(
    settings: HttpSettings, manager: CheckpointManager, stack: contextlib.AsyncExitStack
) -> Probes | None:
    """Start the HTTP endpoints ``settings.listen`` names (None: none), their stop pushed on
    ``stack``; the probes, to ``attach`` the service to once it serves.

    Raises:
        ConfigError: the address cannot be listened on (in use, not an address of this host).
    """
    if settings.listen is None:
        return None
    host, port = settings.address()
    probes = Probes(manager)
    server = HttpServer(probes.routes(), host, port)
    try:
        await server.start()
    except OSError as exc:
        reason = f"cannot listen there: {exc.strerror or exc}"
        raise ConfigError("http.listen", settings.listen, reason) from None
    stack.push_async_callback(server.stop)
    log.info("HTTP endpoints listening", host=host, port=server.port, paths=list(probes.routes()))
    return probes


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CheckpointError):
        return exc.message
    return f"no answer within {READY_WAIT}s"
