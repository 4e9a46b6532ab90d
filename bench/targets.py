"""The targets of the log/views split, each beside its figure from this run: PASS or MISS.

Every target is a ratio (or a bound) between figures of the same ``python -m bench`` run, so a
noisy machine moves both sides together. The figures come from the workloads' tables, found by
their ``key`` and row; a target whose workload did not run (``--only``) or failed shows "not
measured".
The create, NATS and lag targets are checked once per ``Config.projector`` setting.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import Listing, Row, Table
from bench.stores import bare_sqlite, eventsourcing_sqlite, langgraph_sqlite, ours
from bench.timing import Figure
from bench.workloads import nats as nats_workload

REBUILD_AT = 1_000_000  # the rebuild target's size, in events
PEER_NAMES = (langgraph_sqlite.NAME, eventsourcing_sqlite.NAME)


@dataclass(frozen=True, slots=True)
class Check:
    """A figure against its bound: ``at_least`` (figure >= bound) or at most."""

    target: str
    value: float | None
    bound: float
    at_least: bool
    shown: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        ok = (operator.ge if self.at_least else operator.le)(self.value, self.bound)
        return "PASS" if ok else "MISS"

    def row(self) -> dict[str, Any]:
        sign = ">=" if self.at_least else "<="
        return {
            "target": self.target,
            "bound": f"{sign} {self.bound:,g}",
            "figure": "-" if self.value is None else _number(self.value),
            "verdict": self.verdict,
            "from": self.shown,
            "note": self.note,
            "value": self.value,  # the JSON's: the figure and the bound as numbers
            "limit": self.bound,
        }


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"


class Figures:
    """The tables of one run, by key."""

    def __init__(self, tables: Sequence[Table | Listing]) -> None:
        self.tables = {t.key: t for t in tables if t.key}

    def row(self, key: str, store: str, **extra: Any) -> Row | None:
        table = self.tables.get(key)
        return table.row(store, **extra) if isinstance(table, Table) else None

    def listing(self, key: str) -> Listing | None:
        table = self.tables.get(key)
        return table if isinstance(table, Listing) else None


@dataclass(frozen=True, slots=True)
class Measure:
    """What a ratio divides (creates/s or p50 ms) and how a row's figure is shown."""

    value: Callable[[Figure], float]
    show: Callable[[Figure], str]


RATE = Measure(lambda f: f.per_second, lambda f: f"{f.per_second:,.0f}/s")
P50 = Measure(lambda f: f.p50_ms or 0.0, lambda f: f"p50 {f.p50_ms or 0.0:.3f} ms")
Pair = tuple[Row | None, Row | None]


def ratio(target: str, pair: Pair, bound: float, *, at_least: bool, measure: Measure) -> Check:
    """``mine / theirs`` in ``measure`` against ``bound``; not measured if a row is missing."""
    mine, theirs = (row.figure if row else None for row in pair)
    if mine is None or theirs is None or pair[1] is None:
        return Check(target, None, bound, at_least)
    shown = f"{measure.show(mine)} / {measure.show(theirs)} ({pair[1].store})"
    return Check(target, measure.value(mine) / measure.value(theirs), bound, at_least, shown)


def creates(figures: Figures, projector: str) -> list[Check]:
    me = ours.label(projector)
    one = {name: figures.row("create-1", name) for name in (me, *PEER_NAMES, bare_sqlite.NAME)}
    many = {name: figures.row("create-64", name) for name in (me, *PEER_NAMES)}
    peers = [row for row in (many[name] for name in PEER_NAMES) if row and row.figure]
    better = None
    if len(peers) == len(PEER_NAMES):
        better = max(peers, key=lambda row: row.figure.per_second if row.figure else 0.0)
    tag = f"projector={projector}"
    return [
        ratio(
            f"creates, 1 caller, / eventsourcing ({tag})",
            (one[me], one[eventsourcing_sqlite.NAME]),
            1.0,
            at_least=True,
            measure=RATE,
        ),
        ratio(
            f"creates, 1 caller, / LangGraph ({tag})",
            (one[me], one[langgraph_sqlite.NAME]),
            1.5,
            at_least=True,
            measure=RATE,
        ),
        ratio(
            f"creates, 1 caller, p50 / bare SQLite p50, 1 commit per insert ({tag})",
            (one[me], one[bare_sqlite.NAME]),
            2.0,
            at_least=False,
            measure=P50,
        ),
        ratio(
            f"creates, 64 callers, / the better peer ({tag})",
            (many[me], better),
            5.0,
            at_least=True,
            measure=RATE,
        ),
    ]


def nats(figures: Figures, projector: str) -> list[Check]:
    tag = f"projector={projector}"

    def pair(concurrency: int) -> Pair:
        key = f"nats-{concurrency}-{projector}"
        return figures.row(key, "checkpointd over NATS"), figures.row(key, nats_workload.IN_PROCESS)

    return [
        ratio(
            f"creates over NATS, 64 in flight, / in-process 64 callers ({tag})",
            pair(64),
            0.8,
            at_least=True,
            measure=RATE,
        ),
        ratio(
            f"creates over NATS, 1 in flight, p50 / in-process p50 ({tag})",
            pair(1),
            2.0,
            at_least=False,
            measure=P50,
        ),
    ]


def lag(figures: Figures, projector: str) -> Check:
    row = figures.row("lag", f"projector={projector}")
    target = f"projection lag p99 under 64 callers creating, ms (projector={projector})"
    if row is None or row.figure is None:
        return Check(target, None, 50.0, False)
    shown = f"p50 {row.figure.p50_ms:.1f} ms at {row.figure.per_second:,.0f} creates/s"
    return Check(target, row.figure.p99_ms, 50.0, False, shown)


def rebuild(figures: Figures) -> list[Check]:
    checks = []
    for number, name in ((1, "first pass"), (2, "second pass, log cached")):
        target = f"rebuild of the views from the log, events/s ({name})"
        row = figures.row("replay", ours.NAME, rebuild_pass=number)
        if row is None or row.figure is None:
            checks.append(Check(target, None, 100_000, True))
            continue
        events = row.figure.ops
        note = "" if events >= REBUILD_AT else f"target is at 1M events; indicative at {events:,}"
        shown = f"{events:,} events in {row.figure.seconds:.2f} s"
        checks.append(Check(target, row.figure.per_second, 100_000, True, shown, note))
    return checks


def storage(figures: Figures) -> Check:
    target = "log bytes per 1 KB checkpoint / the smaller peer's bytes per checkpoint"
    listing = figures.listing("storage")
    if listing is None:
        return Check(target, None, 1.0, False)
    populated = "populated database (defaults)"
    rows = [r for r in listing.rows if r["setting"] == populated]
    log = next((r for r in rows if r["store"] == ours.NAME and r["part"] == "log"), None)
    peers = [r for r in rows if r["store"] in PEER_NAMES]
    if log is None or len(peers) != len(PEER_NAMES):
        return Check(target, None, 1.0, False)
    smaller = min(peers, key=lambda r: float(r["bytes/checkpoint"]))
    mine, theirs = float(log["bytes/checkpoint"]), float(smaller["bytes/checkpoint"])
    shown = f"{mine:,.0f} / {theirs:,.0f} B ({smaller['store']}), {log['checkpoints']:,} stored"
    return Check(target, mine / theirs, 1.0, False, shown, "views file apart; see storage")


def checks(tables: Sequence[Table | Listing]) -> list[Check]:
    figures = Figures(tables)
    found: list[Check] = []
    for projector in ours.PROJECTORS:
        found += creates(figures, projector)
    for projector in ours.PROJECTORS:
        found += nats(figures, projector)
    found += [lag(figures, projector) for projector in ours.PROJECTORS]
    found += rebuild(figures)
    found.append(storage(figures))
    return found


def listing(tables: Sequence[Table | Listing]) -> Listing:
    """The targets as a table: each bound, this run's figure, PASS or MISS."""
    result = Listing(
        "targets of the log/views split (figures from this run)",
        ["target", "bound", "figure", "verdict", "from", "note"],
        key="targets",
        left=("target", "from", "note"),
    )
    result.rows = [check.row() for check in checks(tables)]
    result.notes.append(
        "figure: the first figure of 'from' over the second (or the figure itself), all from this"
        " run; one run on a shared machine is one sample: see bench/RESULTS.md for the spread"
    )
    return result
