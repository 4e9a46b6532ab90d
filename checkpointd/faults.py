"""Crash points: named places where a fault test may have the process die on the spot.

Test-only. ``CHECKPOINTD_CRASH_AT=<point>[@<n>][,...]`` arms points when the process starts;
the ``n``-th time (first by default) execution passes an armed point, the process sends itself
SIGKILL: no ``finally``, no flush, no close, as with a power cut to the process. Unset (always,
outside tests), ``reached`` is one lookup in an empty dict.

The points, in the order a write passes them:

``after-append-before-commit``
    A group's events and blobs are written to the log, COMMIT not yet issued.
``after-commit-before-reply``
    COMMIT returned; no caller has been told.
``after-reply-before-notify``
    The daemon's reply is flushed to NATS; the commit's notifications are not yet published.
``mid-cleanup``
    An expiry step committed; the next one not started.
``mid-rebuild``
    A rebuild has replayed events into its fresh views file, not yet committed.
``projector-mid-batch``
    The projector has applied a batch of events to the views, COMMIT not yet issued. Under the
    daemon the projector is a process of its own, and only it dies.
"""

from __future__ import annotations

import os
import signal

ENV = "CHECKPOINTD_CRASH_AT"
POINTS = frozenset(
    {
        "after-append-before-commit",
        "after-commit-before-reply",
        "after-reply-before-notify",
        "mid-cleanup",
        "mid-rebuild",
        "projector-mid-batch",
    }
)


def _armed(text: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("@")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown crash point {name!r}")
        armed[name] = int(count or 1)
    return armed


_countdown = _armed(os.environ.get(ENV, ""))


def reached(point: str) -> bool:
    """Count one passage of ``point``; True when the process should crash here now."""
    if not _countdown or point not in _countdown:
        return False
    _countdown[point] -= 1
    return _countdown[point] == 0


def crash() -> None:
    """Die now, as a SIGKILL from outside would kill the process."""
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(point: str) -> None:
    """Die here if ``point`` is armed and this is its passage."""
    if reached(point):
        crash()
