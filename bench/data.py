"""The data every store gets: 1 KB JSON-like snapshots, grouped in sessions of 100 checkpoints.

Checkpoint ``i`` belongs to session ``s-{i // SESSION_SIZE}``, and within a session checkpoints
are made in order, so "the latest of a session" is its highest ``i``. Snapshots come from a pool
of ``POOL`` distinct ones made before any timing (the figures are the stores', not the payload
generator's). Names and metadata carry words for checkpointd's search workloads.
"""

from __future__ import annotations

import os
import random
from functools import cache
from typing import Any

SESSION_SIZE = 100
POOL = 4096
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")
# Bumped whenever what populate() writes changes, so cached databases are rebuilt.
DATA_VERSION = 1


def session_of(i: int) -> str:
    return f"s-{i // SESSION_SIZE}"


def snapshot(i: int) -> dict[str, Any]:
    """About 1 KB as JSON (817 bytes of canonical msgpack), the original API's snapshot schema."""
    return {
        "sessions": [session_of(i)],
        "state": {
            "progress": i % 101,
            "completed": list(range(i % 20)),
            "pending": [f"task-{j}" for j in range(8)],
            "config": {"environment": "production", "version": f"1.{i}.0", "seed": i},
            "resources": {"memory": "2GB", "cpu": "4 cores", "disk": "50GB"},
            "notes": random.Random(i).randbytes(300).hex(),
        },
    }


@cache
def snapshots() -> tuple[dict[str, Any], ...]:
    return tuple(snapshot(i) for i in range(POOL))


def pooled_snapshot(i: int) -> dict[str, Any]:
    return snapshots()[i % POOL]


def metadata(i: int) -> dict[str, Any]:
    return {
        "feature": f"feature-{i % 50}",
        "priority": ("low", "normal", "high", "critical")[i % 4],
        "author": f"dev-{i % 20}",
        "description": "milestone" if i % 10_000 == 0 else "routine",
        "tags": ["bench", f"t{i % 7}"],
    }


def name(i: int) -> str:
    """A unique word (``run{i}``), one of nine words, and ``checkpoint`` shared by all."""
    return f"checkpoint run{i} {WORDS[i % len(WORDS)]}"


def sample(k: int, below: int, seed: int) -> list[int]:
    """``k`` indexes in ``[0, below)``, reproducible, with repeats when ``k > below``."""
    rng = random.Random(seed)
    return [rng.randrange(below) for _ in range(k)]


def big_snapshot(size: int) -> dict[str, Any]:
    """A snapshot of just under ``size`` bytes canonical: 64 KB hex strings (gzip to about half).

    0.2 % + 4 KB short of ``size`` so that "100 MB" stays within checkpointd's default
    ``max_checkpoint_size`` (100 MiB) with msgpack's overhead (about 12 bytes per part).
    """
    chunk = 64 * 1024
    text = max(chunk, size - size // 512 - 4096)
    parts = {}
    for j in range(0, text, chunk):
        length = min(chunk, text - j)
        parts[f"part-{j // chunk}"] = os.urandom(length // 2).hex()
    return {"sessions": ["big"], "state": {"blob": parts, "config": {"v": 1}}}
