"""Read-your-writes between the log and the views: the log position a call answered at.

The log is written first and the views follow it (``checkpointd.views``), so every call knows a
log position ``seq``: a write the seq of the last event it appended (or, appending nothing, the
log head when it ran); a read the position the views had reached when it answered, which is at
least the log head observed when it began. The values live in context variables, per asyncio
task, so the service that called the manager can put them on its reply (``Checkpointd-Seq``) and
take a floor from the request (``Checkpointd-Min-Seq``) without threading them through every
method.
"""

from __future__ import annotations

from contextvars import ContextVar

answered_at: ContextVar[int] = ContextVar("checkpointd_answered_at", default=0)
"""The log position the current task's last call answered at (0: none yet)."""

min_seq: ContextVar[int] = ContextVar("checkpointd_min_seq", default=0)
"""A floor for the current task's reads: they wait until the views reach at least this seq."""


def answered(seq: int) -> None:
    """Record the position a call answered at (the service reads it for its reply)."""
    answered_at.set(seq)
