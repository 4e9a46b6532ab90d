"""A small NATS helper shared by the service and the client."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
from nats.aio.client import Client

from checkpointd.errors import UnavailableError

_ATTEMPT = 5
"""Seconds one connection attempt (TCP and the server's INFO) may take."""


async def connect(url: str, *, deadline: float | None, **options: Any) -> Client:
    """A connection to ``url`` (comma-separated servers) made within ``deadline`` seconds.

    It retries (every second) until the deadline, or for as long as it takes with None, and
    once connected it reconnects forever; ``options`` are nats-py's (None values left out).

    Raises:
        UnavailableError: no connection before the deadline (the URL shown without secrets).
    """
    nc = Client()
    try:
        async with asyncio.timeout(deadline):
            await nc.connect(
                servers=url.split(","),
                connect_timeout=max(1, min(int(deadline or _ATTEMPT), _ATTEMPT)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                **{key: value for key, value in options.items() if value is not None},
            )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await nc.close()
        raise UnavailableError(
            f"cannot connect to NATS at {safe_url(url)} within {deadline}s ({type(exc).__name__})"
        ) from None
    except BaseException:  # cancelled: leave no reconnect loop behind
        await nc.close()
        raise
    return nc


async def barrier(nc: Client, wait: float = 10.0) -> None:
    """Return once the server has processed everything this connection sent before the call.

    ``flush()`` is not enough: nats-py writes its PING straight to the socket, ahead of
    subscriptions still in its buffer, so the PONG can come back before the server has them. A
    message to our own inbox travels behind them, in order.
    """
    inbox = nc.new_inbox()
    received = asyncio.get_running_loop().create_future()

    async def arrived(_: object) -> None:
        if not received.done():
            received.set_result(None)

    subscription = await nc.subscribe(inbox, cb=arrived)
    try:
        await nc.publish(inbox, b"")
        async with asyncio.timeout(wait):
            await received
    finally:
        await subscription.unsubscribe()


def safe_url(url: str, *, mask: str | None = None) -> str:
    """``url`` (one or a comma-separated list) without credentials, for logs and messages.

    ``user:password@`` is dropped, or with ``mask`` the password (or a lone token) is replaced
    by it and the user kept. A URL without a scheme is read as nats-py reads it (as
    ``nats://`` + the URL), so ``user:password@host:4222`` carries credentials too.
    """
    parts = []
    for one in url.split(","):
        scheme, sep, rest = one.partition("://")
        if not sep:
            scheme, rest = "", one
        if "@" in rest:
            userinfo, host = rest.rsplit("@", 1)
            if mask is None:
                rest = host
            else:
                user, colon, _ = userinfo.partition(":")
                rest = f"{user}:{mask}@{host}" if colon else f"{mask}@{host}"
        parts.append(f"{scheme}{sep}{rest}")
    return ",".join(parts)
