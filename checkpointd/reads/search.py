"""Search: FTS5 over name, description, tags, feature, author, workflowId, stepId, with filters.

User text becomes quoted terms (``checkpointd.search.terms``), so FTS syntax never reaches
MATCH. The cost of a very common term is bounded: only the newest ``CANDIDATES`` text matches
are considered (FTS5 walks its index newest-first and stops), then filtered and ranked, so
``total`` counts at most that many. Without text (an empty query, or ``*``), search lists the
newest checkpoints matching the filters (at most ``CANDIDATES``); text without an indexable term
(``:``, an emoji) matches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from checkpointd.clock import format_timestamp, parse_timestamp
from checkpointd.errors import InvalidRequestError
from checkpointd.models import Checkpoint, Page, Priority
from checkpointd.projections.checkpoints import COLUMNS
from checkpointd.requests import non_negative_int, opt_text, reject_unknown, text
from checkpointd.rows import checkpoint_from_row
from checkpointd.search.terms import build_match

CANDIDATES = 10_000
MAX_PAGE_SIZE = 1000
_MAX_VALUES = 64
_SORT_COLUMNS = {"timestamp": "c.timestamp", "name": "c.name", "size": "c.size"}
_FIELDS = frozenset({"query", "limit", "filters", "sorting", "pagination"})
_FILTERS = frozenset(
    {"feature", "priority", "tags", "branches", "sessionId", "author", "dateRange"}
)
_LIST_ALL = frozenset({"", "*"})  # queries that list by the filters alone


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A validated search: text, filters, sorting and one page."""

    query: str
    features: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    branches: tuple[str, ...] = ()
    session_id: str | None = None
    author: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None
    sort: str = "relevance"
    descending: bool = True
    page: int = 1
    page_size: int = 20

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SearchRequest:
        """``{query, limit?}`` or ``{query, filters?, sorting?, pagination?}``.

        Raises:
            InvalidRequestError: an unknown field, a wrong type, a page size over 1000.
        """
        reject_unknown(data, _FIELDS, "search")
        query = data.get("query", "")
        if not isinstance(query, str):
            raise InvalidRequestError("expected a string", field="query")
        filters = _mapping(data.get("filters"), "filters", _FILTERS)
        sorting = _mapping(data.get("sorting"), "sorting", frozenset({"field", "direction"}))
        pagination = _mapping(data.get("pagination"), "pagination", frozenset({"page", "pageSize"}))
        page, page_size = _page(data.get("limit"), pagination)
        date_range = _mapping(filters.get("dateRange"), "dateRange", frozenset({"from", "to"}))
        return cls(
            query=query,
            features=_strings(filters.get("feature"), "filters.feature"),
            priorities=_priorities(filters.get("priority")),
            tags=_strings(filters.get("tags"), "filters.tags"),
            branches=_strings(filters.get("branches"), "filters.branches"),
            session_id=opt_text(filters.get("sessionId"), "filters.sessionId"),
            author=opt_text(filters.get("author"), "filters.author"),
            date_from=_opt_time(date_range.get("from"), "dateRange.from"),
            date_to=_opt_time(date_range.get("to"), "dateRange.to"),
            sort=_sort_field(sorting.get("field", "relevance")),
            descending=_descending(sorting.get("direction", "desc")),
            page=page,
            page_size=page_size,
        )

    @property
    def has_text(self) -> bool:
        """Whether this is a text search (anything but an empty query or ``*``)."""
        return self.query.strip() not in _LIST_ALL


def build_sql(request: SearchRequest) -> tuple[str, list[Any]]:
    """The one statement that returns a page of ``(row..., score, total)``."""
    hits, where, args, scored = _matching(request)
    cols = ", ".join(f"c.{c}" for c in COLUMNS)
    sql = (
        f"{hits} SELECT {cols}, h.score, count(*) OVER ()"
        f" FROM hits h JOIN checkpoints c ON c.seq = h.seq WHERE {where}"
        f" ORDER BY {_order(request, has_score=scored)} LIMIT ? OFFSET ?"
    )
    offset = (request.page - 1) * request.page_size
    return sql, [*args, request.page_size, offset]


def build_count_sql(request: SearchRequest) -> tuple[str, list[Any]]:
    """The statement counting every match (for a page past the last, which has no rows)."""
    hits, where, args, _ = _matching(request)
    sql = f"{hits} SELECT count(*) FROM hits h JOIN checkpoints c ON c.seq = h.seq WHERE {where}"
    return sql, args


def _matching(request: SearchRequest) -> tuple[str, str, list[Any], bool]:
    """``WITH hits AS (...)``, the outer filter, their arguments, and whether rows are scored."""
    conditions, args = _filters(request)
    match = build_match(request.query)
    if match is None and request.has_text:  # text, but no term the index could hold
        return "WITH hits AS (SELECT NULL AS seq, NULL AS score LIMIT 0)", "1", [], False
    if match is None:
        where = " AND ".join(conditions) or "1"
        hits = (
            f"WITH hits AS (SELECT c.seq AS seq, NULL AS score FROM checkpoints c WHERE {where}"
            " ORDER BY c.timestamp DESC, c.seq DESC LIMIT ?)"
        )
        return hits, "1", [*args, CANDIDATES], False
    # FTS5 walks the term's index newest-first and stops after CANDIDATES rows, so neither a
    # common term nor a selective filter on it can make the query scan everything.
    hits = (
        "WITH hits AS (SELECT rowid AS seq, bm25(checkpoints_fts) AS score FROM checkpoints_fts"
        " WHERE checkpoints_fts MATCH ? ORDER BY rowid DESC LIMIT ?)"
    )
    return hits, " AND ".join(conditions) or "1", [match.expression, CANDIDATES, *args], True


def page_from_rows(request: SearchRequest, rows: Sequence[Sequence[Any]]) -> Page:
    """The Page (with scores: higher is more relevant) from ``build_sql``'s rows."""
    items: list[Checkpoint] = []
    scores: list[float | None] = []
    width = len(COLUMNS)
    for values in rows:
        items.append(
            checkpoint_from_row(dict(zip(COLUMNS, values[:width], strict=True)), snapshot=None)
        )
        score = values[width]
        scores.append(None if score is None else -float(score))
    total = int(rows[0][width + 1]) if rows else 0
    return Page(
        items=tuple(items),
        total=total,
        page=request.page,
        page_size=request.page_size,
        scores=tuple(scores),
    )


def _filters(request: SearchRequest) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    args: list[Any] = []
    if request.features:
        conditions.append(f"c.feature IN ({', '.join('?' * len(request.features))})")
        args.extend(request.features)
    if request.priorities:
        conditions.append(f"c.priority IN ({', '.join('?' * len(request.priorities))})")
        args.extend(request.priorities)
    for tag in request.tags:
        conditions.append("EXISTS (SELECT 1 FROM json_each(c.metadata, '$.tags') WHERE value = ?)")
        args.append(tag)
    for branch in request.branches:
        conditions.append("EXISTS (SELECT 1 FROM json_each(c.branches) WHERE value = ?)")
        args.append(branch)
    for column, value in (("session_id", request.session_id), ("author", request.author)):
        if value is not None:
            conditions.append(f"c.{column} = ?")
            args.append(value)
    if request.date_from is not None:
        conditions.append("c.timestamp >= ?")
        args.append(format_timestamp(request.date_from))
    if request.date_to is not None:
        conditions.append("c.timestamp <= ?")
        args.append(format_timestamp(request.date_to))
    return conditions, args


def _order(request: SearchRequest, *, has_score: bool) -> str:
    if request.sort == "relevance":
        # bm25: lower is better. Without text, relevance means newest first.
        return "h.score ASC, c.seq DESC" if has_score else "c.timestamp DESC, c.seq DESC"
    direction = "DESC" if request.descending else "ASC"
    return f"{_SORT_COLUMNS[request.sort]} {direction}, c.seq {direction}"


def _mapping(value: Any, field: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", field=field)
    reject_unknown(value, allowed, field, field=field)
    return value


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or len(value) > _MAX_VALUES:
        raise InvalidRequestError(f"expected a list of at most {_MAX_VALUES} strings", field=field)
    return tuple(text(item, field) for item in value)


def _priorities(value: Any) -> tuple[str, ...]:
    values = _strings(value, "filters.priority")
    try:
        return tuple(Priority(v).value for v in values)
    except ValueError:
        allowed = ", ".join(p.value for p in Priority)
        raise InvalidRequestError(f"must be {allowed}", field="filters.priority") from None


def _opt_time(value: Any, field: str) -> datetime | None:
    return None if value is None else parse_timestamp(value, field=field)


def _sort_field(value: Any) -> str:
    if value not in ("relevance", *_SORT_COLUMNS):
        raise InvalidRequestError(
            "must be relevance, timestamp, name or size", field="sorting.field"
        )
    return str(value)


def _descending(value: Any) -> bool:
    if not isinstance(value, str) or value.lower() not in ("asc", "desc"):
        raise InvalidRequestError("must be asc or desc", field="sorting.direction")
    return value.lower() == "desc"


def _page(limit: Any, pagination: Mapping[str, Any]) -> tuple[int, int]:
    if limit is not None and pagination:
        raise InvalidRequestError("give limit or pagination, not both")
    if limit is not None:
        page, size = 1, non_negative_int(limit, "limit")
    else:
        page = non_negative_int(pagination.get("page", 1), "pagination.page")
        size = non_negative_int(pagination.get("pageSize", 20), "pagination.pageSize")
    if page < 1:
        raise InvalidRequestError("pages start at 1", field="pagination.page")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"must be 1..{MAX_PAGE_SIZE}", field="pagination.pageSize")
    return page, size
