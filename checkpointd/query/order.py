"""``orderBy`` compilation: sort keys in, the SQL of an ``ORDER BY`` clause out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from checkpointd.errors import InvalidRequestError
from checkpointd.query.columns import COLUMNS, DEFAULT_ORDER_BY, MAX_ORDER_KEYS
from checkpointd.query.diagnostics import shown

__all__ = ["compile_order_by"]

_DIRECTIONS = {"asc": "ASC", "desc": "DESC"}


def compile_order_by(
    order_by: Sequence[tuple[str, str]] | Sequence[Mapping[str, str]] | None,
) -> str:
    """Compile sort keys to the SQL of an ``ORDER BY`` clause (without the keywords).

    Accepts ``[("timestamp", "desc")]`` or the wire form ``[{"field": "timestamp",
    "direction": "DESC"}]`` (direction defaults to ascending). Fields are wire column names.
    Creation order (the rowid ``seq``) is appended with the last key's direction as a
    tie-breaker, so the order is total (not needed when sorting on ``id``).
    None or empty gives ``DEFAULT_ORDER_BY``.

    Raises:
        InvalidRequestError: an unknown field, a bad direction, a repeated field or more than
            ``MAX_ORDER_KEYS`` keys.
    """
    if order_by is None:
        return DEFAULT_ORDER_BY
    if isinstance(order_by, str | bytes | Mapping) or not isinstance(order_by, Sequence):
        raise InvalidRequestError("must be a list of sort keys", field="orderBy")
    if not order_by:
        return DEFAULT_ORDER_BY
    if len(order_by) > MAX_ORDER_KEYS:
        raise InvalidRequestError(f"more than {MAX_ORDER_KEYS} sort keys", field="orderBy")
    keys = [_order_key(item, index) for index, item in enumerate(order_by)]
    names = [name for name, _ in keys]
    if len(set(names)) != len(names):
        raise InvalidRequestError("a field is sorted on twice", field="orderBy")
    order = ", ".join(f"{COLUMNS[name].sql} {direction}" for name, direction in keys)
    if "id" in names:
        return order
    # The rowid (creation order) breaks ties: every index carries it, so SQLite can walk an
    # index in this order instead of sorting all matching rows.
    return f"{order}, seq {keys[-1][1]}"


def _order_key(item: object, index: int) -> tuple[str, str]:
    where = f"orderBy[{index}]"
    if isinstance(item, Mapping):
        if set(item) - {"field", "direction"}:
            raise InvalidRequestError("only 'field' and 'direction' are allowed", field=where)
        name, direction = item.get("field"), item.get("direction", "asc")
    elif isinstance(item, Sequence) and not isinstance(item, str | bytes) and len(item) == 2:
        name, direction = item
    else:
        raise InvalidRequestError("must be {field, direction} or (field, direction)", field=where)
    if not isinstance(name, str) or name not in COLUMNS:
        raise InvalidRequestError(f"unknown field {shown(name)}", field=where)
    if not isinstance(direction, str) or direction.lower() not in _DIRECTIONS:
        raise InvalidRequestError(
            f"direction must be asc or desc, not {shown(direction)}", field=where
        )
    return name, _DIRECTIONS[direction.lower()]
