"""The embedded nats-server the daemon starts when no NATS URL is configured."""

from __future__ import annotations

import socket
from pathlib import Path

import nats
import pytest

from checkpointd.daemon.embedded import EmbeddedNats
from checkpointd.errors import UnavailableError


async def test_it_starts_on_a_free_port_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = await EmbeddedNats.start(tmp_path / "nats", port=0)
    try:
        assert server.port != 0
        nc = await nats.connect(server.url)
        info = await nc.jetstream().account_info()  # JetStream is on
        assert info.limits is not None
        await nc.close()
        assert (tmp_path / "nats" / "jetstream").is_dir()  # its data under the state directory
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
