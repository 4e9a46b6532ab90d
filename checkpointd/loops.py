"""Background loops: thin drivers that run a public step function every interval.

The step does the work and tests call it directly; a loop only waits, runs it again, and logs a
failure without stopping. ``CheckpointManager`` owns its cleanup and metrics loops; the daemon
owns its metrics publishing and watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable

import structlog

from checkpointd.errors import CheckpointError

log = structlog.get_logger("checkpointd")


async def every(
    interval: float, step: Callable[[], Awaitable[object]], what: str, *, now: bool = False
) -> None:
    """Run ``step`` every ``interval`` seconds (first at once if ``now``) until cancelled.

    A failing step is logged and the loop goes on.
    """
    first = True
    while True:
        if not (first and now):
            await asyncio.sleep(interval)
        first = False
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except CheckpointError as exc:
            log.warning(f"{what} failed", code=exc.code, error=exc.message)
        except Exception:
            log.exception(f"{what} failed")


class Background:
    """The loops an owner runs while open: started by ``every``, cancelled by ``stop``.

    A loop holds its owner's method weakly, so an owner dropped without being closed can still be
    collected (and warn); its ``__del__`` then calls ``abandon``.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def every(self, interval: float, method: Callable[[], Awaitable[object]], what: str) -> None:
        """Run ``method`` every ``interval`` seconds, the first time one interval from now."""
        step = _weakly(method)
        task = asyncio.get_running_loop().create_task(
            every(interval, step, what), name=f"checkpointd {what}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel every loop and wait for it to end. Idempotent."""
        tasks = tuple(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def abandon(self) -> None:
        """Cancel every loop from any thread, without waiting (for an owner's ``__del__``)."""
        for task in tuple(self._tasks):
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs it
                task.get_loop().call_soon_threadsafe(task.cancel)


def _weakly(method: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
    ref = weakref.WeakMethod(method)

    async def step() -> object:
        bound = ref()
        return None if bound is None else await bound()

    return step
