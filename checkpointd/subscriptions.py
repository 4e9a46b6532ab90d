"""In-process notifications: what the daemon publishes after a commit, for an embedded manager.

``CheckpointManager.notifications(type, session_id)`` gives the same stream as
``CheckpointClient.notifications``: ``async with`` subscribes, then ``async for`` yields a
``Notification`` per committed event that matches, in ``seq`` order. The bodies are built by the
daemon's own ``notifications()``, so in-process and over NATS they are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

from checkpointd.daemon.notifications import notifications
from checkpointd.errors import InvalidRequestError, UnavailableError
from checkpointd.models import Notification
from checkpointd.storage.writer import Committed

EVENT_TYPES = frozenset({"*", "created", "updated", "deleted", "expired", "restored", "writes"})
BACKLOG = 10_000
"""Notifications a stream holds for a subscriber that does not keep up; more are dropped."""

_END: Final = None  # queued when the manager closes: the iteration ends


class LocalNotificationStream:
    """An async iterator of Notification from an embedded manager; ``async with`` subscribes.

    A subscriber more than ``BACKLOG`` notifications behind misses the excess (counted in
    ``dropped``); the jump in ``seq`` shows it, and ``history(after_seq=...)`` fills it. The
    iteration ends when the manager closes.
    """

    def __init__(
        self,
        subscribe: Callable[[LocalNotificationStream], Callable[[], None]],
        event_type: str,
        session_id: str | None,
    ) -> None:
        if event_type not in EVENT_TYPES:
            raise InvalidRequestError(f"must be one of {', '.join(sorted(EVENT_TYPES))}")
        self._subscribe = subscribe
        self.event_type = event_type
        self.session_id = session_id
        self.dropped = 0
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue()
        self._unsubscribe: Callable[[], None] | None = None
        self._ended = False

    async def __aenter__(self) -> Self:
        self._unsubscribe = self._subscribe(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        if self._unsubscribe is None and not self._ended:
            raise UnavailableError("use 'async with' to subscribe first")
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(_END)  # every later call ends too
            raise StopAsyncIteration
        return item

    def on_commit(self, committed: list[Committed]) -> None:
        """The commit listener: queue the matching notifications (called on the event loop)."""
        for outgoing in notifications("checkpoint", committed):
            body = outgoing.body
            if self.event_type != "*" and body["type"] != self.event_type:
                continue
            if self.session_id is not None and body["sessionId"] != self.session_id:
                continue
            if self._queue.qsize() >= BACKLOG:
                self.dropped += 1
                continue
            self._queue.put_nowait(Notification.from_wire(body))

    def end(self) -> None:
        """The manager closed: the iteration ends after what is queued."""
        self._ended = True
        self._queue.put_nowait(_END)
