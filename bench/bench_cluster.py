"""The three-daemon cluster beside one node, in one run: creates, reads, and what fsync costs.

Rows, each through a ``CheckpointClient`` in this process (64 calls in flight, after a warm-up):

- creates on **one node**: one ``checkpointd serve`` with the SQLite log (``durability = "full"``)
  on one nats-server;
- creates on **the cluster**: three nats-servers (JetStream, R3) and three daemons with
  ``log_backend = "jetstream"``, the servers with ``sync_interval: always`` (each server fsyncs a
  message before it counts towards the acknowledgement), and again on a cluster with the servers'
  default (an fsync every two minutes): what ``always`` costs;
- reads (``get_checkpoint`` of random ids among those created) on the cluster with its three
  daemons answering (one queue group), then with two of them stopped, and on the one node.

The snapshots are the other benches' 1 KB ones (``bench.data``). Every process runs on this
machine: on a machine with few cores the daemons compete for them, so reads cannot scale with
the daemons as they would on three machines (the figures say how many cores there were).

Usage:
    python -m bench.bench_cluster [--creates 2000] [--reads 4000] [--rounds 3] [--json PATH]

Each row runs ``--rounds`` times (the whole set once per round, so a noisy moment on a shared
machine hits every row alike); its median round is reported, with every round's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors

from bench.data import pooled_snapshot, session_of
from bench.timing import Figure, drive
from checkpointd import CheckpointClient
from checkpointd.daemon.embedded import nats_server_binary

IN_FLIGHT = 64
WARMUP = 128
DEADLINE = 60.0  # seconds a start may take


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(probe: Any, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not probe():
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not within {deadline} s")
        time.sleep(0.05)


# -- nats-servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    route_port: int
    monitor_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(json.loads(response.read()).get("status") == "ok")
        except OSError:
            return False


@contextlib.contextmanager
def nats_servers(root: Path, size: int, sync: str | None) -> Iterator[list[Server]]:
    """``size`` nats-servers with JetStream (clustered when more than one), healthy."""
    servers = [Server(f"n{i + 1}", free_port(), free_port(), free_port()) for i in range(size)]
    routes = ", ".join(f"nats-route://127.0.0.1:{s.route_port}" for s in servers)
    try:
        for server in servers:
            directory = root / server.name
            directory.mkdir(parents=True)
            cluster = (
                f"cluster {{\n  name: bench\n  listen: 127.0.0.1:{server.route_port}\n"
                f"  routes: [{routes}]\n}}\n"
                if size > 1
                else ""
            )
            config = directory / "nats.conf"
            config.write_text(
                f"server_name: {server.name}\nlisten: 127.0.0.1:{server.port}\n"
                f"http: 127.0.0.1:{server.monitor_port}\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(directory / 'js'))}\n"
                + (f"  sync_interval: {sync}\n" if sync else "")
                + "}\n"
                + cluster,
                encoding="utf-8",
            )
            log = (directory / "server.log").open("wb")
            server.process = subprocess.Popen(  # noqa: S603 - our binary, our arguments
                [nats_server_binary(), "-c", str(config)], stdout=log, stderr=log
            )
            log.close()
        wait_until(lambda: all(s.healthy() for s in servers), "nats-servers healthy")
        yield servers
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.process.terminate()
                server.process.wait(30)


# -- daemons --------------------------------------------------------------------------------------


@dataclass
class Daemons:
    """``checkpointd serve`` processes on one subject prefix."""

    url: str
    prefix: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)  # pid -> its stderr

    async def ready(self, count: int, writer: bool) -> None:
        """Wait until ``count`` daemons answer ``$SRV.INFO`` on the prefix (and, for a
        cluster, one of them as the writer)."""
        nc = await nats.connect(servers=self.url.split(","))
        try:
            end = time.monotonic() + DEADLINE
            while True:
                readers, writers = await _roles(nc, self.prefix)
                if readers >= count and (writers == 1 or not writer):
                    return
                if time.monotonic() > end:
                    raise RuntimeError(f"{readers} of {count} daemons ready, {writers} writers")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                print(f"daemon {process.pid} ignored SIGTERM for 60 s: killed", file=sys.stderr)
                log = self.logs.get(process.pid)
                if log is not None:
                    print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                process.kill()
                process.wait()


async def _roles(nc: Any, prefix: str) -> tuple[int, int]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.INFO.checkpointd", b"", reply=inbox)
    readers = writers = 0
    with contextlib.suppress(nats.errors.TimeoutError):
        while True:
            data = (await sub.next_msg(timeout=0.3)).data
            if not data:  # "no responders": no daemon is up yet
                break
            metadata = json.loads(data).get("metadata") or {}
            if metadata.get("prefix") != prefix:
                continue
            if metadata.get("role") == "writer":
                writers += 1
            else:
                readers += 1
    await sub.unsubscribe()
    return readers, writers


async def placeable(url: str, replicas: int) -> None:
    """Wait until JetStream can place a stream with ``replicas`` replicas (a meta leader just
    elected may count a peer offline for a moment): a probe stream, made and deleted."""
    nc = await nats.connect(servers=url.split(","))
    try:
        js = nc.jetstream(timeout=5)
        end = time.monotonic() + DEADLINE
        while True:
            try:
                await js.add_stream(name="BENCH_PROBE", subjects=[], num_replicas=replicas)
                break
            except (nats.js.errors.APIError, nats.errors.TimeoutError):
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)
        await js.delete_stream("BENCH_PROBE")
    finally:
        await nc.close()


def start_daemon(
    directory: Path, url: str, prefix: str, settings: dict[str, Any]
) -> subprocess.Popen[bytes]:
    """``checkpointd serve`` on a config of ``settings`` written under ``directory``."""
    directory.mkdir(parents=True)
    lines = [f"state_directory = {json.dumps(str(directory / 'state'))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    lines += ["[nats]", f"url = {json.dumps(url)}", f"subject_prefix = {json.dumps(prefix)}"]
    config = directory / "checkpointd.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHECKPOINTD_")}
    env.pop("NOTIFY_SOCKET", None)
    with (directory / "stderr.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - this Python, our arguments
            [sys.executable, "-m", "checkpointd", "serve", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )


@contextlib.asynccontextmanager
async def daemons(
    root: Path, servers: list[Server], settings: dict[str, Any]
) -> AsyncIterator[Daemons]:
    """One daemon per server (listing its own first), all on one prefix; ready."""
    prefix = f"b{uuid.uuid4().hex[:10]}.checkpoint"
    group = Daemons(",".join(s.url for s in servers), prefix)
    writer = settings.get("log_backend") == "jetstream"
    if writer:
        await placeable(group.url, len(servers))
    try:
        for index, server in enumerate(servers):
            urls = [server.url, *(s.url for s in servers if s is not server)]
            directory = root / f"daemon{index}"
            group.processes.append(start_daemon(directory, ",".join(urls), prefix, settings))
            group.logs[group.processes[-1].pid] = directory / "stderr.log"
            if index == 0:  # it creates the stream; the others then start together
                await group.ready(1, writer=writer)
        await group.ready(len(servers), writer=writer)
        yield group
    finally:
        for process in group.processes:
            group.stop(process)


# -- the rows -------------------------------------------------------------------------------------


async def creates(client: CheckpointClient, n: int) -> tuple[Figure, list[str]]:
    ids: list[str] = []

    async def create(i: int) -> None:
        cp = await client.create(
            name=f"cp-{i}",
            session_id=session_of(abs(i)),
            snapshot=pooled_snapshot(abs(i)),
            branches=["main"],
            metadata={"feature": f"f{i % 10}", "author": "bench", "tags": ["bench"]},
        )
        if i >= 0:
            ids.append(cp.id)

    return await drive(create, n, IN_FLIGHT, warmup=WARMUP), ids


async def reads(client: CheckpointClient, ids: list[str], n: int) -> Figure:
    """Gets of random ids, by the client that created them: each read carries the position of
    its last write (``Checkpointd-Min-Seq``), so a daemon behind it waits before it answers."""
    rng = random.Random(7)
    picks = [rng.choice(ids) for _ in range(n + WARMUP)]

    async def get(i: int) -> None:
        found = await client.get_checkpoint(picks[i])
        assert found is not None

    return await drive(get, n, IN_FLIGHT, warmup=WARMUP)


def client_of(group: Daemons) -> CheckpointClient:
    return CheckpointClient(group.url, prefix=group.prefix, request_timeout=60)


async def one_node(root: Path, n_creates: int, n_reads: int) -> dict[str, Figure]:
    with nats_servers(root / "one-nats", 1, None) as servers:
        async with (
            daemons(root / "one", servers, {"durability": "full"}) as group,
            client_of(group) as client,
        ):
            made, ids = await creates(client, n_creates)
            return {"create one node": made, "read one node": await reads(client, ids, n_reads)}


async def cluster(
    root: Path, sync: str | None, n_creates: int, n_reads: int | None
) -> dict[str, Figure]:
    label = f"sync_interval {sync or 'default'}"
    settings = {"log_backend": "jetstream", "jetstream_replicas": 3}
    with nats_servers(root / f"nats-{sync}", 3, sync) as servers:
        async with (
            daemons(root / f"cluster-{sync}", servers, settings) as group,
            client_of(group) as client,
        ):
            made, ids = await creates(client, n_creates)
            figures = {f"create cluster, {label}": made}
            if n_reads is not None:
                figures["read cluster, 3 daemons"] = await reads(client, ids, n_reads)
                for process in group.processes[1:]:
                    group.stop(process)
                await group.ready(1, writer=False)
                figures["read cluster, 1 daemon"] = await reads(client, ids, n_reads)
            return figures


def ratios(figures: dict[str, Figure]) -> dict[str, float]:
    def ratio(a: str, b: str) -> float:
        return round(figures[a].per_second / figures[b].per_second, 3)

    return {
        "create: cluster (always) / one node": ratio(
            "create cluster, sync_interval always", "create one node"
        ),
        "create: sync always / default": ratio(
            "create cluster, sync_interval always", "create cluster, sync_interval default"
        ),
        "read: 3 daemons / 1 daemon": ratio("read cluster, 3 daemons", "read cluster, 1 daemon"),
        "read: cluster 3 daemons / one node": ratio("read cluster, 3 daemons", "read one node"),
    }


async def run(n_creates: int, n_reads: int, rounds: int) -> dict[str, Any]:
    """Every row ``rounds`` times (the rows of a round one after another); each row's figure
    is its median round by throughput, the ratios those of the medians."""
    runs: dict[str, list[Figure]] = {}
    probe = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        fsync = fsync_ms(probe)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    for _ in range(rounds):
        root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        try:
            found = await one_node(root, n_creates, n_reads)
            found |= await cluster(root, "always", n_creates, n_reads)
            found |= await cluster(root, None, n_creates, None)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        for name, figure in found.items():
            runs.setdefault(name, []).append(figure)
    figures = {name: median(row) for name, row in runs.items()}
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "fsync_ms": fsync,
        },
        "in_flight": IN_FLIGHT,
        "rounds": rounds,
        "rows": {name: f.to_json() for name, f in figures.items()},
        "per_second_of_each_round": {
            name: [round(f.per_second) for f in row] for name, row in runs.items()
        },
        "ratios": ratios(figures),
    }


def fsync_ms(directory: Path, times: int = 200) -> float:
    """The median time of a 4 KB write and its fsync in ``directory``: what ``sync_interval:
    always`` adds to an append, at the least, on this disk."""
    samples = []
    with (directory / "fsync-probe").open("wb") as probe:
        for _ in range(times):
            begin = time.perf_counter()
            probe.write(os.urandom(4096))
            probe.flush()
            os.fsync(probe.fileno())
            samples.append(time.perf_counter() - begin)
    return round(sorted(samples)[times // 2] * 1000, 3)


def median(row: list[Figure]) -> Figure:
    return sorted(row, key=lambda f: f.per_second)[len(row) // 2]


def print_report(result: dict[str, Any]) -> None:
    print(
        f"{result['machine']['cpus']} CPUs, {result['in_flight']} in flight,"
        f" median of {result['rounds']} rounds; a 4 KB write + fsync here:"
        f" {result['machine']['fsync_ms']} ms"
    )
    print(f"{'row':42} {'ops':>6} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in result["rows"].items():
        print(
            f"{name:42} {row['ops']:>6} {row['per_second']:>8.0f}"
            f" {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
            f"   rounds: {result['per_second_of_each_round'][name]}"
        )
    for name, value in result["ratios"].items():
        print(f"{name}: {value:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3, help="the median round is reported")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args.creates, args.reads, args.rounds))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
