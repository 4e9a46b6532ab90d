"""A small NATS helper shared by the service and the client."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client


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
