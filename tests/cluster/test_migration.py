"""Moving a store from the embedded SQLite log to a cluster, as the README says to.

The single node's database, no longer served, goes into an empty stream with
``checkpointd stream-import``; three daemons started on that stream serve its checkpoints, and
``verify`` through them passes on the chain the file had; the export of a daemon's copy holds the
events and snapshots of the export taken from the file before the move (the signed heads are
each daemon's own).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from conftest import TEST_KEY
from daemon.serving import run_cli, toml_text

from checkpointd import CheckpointClient, CheckpointManager

from .checkpointcluster import STREAM_REPLICAS, checkpoint_cluster
from .natscluster import NatsCluster


def body(path: Path) -> list[str]:
    """An export's event and snapshot lines: not the first (it says when the export was taken),
    nor the signed heads (each daemon signs the heads of its own copy, with its own timestamps).
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["checkpointdExport"] == 1
    return [line for line in lines[1:] if not line.startswith('{"signedHead"')]


async def test_a_store_moved_into_a_stream_keeps_its_chain_and_its_checkpoints(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """After ``stream-import``, the cluster verifies the file's chain, exports the same events
    and snapshots, and serves the file's checkpoints, encrypted ones included."""
    old = tmp_path / "single" / "checkpointd.db"
    old.parent.mkdir()
    async with CheckpointManager(database_path=str(old), encryption_key=TEST_KEY) as single:
        made = [
            await single.create(
                name=f"before-{i}",
                session_id=f"s{i % 3}",
                snapshot={"step": i, "pad": "x" * (i * 4000)},
                branches=["main"],
                encrypted=i % 2 == 0,
            )
            for i in range(12)
        ]
        await single.delete_checkpoint(made[0].id)
    env = {"CHECKPOINTD_ENCRYPTION_KEY": TEST_KEY}
    exported = run_cli(
        "export", "--db", str(old), "--snapshots", "--output", "before.jsonl",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr

    stream = f"M{uuid.uuid4().hex[:10].upper()}"
    config = tmp_path / "cluster.toml"
    config.write_text(
        toml_text(
            {
                "log_backend": "jetstream",
                "jetstream_stream": stream,
                "jetstream_replicas": STREAM_REPLICAS,
                "nats": {"url": nats_cluster.url},
            }
        ),
        encoding="utf-8",
    )
    imported = run_cli("stream-import", "--config", str(config), "--db", str(old), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    again = run_cli("stream-import", "--config", str(config), "--db", str(old), cwd=tmp_path)
    assert again.returncode != 0, "a second import into a stream that is not empty"

    settings = {"encryption_key": TEST_KEY}
    with checkpoint_cluster(nats_cluster, tmp_path / "daemons", settings, stream=stream) as cluster:
        async with CheckpointClient(cluster.url, prefix=cluster.prefix) as client:
            for checkpoint in made[1:]:
                found = await client.get_checkpoint(checkpoint.id)
                assert found is not None
                assert (found.name, found.checksum) == (checkpoint.name, checkpoint.checksum)
            assert await client.get_checkpoint(made[0].id) is None
            verified = await client.verify_log()
            assert verified.ok, verified
    # ``export`` reads a database file: a daemon's copy, now that it has stopped.
    copy = str(cluster.daemons[1].db_path)
    after = run_cli(
        "export", "--db", copy, "--snapshots", "--output", "after.jsonl", cwd=tmp_path, env=env
    )
    assert after.returncode == 0, after.stderr
    assert body(tmp_path / "after.jsonl") == body(tmp_path / "before.jsonl")
