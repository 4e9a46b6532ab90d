"""One adapter per store, each driving the store through its own public API and defaults.

Every adapter has the same methods; the timed ones (``create``, ``latest``, ``list10``, ``get``)
are ``async`` where the store's API is and plain where it is synchronous, and the drivers in
``bench.timing`` run each kind in its own way. Untimed ones (``populate``, ``refs``) are always
``async``. ``create(i)`` writes checkpoint ``i`` of ``bench.data`` into writer session
``w-{i % 64}`` (so 64 callers rarely share a session); ``populate`` writes checkpoints into their
``bench.data.session_of`` sessions.
"""

WRITER_SESSIONS = 64


def writer_session(i: int) -> str:
    return f"w-{i % WRITER_SESSIONS}"
