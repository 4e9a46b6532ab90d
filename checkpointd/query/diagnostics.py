"""How the query modules report a problem: an ``InvalidRequestError`` with a position."""

from __future__ import annotations

from typing import Protocol

from checkpointd.errors import InvalidRequestError

__all__ = ["Positioned", "filter_error", "shown"]


class Positioned(Protocol):
    """Anything that knows where in the filter text it came from: a token or a syntax node."""

    @property
    def position(self) -> int: ...


def filter_error(message: str, at: Positioned | int) -> InvalidRequestError:
    """An error in the ``where`` field at ``at`` (a 0-based offset, or a token or node there)."""
    position = at if isinstance(at, int) else at.position
    return InvalidRequestError(message, field="where", position=position)


def shown(value: object, limit: int = 40) -> str:
    """``value`` as an error message quotes it: strings quoted, anything cut to ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text) if isinstance(value, str) else text
