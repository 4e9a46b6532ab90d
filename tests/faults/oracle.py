"""The oracle every fault scenario ends with: what a store must look like after any fault.

``check_store`` runs on a database no process has open (the daemon stopped or killed), as a
clean restart would find it:

- ``PRAGMA integrity_check`` and both FTS5 integrity checks pass;
- ``seq`` is 1..N with no gap, and each stream's versions are 1..k with no gap;
- a fresh ``CheckpointManager`` opens it, and ``verify_log`` re-hashes all N events: ok;
- every live checkpoint's stored checksum matches its decrypted, decompressed snapshot;
- every projection equals a rebuild from the log (the view tables, the FTS content and index);
- every acknowledged create is present with the checksum its reply carried, and every
  acknowledged delete is absent.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from conftest import dump_projections

from checkpointd import CheckpointManager


@dataclass(frozen=True)
class Verdict:
    """What the oracle checked (for the figures a scenario reports)."""

    events: int
    checkpoints: int
    acknowledged: int


def file_checks(db_path: Path | str) -> tuple[list[int], dict[str, list[int]]]:
    """SQLite's own integrity check; the events' seqs and each stream's versions, in order."""
    with closing(sqlite3.connect(db_path, isolation_level=None, timeout=30)) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        assert result == [("ok",)], f"integrity_check: {result}"
        seqs: list[int] = []
        versions: dict[str, list[int]] = defaultdict(list)
        for seq, stream, version in conn.execute(
            "SELECT seq, stream, version FROM events ORDER BY seq"
        ):
            seqs.append(seq)
            versions[stream].append(version)
    return seqs, versions


def event_hashes(db_path: Path | str) -> list[tuple[int, bytes]]:
    """Every event's ``(seq, hash)``, in order: two logs compare as prefixes with these."""
    with closing(sqlite3.connect(db_path)) as conn:
        return [(s, bytes(h)) for s, h in conn.execute("SELECT seq, hash FROM events ORDER BY seq")]


async def check_store(
    db_path: Path | str,
    *,
    acked: Mapping[str, str] | None = None,
    deleted: Collection[str] = (),
    encryption_key: str | None = None,
    encryption_old_keys: Sequence[str] = (),
) -> Verdict:
    """Assert everything the module docstring lists; ``acked`` maps id → acknowledged checksum.

    The database must not be open elsewhere. It is left as a clean restart leaves it (the
    rebuild it runs writes the same rows back).
    """
    acked = dict(acked or {})
    seqs, versions = file_checks(db_path)
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has gaps: {_gaps(seqs)}"
    for stream, numbers in versions.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{stream}: versions {numbers}"
    live = dump_projections(db_path)  # runs the FTS integrity checks too

    manager = CheckpointManager(
        database_path=str(db_path),
        encryption_key=encryption_key,
        encryption_old_keys=list(encryption_old_keys),
    )
    await manager.open()
    try:
        verified = await manager.verify_log()
        assert verified.ok, verified
        assert verified.events == len(seqs), verified
        ids = [row[1] for row in live["checkpoints"]]
        for checkpoint_id in ids:
            report = await manager.validate_checkpoint(checkpoint_id)
            assert report.checksum_valid, (checkpoint_id, report)
            assert report.size_matches, (checkpoint_id, report)
        for checkpoint_id, checksum in acked.items():
            found = await manager.get_checkpoint(checkpoint_id, include_snapshot=False)
            assert found is not None, f"acknowledged create {checkpoint_id} is lost"
            assert found.checksum == checksum, (checkpoint_id, found.checksum, checksum)
        for checkpoint_id in deleted:
            found = await manager.get_checkpoint(checkpoint_id, include_snapshot=False)
            assert found is None, f"acknowledged delete of {checkpoint_id} is undone"
        assert await manager.rebuild() == len(seqs)
    finally:
        await manager.close()
    assert dump_projections(db_path) == live, "a projection differs from a rebuild of the log"
    return Verdict(events=len(seqs), checkpoints=len(ids), acknowledged=len(acked))


def _gaps(seqs: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1][:10]
