"""How big each workload runs: ``small`` to check the harness in a minute or two, ``full``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scale:
    name: str
    stored: tuple[int, ...]  # checkpoints stored for the read workloads, per size
    creates_1: int  # timed creates at 1 caller
    creates_64: int  # timed creates at 64 callers
    reads: int  # timed calls per read query
    queries: int  # timed calls per search/stats query
    replay_at: int  # the stored size the replay workload reads
    nats_seconds: float  # wall time per NATS row
    snapshots_1mb: int  # 1 MB snapshots created, then read, for MB/s
    peak_mb: int  # the snapshot size whose peak memory is measured
    storage_n: int  # checkpoints per storage-bytes database
    load_deadline_s: float  # a store's load stops here (per size)


SCALES = {
    "small": Scale(
        name="small",
        stored=(10_000,),
        creates_1=1_000,
        creates_64=5_000,
        reads=500,
        queries=50,
        replay_at=10_000,
        nats_seconds=2.0,
        snapshots_1mb=10,
        peak_mb=10,
        storage_n=2_000,
        load_deadline_s=300,
    ),
    "full": Scale(
        name="full",
        stored=(100_000, 1_000_000),
        creates_1=3_000,
        creates_64=30_000,
        reads=2_000,
        queries=200,
        replay_at=1_000_000,  # the rebuild target is at 1M events
        nats_seconds=5.0,
        snapshots_1mb=50,
        peak_mb=100,
        storage_n=20_000,
        load_deadline_s=1_200,
    ),
}
