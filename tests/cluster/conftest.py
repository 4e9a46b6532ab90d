"""Fixtures for the cluster's tests: three nats-servers with JetStream, three daemons on them.

``nats_cluster`` is three nats-servers clustered on loopback ports (JetStream with
``sync_interval: always``, a store directory each), started once for the tests of this
directory, which then share it. ``cluster`` is three ``checkpointd serve`` processes on it with
the jetstream log backend, on a stream and subject prefix of their own, also started once.
Tests that kill or pause processes make clusters of their own
(``natscluster.running_cluster``, ``checkpointcluster.checkpoint_cluster``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import TEST_KEY

from .checkpointcluster import CheckpointCluster, checkpoint_cluster
from .natscluster import NatsCluster, running_cluster


@pytest.fixture(scope="package")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three clustered nats-servers with JetStream (``sync_interval: always``), shared."""
    with running_cluster(tmp_path_factory.mktemp("nats-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="package")
def cluster(
    nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CheckpointCluster]:
    """Three daemons on ``nats_cluster`` sharing one JetStream log (and one store)."""
    root = tmp_path_factory.mktemp("daemons")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("CHECKPOINTD_")}
    try:
        # The key the contract tests' manager holds: a create may ask for encryption.
        with checkpoint_cluster(nats_cluster, root, {"encryption_key": TEST_KEY}) as started:
            yield started
    finally:
        os.environ.update(saved)
