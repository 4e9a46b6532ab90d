"""A small HTTP/1.1 server for the daemon's probes and metrics, on ``asyncio.start_server``.

It serves a handful of fixed paths to monitoring systems and orchestrators (``GET`` and
``HEAD``; a query string is ignored), one request per connection (``Connection: close``), and
nothing else: no request bodies, keep-alive, chunked encoding or TLS (bind it to loopback or a
private network; put a proxy in front for more). A web framework would bring far more than this
needs; what it must get right is bad input, which it answers and closes:

- a request line or header line longer than ``MAX_LINE`` bytes: 431; more than ``MAX_HEADERS``
  header lines: 431; a malformed request line or HTTP version: 400;
- a method other than GET/HEAD: 405; an unknown path: 404; a route that fails: 500, logged;
- a client that does not finish its request within ``timeout`` seconds is disconnected (so a
  slow client cannot hold connections open), as is one that never reads the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog

log = structlog.get_logger("checkpointd.http")

MAX_LINE = 8192
MAX_HEADERS = 100
_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, value: Mapping[str, Any]) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode() + b"\n")


Route = Callable[[], Awaitable[Response]]


class _BadRequestError(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpServer:
    """Serves ``routes`` (path to route) on ``host:port``. ``start()``/``stop()``.

    ``port`` 0 takes a free port; ``port`` tells which once started.
    """

    def __init__(
        self, routes: Mapping[str, Route], host: str, port: int, *, timeout: float = 10.0
    ) -> None:
        self._routes = dict(routes)
        self._host, self._port = host, port
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen. Raises OSError when the address cannot be bound (in use, not local)."""
        self._server = await asyncio.start_server(
            self._connection, self._host, self._port, limit=MAX_LINE
        )

    async def stop(self) -> None:
        """Stop listening and end the connections in progress. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            async with asyncio.timeout(self._timeout):
                response, method = await self._respond(reader)
                await _send(writer, response, head_only=method == "HEAD")
        except (TimeoutError, ConnectionError):
            pass  # a client that stalls or goes away gets no more of our time
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._connections.discard(task)

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[Response, str]:
        try:
            method, path = await _read_request(reader)
        except _BadRequestError as bad:
            return _error(bad.status, bad.reason), "GET"
        route = self._routes.get(path)
        if method not in _METHODS:
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served"), "GET"
        if route is None:
            return _error(
                HTTPStatus.NOT_FOUND, f"no such path; try {', '.join(self._routes)}"
            ), method
        try:
            return await route(), method
        except Exception:
            log.exception("HTTP route failed", path=path)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error"), method


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of the request on ``reader`` (its headers read and ignored)."""
    parts = (await _line(reader)).split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise _BadRequestError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequestError(HTTPStatus.BAD_REQUEST, "unsupported HTTP version")
    for _ in range(MAX_HEADERS + 1):
        if not await _line(reader):
            return method, target.split("?", 1)[0]
    raise _BadRequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header lines")


async def _line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _BadRequestError(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "line too long"
        ) from None
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("the client closed the connection mid-request") from None
    try:
        return raw.rstrip(b"\r\n").decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequestError(HTTPStatus.BAD_REQUEST, "not ASCII") from None


def _error(status: HTTPStatus, reason: str) -> Response:
    return Response.json(status, {"error": reason})


async def _send(writer: asyncio.StreamWriter, response: Response, *, head_only: bool) -> None:
    phrase = HTTPStatus(response.status).phrase
    head = (
        f"HTTP/1.1 {response.status} {phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("ascii") + (b"" if head_only else response.body))
    await writer.drain()
