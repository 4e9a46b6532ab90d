"""The oracle every fault scenario ends with: what a store must look like after any fault.

``check_store`` runs on a store no process has open (the daemon stopped or killed), as a
clean restart would find it:

- ``PRAGMA integrity_check`` passes on the log file;
- ``seq`` is 1..N with no gap, and each stream's versions are 1..k with no gap;
- the views file, if there is one, as the fault left it: ``PRAGMA integrity_check`` and both
  FTS5 integrity checks pass, it is at a position p <= N that agrees with the log there, and
  every projection in it equals a rebuild of the log's first p events (the projector commits
  whole batches; a crash leaves the views behind the log, never beside it);
- a fresh ``CheckpointManager`` opens the store, its views catch up with the log, and
  ``verify_log`` re-hashes all N events: ok;
- every live checkpoint's stored checksum matches its decrypted, decompressed snapshot;
- every projection, caught up, equals a rebuild from the log (the view tables, the FTS content
  and index);
- every acknowledged create is present with the checksum its reply carried, and every
  acknowledged delete is absent.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from conftest import caught_up, dump_projections, dump_views, views_file
from daemon.serving import command_name, wait_gone

from checkpointd import CheckpointManager
from checkpointd.projections import Projector, stored_position
from checkpointd.storage.schema import create_views
from checkpointd.views import tail


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

    The store must not be open elsewhere. It is left as a clean restart leaves it (the views
    caught up; the rebuild it runs writes the same rows back).
    """
    acked = dict(acked or {})
    seqs, versions = file_checks(db_path)
    assert seqs == list(range(1, len(seqs) + 1)), f"seq has gaps: {_gaps(seqs)}"
    for stream, numbers in versions.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{stream}: versions {numbers}"
    views_as_left(db_path, len(seqs))

    manager = CheckpointManager(
        database_path=str(db_path),
        encryption_key=encryption_key,
        encryption_old_keys=list(encryption_old_keys),
    )
    await manager.open()
    try:
        await manager.wait_for_views(manager.log_head)
        live = dump_projections(db_path)  # runs the FTS integrity checks too
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


def views_as_left(db_path: Path | str, head: int) -> int | None:
    """Check the views file as the fault left it (see the module docstring); its position, or
    None if there is no views file (the next open builds one from the log)."""
    path = views_file(db_path)
    if not os.path.exists(path):
        return None
    with closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        assert result == [("ok",)], f"views integrity_check: {result}"
        position = stored_position(conn)
        meta = dict(conn.execute("SELECT key, value FROM views_meta").fetchall())
    assert position <= head, f"the views are at {position}, past the log's head {head}"
    if position:
        with closing(sqlite3.connect(db_path)) as conn:
            row = conn.execute("SELECT hash FROM events WHERE seq = ?", (position,)).fetchone()
        assert row is not None, f"the views are at {position}, an event the log lacks"
        assert meta.get("position_hash") == bytes(row[0]), f"the views disagree at {position}"
    left = dump_views(path)  # runs the FTS integrity checks too
    fresh = f"{db_path}.oracle-prefix"
    tail.remove_files(fresh)
    try:
        with closing(tail.connect(fresh, str(db_path))) as conn:
            conn.execute("BEGIN")
            create_views(conn)
            conn.execute("COMMIT")
            if position:
                tail.step(conn, Projector(fts_enabled=bool(meta.get("fts", 1))), limit=position)
        prefix = dump_views(fresh)
    finally:
        tail.remove_files(fresh)
    assert left == prefix, (
        f"the views as left (at {position} of {head}): a projection differs from a rebuild"
        f" of the log's first {position} events"
    )
    return position


def log_and_views(db_path: Path | str) -> sqlite3.Connection:
    """A connection to the log with the views file attached as ``views`` once the views have
    caught up with it: a query may name the tables of both (a view table's name is the views'
    own, the log has none of them)."""
    caught_up(db_path)
    conn = sqlite3.connect(db_path, timeout=30)
    conn.execute("ATTACH DATABASE ? AS views", (views_file(db_path),))
    return conn


def wait_for_children(children: Mapping[int, str]) -> None:
    """Wait until every child a killed daemon had (its projector process) has exited.

    SIGKILL does not reach a child; the projector notices that its owner is gone and stops
    between two batches. Until then it may still write the views: no check of the store, and
    no next daemon, should start before.
    """
    left = [pid for pid, name in children.items() if command_name(pid) == name]
    still = [pid for pid in left if not wait_gone(pid)]
    assert not still, f"processes of the killed daemon still run: {still}"


def _gaps(seqs: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1][:10]
