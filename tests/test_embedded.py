"""The embedded nats-server the daemon starts when no NATS URL is configured."""

from __future__ import annotations

import socket
from pathlib import Path

import nats
import nats.js.errors
import pytest

from checkpointd.daemon.embedded import EmbeddedNats
from checkpointd.errors import UnavailableError


async def test_it_starts_on_a_free_port_without_jetstream_and_stops(tmp_path: Path) -> None:
    """It serves on the port it was given (any free one for 0), JetStream off, until stopped."""
    server = await EmbeddedNats.start(tmp_path / "nats", port=0)
    try:
        assert server.port != 0
        nc = await nats.connect(server.url)
        try:
            jetstream = nc.jetstream()
            with pytest.raises(nats.js.errors.ServiceUnavailableError):
                await jetstream.account_info()  # nothing answers: JetStream is off
        finally:
            await nc.close()
        assert not (tmp_path / "nats" / "jetstream").exists()  # it stores nothing on disk
    finally:
        await server.stop()
    assert await server.wait() is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


async def test_a_port_in_use_is_a_clear_unavailable_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UnavailableError, match="address already in use"):
            await EmbeddedNats.start(tmp_path / "nats", port=port)


async def test_stop_is_idempotent(tmp_path: Path) -> None:
    server = await EmbeddedNats.start(tmp_path / "nats", port=0)
    await server.stop()
    await server.stop()
    assert server.pid > 0
