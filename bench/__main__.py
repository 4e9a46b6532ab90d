"""Run the side-by-side benchmarks: ``python -m bench [--scale small|full] [--only W] [--json P]``.

Every workload runs on checkpointd and on each peer that has an equivalent, in this one process
run (the NATS client and the big-snapshot measurements in child processes), and prints a table
per workload, then the targets of the log/views split beside this run's figures (PASS/MISS);
the JSON report holds the machine, the versions, every figure and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench import targets
from bench.datasets import Datasets
from bench.report import Listing, Table, machine
from bench.scale import SCALES
from bench.workloads import alone, big, create, lag, nats, reads, refusals, replay, storage

Workload = Callable[[Datasets], Awaitable[Sequence[Table | Listing]]]
WORKLOADS: dict[str, Workload] = {
    "create": create.run,
    "lag": lag.run,
    "reads": reads.run,
    "replay": replay.run,
    "nats": nats.run,
    "alone": alone.run,
    "big": big.run,
    "storage": storage.run,
    "refusals": refusals.run,
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument(
        "--only", action="append", choices=list(WORKLOADS), help="run this workload (repeatable)"
    )
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results.json")
    return parser.parse_args(argv)


def loads_listing(datasets: Datasets) -> Listing:
    listing = Listing(
        "populated databases (cached under bench/.data; a cached one shows its original load)",
        ["store", "target", "stored", "load s", "per s", "cached", "bytes"],
    )
    for loaded in datasets.loaded.values():
        row = loaded.to_json()
        listing.rows.append(
            {
                "store": row["store"],
                "target": row["target"],
                "stored": row["stored"],
                "load s": row["load_seconds"],
                "per s": row["load_per_second"],
                "cached": "yes" if row["cached"] else "no",
                "bytes": row["bytes"],
            }
        )
    listing.notes.append(
        "loads use each store's batch API where it has one and relaxed durability;"
        " see bench/RESULTS.md"
    )
    return listing


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = SCALES[args.scale]
    datasets = Datasets(scale)
    info = machine()
    print(
        f"checkpointd side by side, scale {scale.name}; {info['cpu_model']}, {info['cores']} cores,"
        f" load average {info['load_average'][0]:.2f}; Python {info['python']},"
        f" SQLite {info['sqlite']}\n",
        flush=True,
    )
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    measured: list[Table | Listing] = []
    for name in args.only or list(WORKLOADS):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            tables = await WORKLOADS[name](datasets)
        except Exception as exc:  # one failed workload must not lose the others
            print(f"!! {name} failed: {exc!r}", flush=True)
            results[name] = {"error": repr(exc)}
        else:
            results[name] = [t.to_json() for t in tables]
            measured += tables
        timings[name] = time.perf_counter() - start
        print(flush=True)
    populated = loads_listing(datasets)
    if populated.rows:
        print(populated.render(), end="\n\n")
    verdicts = targets.listing(measured)
    print(verdicts.render(), flush=True)
    return {
        "machine": info,
        "scale": scale.name,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "workload_seconds": timings,
        "populated": [loaded.to_json() for loaded in datasets.loaded.values()],
        "results": results,
        "targets": verdicts.to_json(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    report = asyncio.run(run(args))
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
