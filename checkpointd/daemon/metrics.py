"""Request figures the service records, and the document published on ``<prefix>.metrics``.

``RequestMetrics.observe`` is called once per answered request; ``collect`` (a public step the
daemon's loop and the tests call) turns the figures since the previous call into counts, rates
and latency percentiles, with the store's size and the log's position.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the manager imports this module for its own metrics()
    from checkpointd.manager import CheckpointManager

_SAMPLES = 10_000  # latencies kept per endpoint per interval (the newest)


@dataclass
class _Window:
    count: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))


Listener = Callable[[str, float, str], None]
"""Told of every answered request: its endpoint, seconds taken and status code (``"200"``)."""


class RequestMetrics:
    """Counts, errors and latencies per endpoint, since the last ``take()`` and in total.

    ``listeners`` (the Prometheus exporter) are told of each request as it is observed.
    """

    def __init__(self) -> None:
        self._window: dict[str, _Window] = {}
        self.total = 0
        self.total_errors = 0
        self.listeners: list[Listener] = []

    def observe(self, endpoint: str, seconds: float, *, error: bool, code: str = "200") -> None:
        for listener in self.listeners:
            listener(endpoint, seconds, code)
        window = self._window.get(endpoint)
        if window is None:
            window = self._window[endpoint] = _Window()
        window.count += 1
        window.latencies.append(seconds)
        self.total += 1
        if error:
            window.errors += 1
            self.total_errors += 1

    def take(self, elapsed: float) -> dict[str, dict[str, float | int]]:
        """Figures per endpoint since the previous call, which starts a new window."""
        window, self._window = self._window, {}
        figures: dict[str, dict[str, float | int]] = {}
        for endpoint, w in sorted(window.items()):
            ordered = sorted(w.latencies)
            figures[endpoint] = {
                "count": w.count,
                "errors": w.errors,
                "ratePerSecond": round(w.count / elapsed, 3) if elapsed > 0 else 0.0,
                "p50Ms": _ms(_percentile(ordered, 0.50)),
                "p99Ms": _ms(_percentile(ordered, 0.99)),
                "maxMs": _ms(ordered[-1]),
            }
        return figures


class MetricsCollector:
    """Builds one metrics document per call from the service's figures and the store."""

    def __init__(
        self,
        manager: CheckpointManager,
        requests: RequestMetrics,
        *,
        extra: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._manager = manager
        self._requests = requests
        self._extra = extra
        self._clock = clock
        self._since = clock()
        self._last_seq: int | None = None

    async def collect(self) -> dict[str, Any]:
        """The document for the interval since the previous call."""
        now = self._clock()
        elapsed, self._since = now - self._since, now
        seq = await self._manager.health()
        previous, self._last_seq = self._last_seq, seq
        stats = await self._manager.get_checkpoint_stats()
        path = os.fspath(self._manager.config.database_path)
        document: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "intervalSeconds": round(elapsed, 3),
            "requests": {
                "total": self._requests.total,
                "errors": self._requests.total_errors,
                "byEndpoint": self._requests.take(elapsed),
            },
            "events": {
                "lastSeq": seq,
                "viewsSeq": self._manager.views_position,  # the projector's position
                "viewsBehind": max(0, seq - self._manager.views_position),
                "ratePerSecond": 0.0
                if previous is None or elapsed <= 0
                else round((seq - previous) / elapsed, 3),
            },
            "checkpoints": {
                "total": stats.total_checkpoints,
                "totalSize": stats.total_size,
                "storedSize": stats.stored_size,
                "sessions": len(stats.by_session),
            },
            "database": {"bytes": _size(path), "walBytes": _size(path + "-wal")},
        }
        if self._extra is not None:
            document.update(self._extra())
        return document


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
