"""What the verbs print: ``--json`` for scripts, else fields, tables and hints for people.

The JSON is the API's result in its wire form, unchanged. The human form rounds what people
read at a glance (sizes in KB/MB, scores to three digits), shortens long cells, and says how to
get the rest when a page is not the last.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

SUMMARY = ["id", "name", "sessionId", "version", "size", "storedSize", "timestamp"]
COLUMNS = ["id", "name", "sessionId", "version", "size", "timestamp"]
SIZES = frozenset({"size", "storedSize", "totalSize", "averageSize"})
_WIDTH = 40
_STATE_LINES = 12
_UNITS = ("B", "KB", "MB", "GB", "TB")


def emit(out: TextIO, args: argparse.Namespace, data: Any, human: Callable[[Any], object]) -> None:
    """``data`` as one line of JSON with ``--json``, else through ``human``."""
    if args.json:
        out.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    else:
        human(data)


def fields(out: TextIO, data: Mapping[str, Any], keys: Sequence[str]) -> None:
    """``key  value`` lines for the ``keys`` present in ``data``, values in full."""
    width = max(len(key) for key in keys)
    for key in keys:
        if key in data:
            out.write(f"{key.ljust(width)}  {cell(data[key], key, wide=True)}\n")


def page(out: TextIO, data: Mapping[str, Any], columns: Sequence[str]) -> None:
    """A page's items as a table, then ``(n of total, page p)`` and how to get the next page."""
    items = data["items"]
    table(out, items, columns)
    footer = f"({len(items)} of {data['total']}, page {data['page']}"
    rest = data["total"] - (data["page"] - 1) * data["pageSize"] - len(items)
    if items and rest > 0:
        footer += f"; {rest} more: --page {data['page'] + 1}"
    out.write(footer + ")\n")


def table(out: TextIO, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows under a header line, in aligned columns; long cells shortened."""
    cells = [[cell(row.get(column), column) for column in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def cell(value: Any, column: str | None = None, *, wide: bool = False) -> str:
    """One value as text: ``-`` for none, sizes in units, numbers rounded, JSON otherwise."""
    if value is None:
        return "-"
    if column in SIZES and isinstance(value, int | float) and not isinstance(value, bool):
        return size(value)
    if isinstance(value, float):
        return number(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if wide or len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def size(n: float) -> str:
    """Bytes for people: ``512 B``, ``90.9 KB``, ``1.5 MB`` (powers of 1000)."""
    value, unit = float(n), _UNITS[0]
    for unit in _UNITS:
        if abs(value) < 999.95 or unit == _UNITS[-1]:
            break
        value /= 1000
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def number(value: float) -> str:
    """A float for people: three significant digits and never an exponent."""
    if value == 0:
        return "0"
    if abs(value) < 0.001:
        return "<0.001" if value > 0 else ">-0.001"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def state_view(out: TextIO, label: str, state: Any, *, limit: int | None = _STATE_LINES) -> None:
    """``label:`` then the state as indented JSON, cut after ``limit`` lines (None: all)."""
    lines = json.dumps(state, indent=2, default=str, ensure_ascii=False).splitlines()
    out.write(f"{label}:\n")
    shown = lines if limit is None else [_short(line) for line in lines[:limit]]
    out.write("".join(f"  {line}\n" for line in shown))
    if len(lines) > len(shown):
        out.write(f"  … {len(lines) - len(shown)} more lines (--json prints it all)\n")


def _short(line: str, width: int = 100) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def as_json_cells(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """The rows with ``columns`` as JSON text, so a string shows quoted and "1" differs from 1
    (diffs and conflicts compare values of any type)."""
    return [
        {
            k: json.dumps(v, default=str, ensure_ascii=False) if k in columns else v
            for k, v in row.items()
        }
        for row in rows
    ]
