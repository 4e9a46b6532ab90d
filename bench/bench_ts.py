"""Creates from the TypeScript client beside the Python CheckpointClient, against one daemon.

One ``checkpointd serve`` (embedded nats-server on a free loopback port, a fresh state directory,
durable ``synchronous=FULL``) takes bench_nats's create workload (1 KB JSON-like snapshots) at
1 and 64 creates in flight, first from the Python ``CheckpointClient`` in this process, then from
the TypeScript client (``clients/typescript/bench/creates.mjs``) in a node process, both with
msgpack bodies. The daemon is the same, so the ratio TypeScript / Python shows what the client
costs. The store grows through the run (each row adds its creates); rows alternate, Python then
TypeScript at each concurrency.

Usage (the TypeScript package built first: ``cd clients/typescript && npm ci && npm run build``):
    python -m bench.bench_ts [--seconds 4] [--json bench/ts.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bench_nats import Plan, drive, own_cpu
from checkpointd import CheckpointClient
from checkpointd.errors import UnavailableError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
SCRIPT = PACKAGE / "bench" / "creates.mjs"
DEADLINE = 60.0  # seconds the daemon may take to answer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """A ``checkpointd serve`` on its embedded defaults under ``directory``, ready: its URL.

    Stopped (SIGTERM) when the block ends.
    """
    port = free_port()
    config = directory / "checkpointd.toml"
    config.write_text(
        f'state_directory = "{directory}/state"\n\n[nats]\nembedded_port = {port}\n',
        encoding="utf-8",
    )
    daemon = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "checkpointd", "serve", "--config", str(config)],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(url, daemon))
        yield url
    finally:
        daemon.terminate()
        daemon.wait(DEADLINE)


async def wait_ready(url: str, daemon: subprocess.Popen[bytes]) -> None:
    """Return once the daemon's endpoints answer (its ``health``)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(
                f"checkpointd serve exited ({daemon.returncode}) before it was ready"
            )
        try:
            async with CheckpointClient(url, connect_timeout=2.0, retries=0) as client:
                await client.health()
                return
        except UnavailableError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"checkpointd serve did not answer within {DEADLINE}s")


async def python_row(url: str, concurrency: int, plan: Plan) -> dict[str, Any]:
    async with CheckpointClient(url) as client:
        result = await drive(
            client.create, concurrency, plan, cpu=lambda: {"client_process": own_cpu()}
        )
    cpu = result.pop("cpu_us_per_create")["client_process"]
    return {"client": "python", "encoding": "msgpack", **result, "cpu_us_per_create": cpu}


def typescript_row(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603
        [
            *("node", str(SCRIPT), "--servers", url, "--json"),
            *("--seconds", str(seconds), "--concurrency", str(concurrency)),
        ],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"creates.mjs failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


async def run(url: str, plan: Plan) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for concurrency in (1, 64):
        python = await python_row(url, concurrency, plan)
        typescript = await asyncio.to_thread(typescript_row, url, concurrency, plan.seconds)
        python["ratio"] = None
        typescript["ratio"] = typescript["per_second"] / python["per_second"]
        rows += [python, typescript]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("creates from each client against one checkpointd serve (msgpack, synchronous=FULL)")
    print(
        f"{'client':<11} {'in-flight':>9} {'creates':>8} {'per s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'ratio':>6} {'client cpu us/create':>21}"
    )
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(
            f"{r['client']:<11} {r['concurrency']:>9} {r['creates']:>8} {r['per_second']:>7.0f}"
            f" {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {ratio:>6} {r['cpu_us_per_create']:>21.0f}"
        )
    print("ratio: TypeScript creates per second / Python's at the same concurrency")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wall time per row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if shutil.which("node") is None or not (PACKAGE / "dist" / "src" / "index.js").exists():
        sys.exit(
            "build the TypeScript client first: cd clients/typescript && npm ci && npm run build"
        )
    with (
        tempfile.TemporaryDirectory(prefix="bench-ts-") as directory,
        serving(Path(directory)) as url,
    ):
        rows = asyncio.run(run(url, Plan(seconds=args.seconds, n=None)))
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
