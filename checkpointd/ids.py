"""Time-sortable unique ids (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32).

Ids made in the same millisecond by one process stay ordered: the random part is incremented
instead of redrawn (the ULID "monotonic" rule), so ``id`` order equals creation order.
"""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


class _Monotonic:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0
        # Seeded once from the OS; ids need uniqueness, not secrecy, and a syscall per id
        # (which also releases the GIL) is measurable on the write path.
        self._random = random.Random(os.urandom(32))  # noqa: S311

    def next(self) -> int:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms <= self._last_ms:
                now_ms = self._last_ms
                self._last_random += 1
            else:
                self._last_ms = now_ms
                # Leave headroom so increments within one millisecond never overflow.
                self._last_random = self._random.getrandbits(_RANDOM_BITS - 1)
            return (now_ms << _RANDOM_BITS) | self._last_random


_GENERATOR = _Monotonic()
# A forked child must not repeat its parent's random sequence.
os.register_at_fork(after_in_child=_GENERATOR.reset)


# Every pair of characters, indexed by 10 bits: 13 lookups make an id instead of 26.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def new_id() -> str:
    """A new 26-character id, unique and sortable by creation time."""
    value = _GENERATOR.next()
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])
