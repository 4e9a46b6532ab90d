"""Walking every page of a paged read: the ``iter_*`` async iterators of manager and client.

Reads return one page (a list 100 checkpoints by default, history 100 events); these walk all of
them, one page at a time, through the same public read methods, so ``CheckpointManager`` and
``CheckpointClient`` share them.

Lists are paged by offset: a checkpoint created or deleted during the walk may shift the others
across a page boundary. A checkpoint seen on the page before is not yielded again; one shifted
onto a page already read is missed. History is paged by ``seq`` and sees every event once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from checkpointd.errors import InvalidRequestError
from checkpointd.models import Checkpoint, Event, History, Page
from checkpointd.requests import request_mapping

ListRead = Callable[..., Awaitable[Page]]


def walk_list(
    read: ListRead, key: str, options: Mapping[str, Any] | None, kwargs: Mapping[str, Any]
) -> AsyncIterator[Checkpoint]:
    """Every checkpoint ``read(key, options)`` lists, from its ``page`` (default 1) on."""
    if options is not None:
        if not isinstance(options, Mapping):
            raise InvalidRequestError("expected an object", field="options")
        pagination = options.get("pagination") or {}
        if not isinstance(pagination, Mapping):
            raise InvalidRequestError("expected an object", field="pagination")
        first = pagination.get("page", 1)

        def fetch(number: int) -> Awaitable[Page]:
            return read(key, {**options, "pagination": {**pagination, "page": number}})

    else:
        first = kwargs.get("page", 1)

        def fetch(number: int) -> Awaitable[Page]:
            return read(key, **{**kwargs, "page": number})

    return _checkpoints(fetch, first)


async def _checkpoints(
    fetch: Callable[[int], Awaitable[Page]], first: Any
) -> AsyncIterator[Checkpoint]:
    number = first
    previous: set[str] = set()
    while True:
        page = await fetch(number)
        for checkpoint in page:
            if checkpoint.id not in previous:
                yield checkpoint
        if not page.items or page.page * page.page_size >= page.total:
            return
        previous = {checkpoint.id for checkpoint in page}
        number = page.page + 1


def walk_history(
    read: Callable[[Mapping[str, Any]], Awaitable[History]],
    request: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
) -> AsyncIterator[Event]:
    """Every event ``read(request)`` pages through, following ``next`` to the end."""
    data = request_mapping(request, kwargs, "history")
    return _events(read, data)


async def _events(
    read: Callable[[Mapping[str, Any]], Awaitable[History]], data: dict[str, Any]
) -> AsyncIterator[Event]:
    while True:
        history = await read(data)
        for event in history.events:
            yield event
        if history.next is None:
            return
        data = {**data, "afterSeq": history.next}
