"""Populated databases, cached on disk under ``bench/.data`` so re-runs skip the load.

A database is keyed by store, size, the store's version (for checkpointd also its schema's last
migration) and ``bench.data.DATA_VERSION``. A marker file written after the load records how
many checkpoints it holds and how long the load took; a database without its marker is an
interrupted load and is loaded again from empty. A load stops at its deadline: the marker then
records how many checkpoints were reached (whole chunks), and the reads use those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import data
from bench.stores.ours import views_file
from checkpointd.storage.schema import MIGRATIONS

CACHE = Path(__file__).resolve().parent / ".data"
CHUNK = 10_000  # checkpoints per progress line and per deadline check (whole sessions)


@dataclass(frozen=True, slots=True)
class Populated:
    """A loaded database: where, how many checkpoints it holds, and how its load went."""

    store: str
    path: Path
    target: int
    stored: int
    seconds: float
    cached: bool

    @property
    def reached_target(self) -> bool:
        return self.stored >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "file": self.path.name,
            "target": self.target,
            "stored": self.stored,
            "load_seconds": self.seconds,
            "load_per_second": self.stored / self.seconds if self.seconds else None,
            "cached": self.cached,
            "bytes": sum(p.stat().st_size for p in files(self.path) if p.exists()),
        }


def store_version(key: str) -> str:
    if key == "checkpointd":
        return f"{version('checkpointd')}-m{MIGRATIONS[-1][0]}"
    return version(key)


def sidecars(path: Path) -> list[Path]:
    """An SQLite file and its WAL-mode companions."""
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


def files(path: Path) -> list[Path]:
    """Every file of a populated database: checkpointd also keeps its views beside its log."""
    return sidecars(path) + sidecars(views_file(path))


OpenStore = Callable[..., AbstractAsyncContextManager[Any]]


async def populated(
    store: str, package: str, open_store: OpenStore, target: int, deadline_s: float
) -> Populated:
    """The cached database of ``target`` checkpoints for ``store``, loading it if needed.

    ``open_store(path, populating=True)`` opens the store for loading; its ``populate(start,
    stop)`` writes checkpoints ``start..stop-1``.
    """
    CACHE.mkdir(exist_ok=True)
    stem = f"{package}-{store_version(package)}-{target}-d{data.DATA_VERSION}"
    path = CACHE / f"{stem}.db"
    marker = CACHE / f"{stem}.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        return Populated(store, path, target, saved["stored"], saved["seconds"], cached=True)
    for stale in files(path):
        stale.unlink(missing_ok=True)
    print(f"  loading {target:,} checkpoints into {store} ({path.name})", flush=True)
    start = time.perf_counter()
    stored = 0
    async with open_store(path, populating=True) as loader:
        while stored < target:
            if time.perf_counter() - start > deadline_s:
                print(f"  {store}: load deadline ({deadline_s:.0f} s) reached at {stored:,}")
                break
            stop = min(stored + CHUNK, target)
            await loader.populate(stored, stop)
            stored = stop
            if stored % (10 * CHUNK) == 0 or stored == target:
                rate = stored / (time.perf_counter() - start)
                print(f"    {store}: {stored:,} ({rate:,.0f}/s)", flush=True)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"stored": stored, "seconds": seconds}))
    return Populated(store, path, target, stored, seconds, cached=False)
