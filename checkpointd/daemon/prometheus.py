"""The daemon's metrics in the Prometheus text format (``/metrics``), with ``prometheus_client``.

Each daemon has a registry of its own (never the library's global one). Requests are counted as
they are answered (``observe``, which the service's ``RequestMetrics`` calls); the store's
figures are read when a scrape comes (``refresh``), then written out by ``render``.

Metrics (all prefixed ``checkpointd_``):

- ``requests_total{endpoint,code}``: requests answered, by endpoint and status code (200, or
  the error's: 400, 404, 409, 413, 422, 500, 503);
- ``request_duration_seconds{endpoint}``: a histogram of the time to answer;
- ``log_head_seq``, ``views_seq`` and ``projection_lag_events``: the log's last ``seq``, the
  views' position and how far they are behind;
- ``checkpoints``, ``sessions``, ``snapshot_bytes{form="canonical"|"stored"}``: what is stored
  (as of the last scrape whose views caught up within a second);
- ``database_bytes{file="log"|"wal"|"views"}``: the files on disk;
- ``inflight_requests``, ``notification_backlog``, ``notifications_dropped_total``;
- ``transfers{direction}``, ``transfer_bytes{direction}`` and
  ``upload_chunks_refused_total``: chunked uploads and downloads held now;
- ``build_info{version}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from checkpointd import __version__
from checkpointd.errors import CheckpointError

if TYPE_CHECKING:
    from checkpointd.daemon.service import CheckpointService
    from checkpointd.manager import CheckpointManager

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format version 0.0.4, which every Prometheus reads."""

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STATS_WAIT = 1.0  # seconds a scrape waits for the views before it keeps the last totals


class PrometheusExporter:
    """The metrics of one daemon: its manager, and its service once that serves (``service``)."""

    def __init__(self, manager: CheckpointManager) -> None:
        self._manager = manager
        self.service: CheckpointService | None = None
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "checkpointd_requests",
            "Requests answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "checkpointd_request_duration_seconds",
            "Time from a request's arrival to its reply, by endpoint.",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._state = _State()
        self.registry.register(self._state)

    def observe(self, endpoint: str, seconds: float, code: str) -> None:
        """Count one answered request (``RequestMetrics`` calls it)."""
        self._requests.labels(endpoint, code).inc()
        self._latency.labels(endpoint).observe(seconds)

    async def refresh(self) -> None:
        """Read the store's figures for the next ``render``."""
        manager, figures = self._manager, self._state.figures
        try:
            await manager.wait_for_views(manager.log_head, within=_STATS_WAIT)
            stats = await manager.get_checkpoint_stats()
        except CheckpointError:
            pass  # the views are behind or closing: the last totals stand, the lag shows why
        else:
            figures.update(
                checkpoints=stats.total_checkpoints,
                sessions=len(stats.by_session),
                canonical=stats.total_size,
                stored=stats.stored_size,
            )
        head, views = manager.log_head, manager.views_position  # after the wait: the lag now
        figures.update(head=head, views=views, lag=max(0, head - views))
        log_path = os.fspath(manager.config.database_path)
        figures["files"] = {
            "log": _size(log_path),
            "wal": _size(f"{log_path}-wal"),
            "views": _size(manager.config.views_file),
        }
        service = self.service
        figures["service"] = None if service is None else service.figures()

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _State:
    """A collector of the figures ``refresh`` read, as gauges and counters."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        yield _gauge("build_info", "The running version.", {"version": __version__}, 1)
        yield _gauge("log_head_seq", "The seq of the last event in the log.", {}, f.get("head"))
        yield _gauge("views_seq", "The log position the views have reached.", {}, f.get("views"))
        yield _gauge(
            "projection_lag_events", "Events in the log the views have not applied.", {},
            f.get("lag"),
        )  # fmt: skip
        yield _gauge("checkpoints", "Checkpoints stored.", {}, f.get("checkpoints"))
        yield _gauge("sessions", "Sessions with checkpoints.", {}, f.get("sessions"))
        sizes = GaugeMetricFamily(
            "checkpointd_snapshot_bytes",
            "Bytes of the stored snapshots: canonical encoding, and as stored.",
            labels=["form"],
        )
        for form in ("canonical", "stored"):
            if f.get(form) is not None:
                sizes.add_metric([form], f[form])
        yield sizes
        files = GaugeMetricFamily(
            "checkpointd_database_bytes", "Bytes of the database files.", labels=["file"]
        )
        for name, size in f.get("files", {}).items():
            files.add_metric([name], size)
        yield files
        yield from _service(f.get("service"))


def _service(figures: dict[str, Any] | None) -> Iterator[Metric]:
    if figures is None:
        return
    notifications, transfers = figures["notifications"], figures["transfers"]
    yield _gauge("inflight_requests", "Requests being served now.", {}, figures["inflight"])
    yield _gauge(
        "notification_backlog", "Notifications committed but not yet published.", {},
        notifications["backlog"],
    )  # fmt: skip
    yield CounterMetricFamily(
        "checkpointd_notifications_dropped",
        "Notifications dropped because the backlog was full (subscribers fill the gap by seq).",
        value=notifications["dropped"],
    )
    held = GaugeMetricFamily(
        "checkpointd_transfers", "Chunked transfers held now.", labels=["direction"]
    )
    held.add_metric(["upload"], transfers["uploads"])
    held.add_metric(["download"], transfers["downloads"])
    yield held
    size = GaugeMetricFamily(
        "checkpointd_transfer_bytes", "Bytes held by chunked transfers.", labels=["direction"]
    )
    size.add_metric(["upload"], transfers["uploadBytes"])
    size.add_metric(["download"], transfers["downloadBytes"])
    yield size
    yield CounterMetricFamily(
        "checkpointd_upload_chunks_refused",
        "Upload chunks refused because a transfer bound was reached.",
        value=transfers["uploadChunksRefused"],
    )


def _gauge(name: str, text: str, labels: dict[str, str], value: float | None) -> Metric:
    family = GaugeMetricFamily(f"checkpointd_{name}", text, labels=list(labels))
    if value is not None:
        family.add_metric(list(labels.values()), value)
    return family


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
