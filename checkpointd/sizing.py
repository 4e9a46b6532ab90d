"""A cheap guess whether a JSON-like value is big to encode, whatever its size or shape.

Worker threads take encoding and decoding that would hold up the event loop or the writer
thread; for a small value the hop costs more than the work. ``looks_big`` tells them apart by
a walk that stops as soon as it knows, so the guess itself never grows with the value.
"""

from __future__ import annotations

from collections.abc import Mapping

BIG_TEXT = 64 * 1024
"""Characters of strings (and bytes) past which a value looks big."""

BIG_COUNT = 2000
"""Values held by containers past which a value looks big."""


_TEXT = (str, bytes)  # tuples: isinstance checks them in C, unlike a union or an ABC
_SEQUENCES = (list, tuple)


def looks_big(value: object) -> bool:
    """Whether encoding ``value`` would take noticeably long (more than about a millisecond).

    True once the strings seen total more than ``BIG_TEXT`` characters or the containers seen
    hold more than ``BIG_COUNT`` values, at any depth. The walk stops there, so it costs about
    the same for a value of any size or shape.
    """
    text = values = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        # Numbers first, then concrete types: the Mapping ABC check costs several times more,
        # and this walk runs on the event loop for every create.
        if kind is int or kind is float or kind is bool or item is None:
            continue
        if isinstance(item, _TEXT):
            text += len(item)
            if text > BIG_TEXT:
                return True
        elif isinstance(item, _SEQUENCES):
            values += len(item)
            if values > BIG_COUNT:
                return True
            extend(item)
        elif isinstance(item, Mapping):
            values += len(item)
            if values > BIG_COUNT:
                return True
            extend(item.keys())
            extend(item.values())
    return False
