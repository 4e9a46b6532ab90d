"""Three nats-servers clustered on loopback, JetStream on: the cluster a checkpointd cluster uses.

Each server has a client port, a cluster (route) port and a monitoring port of its own, routes to
the other two, and its own JetStream ``store_dir``. With ``sync="always"`` (the default here, and
what the README asks of a production cluster) every server fsyncs a message before it counts
towards the acknowledgement; ``sync=None`` leaves the server's default (an fsync every two
minutes), which the bench compares against.

A server can be killed (SIGKILL), paused (SIGSTOP) and resumed, and started again on its ports
and store: ``restart`` waits until the JetStream meta group has it back as a current peer.
Readiness is read from the servers' monitoring endpoints (``/healthz``, ``/jsz``) over HTTP, so
nothing here needs an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from natsserver import free_port

from checkpointd.daemon.embedded import nats_server_binary

DEADLINE = 60.0
"""Seconds a start, a restart or a wait for the meta leader may take before the test fails."""

CLUSTER_NAME = "checkpointd-test"

T = TypeVar("T")


@dataclass
class NatsNode:
    """One nats-server of the cluster: its ports, its directory, its process (once started)."""

    name: str
    port: int
    route_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server on its config (written by the cluster) and store; no wait."""
        assert not self.running, f"{self.name} is running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and wait until it has exited (its ports and files are free)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE)

    def stop(self) -> None:
        """SIGTERM (after a SIGCONT, in case a test left it paused); SIGKILL if it hangs."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(DEADLINE / 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def monitor(self, path: str, timeout: float = 2.0) -> Any:
        """The JSON of one monitoring endpoint (``/jsz``, ``/healthz``...).

        Raises:
            OSError: the server does not answer (not started yet, dead or paused).
        """
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # /healthz answers 503 with a JSON body
            return json.loads(exc.read() or b"{}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class NatsCluster:
    """Three clustered nats-servers with JetStream; ``close()`` stops whatever still runs."""

    nodes: list[NatsNode]
    sync: str | None
    max_payload: int
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every server, comma-separated (what ``[nats] url`` and the client take)."""
        return ",".join(node.url for node in self.nodes)

    def url_from(self, first: NatsNode) -> str:
        """Every server, ``first`` first."""
        return ",".join(n.url for n in [first, *(n for n in self.nodes if n is not first)])

    def node(self, name: str) -> NatsNode:
        (found,) = [n for n in self.nodes if n.name == name]
        return found

    def node_on_port(self, port: int) -> NatsNode | None:
        return next((n for n in self.nodes if n.port == port), None)

    def write_configs(self) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes)
        sync = f"  sync_interval: {self.sync}\n" if self.sync else ""
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.config.write_text(
                f"server_name: {node.name}\n"
                f"listen: 127.0.0.1:{node.port}\n"
                f"http: 127.0.0.1:{node.monitor_port}\n"
                f"max_payload: {self.max_payload}\n"
                "jetstream {\n"
                f"  store_dir: {json.dumps(str(node.directory / 'jetstream'))}\n"
                f"{sync}"
                "}\n"
                "cluster {\n"
                f"  name: {CLUSTER_NAME}\n"
                f"  listen: 127.0.0.1:{node.route_port}\n"
                f"  routes: [{routes}]\n"
                "}\n" + "".join(f"{line}\n" for line in self.extra),
                encoding="utf-8",
            )

    def start(self) -> None:
        """Start every server and wait until the cluster has a JetStream meta leader, every
        server is a healthy, current member, and a stream with a replica on each can be made."""
        for node in self.nodes:
            node.start()
        self.wait_healthy()
        self.wait_placeable()

    def wait_placeable(self, deadline: float = DEADLINE) -> None:
        """Wait until JetStream places a stream on every server: a meta leader that has just
        been elected may still count a peer offline ("no suitable peers for placement") for a
        moment after every ``/healthz`` is ok. A probe stream is made and deleted."""
        with ThreadPoolExecutor(1) as pool:  # a loop of its own, apart from the test's
            pool.submit(asyncio.run, self._place_probe(deadline)).result()

    async def _place_probe(self, deadline: float) -> None:
        nc = await nats.connect(servers=self.url.split(","), connect_timeout=5)
        try:
            js = nc.jetstream(timeout=5)
            name = f"PROBE_{uuid.uuid4().hex[:8].upper()}"
            end = time.monotonic() + deadline
            while True:
                try:
                    await js.add_stream(name=name, subjects=[], num_replicas=len(self.nodes))
                    break
                except (nats.js.errors.APIError, nats.errors.TimeoutError) as exc:
                    if time.monotonic() > end:
                        diagnostics = self._diagnostics()
                        raise AssertionError(f"no stream placed: {exc}\n{diagnostics}") from None
                    await asyncio.sleep(0.1)
            await js.delete_stream(name)
        finally:
            await nc.close()

    def wait_healthy(self, deadline: float = DEADLINE) -> str:
        """Wait until every running server's ``/healthz`` is ok and they agree on one meta
        leader that sees every running server as a current peer; the leader's name."""
        return wait_for(self._healthy_leader, deadline, self._diagnostics)

    def _healthy_leader(self) -> str | None:
        running = [n for n in self.nodes if n.running]
        leaders = set()
        for node in running:
            try:
                if node.monitor("/healthz").get("status") != "ok":
                    return None
                meta = node.monitor("/jsz").get("meta_cluster") or {}
            except OSError:
                return None
            leaders.add(meta.get("leader"))
            if node.name == meta.get("leader"):
                current = {r["name"] for r in meta.get("replicas", []) if r.get("current")}
                others = {n.name for n in running if n is not node}
                if not others <= current:
                    return None
        if len(leaders) != 1 or None in leaders or "" in leaders:
            return None
        return str(leaders.pop())

    def meta_leader(self) -> str:
        return self.wait_healthy()

    def stream_leader(self, stream: str, deadline: float = DEADLINE) -> NatsNode:
        """The server that leads ``stream``'s replica group (as a running server reports it)."""

        def leader() -> NatsNode | None:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    info = node.monitor("/jsz?streams=true")
                except OSError:
                    continue
                for account in info.get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        if detail.get("name") == stream:
                            name = (detail.get("cluster") or {}).get("leader")
                            if name:
                                return self.node(name)
            return None

        return wait_for(leader, deadline, self._diagnostics)

    def restart(self, node: NatsNode) -> None:
        """Start ``node`` again (on its ports and store) once it is down; wait until healthy."""
        if node.running:
            node.kill()
        node.start()
        self.wait_healthy()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def _diagnostics(self) -> str:
        return "\n".join(f"--- {n.name} (running: {n.running})\n{n.tail()}" for n in self.nodes)


def wait_for(
    probe: Callable[[], T | None], deadline: float, diagnostics: Callable[[], str] = str
) -> T:
    """Call ``probe`` until it returns something other than None (every 50 ms), within
    ``deadline`` seconds; fail with ``diagnostics()`` otherwise."""
    end = time.monotonic() + deadline
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s:\n{diagnostics()}")
        time.sleep(0.05)


def make_cluster(
    root: Path, *, sync: str | None = "always", max_payload: int = 1024 * 1024, size: int = 3
) -> NatsCluster:
    """The cluster's servers, configured under ``root`` (not started)."""
    nodes = [
        NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), root / f"n{i + 1}")
        for i in range(size)
    ]
    cluster = NatsCluster(nodes, sync, max_payload)
    cluster.write_configs()
    return cluster


@contextlib.contextmanager
def running_cluster(root: Path, **options: Any) -> Iterator[NatsCluster]:
    """A started cluster (see ``make_cluster``), stopped at the end."""
    cluster = make_cluster(root, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
