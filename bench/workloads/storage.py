"""Storage bytes per checkpoint: checkpointd's log and views apart, with and without compression,
and the peers.

checkpointd keeps two files: the log (``database_path``: events, blobs, idempotency keys) and
its views (``Config.views_path``), which can be rebuilt from the log. Each is measured alone
after a WAL checkpoint (so the ``-wal`` file holds nothing), and their sum. A fresh file per
setting holds ``scale.storage_n`` checkpoints of the 1 KB snapshot loaded with ``create_batch``;
checkpointd's populated database and the peers' are the cached files at the replay size, over
the checkpoints stored (a peer's bytes: its file with its ``-wal``/``-shm``).
"""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.datasets import Datasets
from bench.population import sidecars
from bench.report import Listing
from bench.stores import ours


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in sidecars(path) if p.exists())


def checkpointed_bytes(path: Path) -> int:
    """The bytes of one SQLite file alone, after moving its WAL into it."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def ours_rows(path: Path, setting: str, checkpoints: int) -> list[dict[str, Any]]:
    """checkpointd's log, its views, and both, in bytes and bytes per checkpoint."""
    log = checkpointed_bytes(path)
    views = checkpointed_bytes(ours.views_file(path))
    return [
        {
            "store": ours.NAME,
            "setting": setting,
            "part": part,
            "checkpoints": checkpoints,
            "bytes": size,
            "bytes/checkpoint": size / checkpoints,
        }
        for part, size in (("log", log), ("views", views), ("log + views", log + views))
    ]


async def run(datasets: Datasets) -> list[Listing]:
    scale = datasets.scale
    n = scale.storage_n
    listing = Listing(
        "storage bytes per checkpoint (1 KB JSON-like snapshot, 817 bytes canonical msgpack)",
        ["store", "setting", "part", "checkpoints", "bytes", "bytes/checkpoint"],
        key="storage",
        left=("store", "setting", "part"),
    )
    for compression in (True, False):
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
            path = Path(tmp) / "storage.db"
            async with ours.open_store(path, enable_compression=compression) as store:
                await store.populate(0, n)
            setting = "gzip (default)" if compression else "enable_compression=False"
            listing.rows += ours_rows(path, f"fresh file, {setting}", n)
    for name in datasets.stores():
        loaded = await datasets.get(name, scale.replay_at)
        setting = "populated database (defaults)"
        if name == ours.NAME:
            listing.rows += ours_rows(loaded.path, setting, loaded.stored)
            continue
        size = file_bytes(loaded.path)
        listing.rows.append(
            {
                "store": name,
                "setting": setting,
                "part": "whole file",
                "checkpoints": loaded.stored,
                "bytes": size,
                "bytes/checkpoint": size / loaded.stored,
            }
        )
    listing.notes.append(
        "checkpointd's parts are each one file after a WAL checkpoint; the views can be rebuilt"
        " from the log"
    )
    print(listing.render(), flush=True)
    return [listing]
