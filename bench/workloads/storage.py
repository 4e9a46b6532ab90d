"""Storage bytes per checkpoint: checkpointd with and without compression, and the peers.

checkpointd: a fresh file per setting, ``scale.storage_n`` checkpoints of the 1 KB snapshot
loaded with ``create_batch``, then closed (WAL checkpointed); bytes are the file and its
``-wal``/``-shm``. The peers and checkpointd's populated database: their cached files at the
replay size, over the checkpoints stored.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.datasets import Datasets
from bench.population import sidecars
from bench.report import Listing
from bench.stores import ours


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in sidecars(path) if p.exists())


async def run(datasets: Datasets) -> list[Listing]:
    scale = datasets.scale
    n = scale.storage_n
    listing = Listing(
        "storage bytes per checkpoint (1 KB JSON-like snapshot, 817 bytes canonical msgpack)",
        ["store", "setting", "checkpoints", "bytes", "bytes/checkpoint"],
    )
    for compression in (True, False):
        with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
            path = Path(tmp) / "storage.db"
            async with ours.open_store(path, enable_compression=compression) as store:
                await store.populate(0, n)
            size = file_bytes(path)
        listing.rows.append(
            {
                "store": ours.NAME,
                "setting": "gzip (default)" if compression else "enable_compression=False",
                "checkpoints": n,
                "bytes": size,
                "bytes/checkpoint": size / n,
            }
        )
    for name in datasets.stores():
        loaded = await datasets.get(name, scale.replay_at)
        size = file_bytes(loaded.path)
        listing.rows.append(
            {
                "store": name,
                "setting": "populated database (defaults)",
                "checkpoints": loaded.stored,
                "bytes": size,
                "bytes/checkpoint": size / loaded.stored,
            }
        )
    print(listing.render(), flush=True)
    return [listing]
