"""The operator's verbs: ``stats``, ``validate``, ``verify`` and ``rebuild``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from checkpointd.verbs import AddVerb, Store
from checkpointd.verbs import output as show


async def _stats(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    data = (await store.get_checkpoint_stats()).to_wire()

    def human(s: Mapping[str, Any]) -> None:
        show.fields(out, s, ["totalCheckpoints", "totalSize", "storedSize", "averageSize"])
        for key in ("byFeature", "byPriority"):
            if s[key]:
                out.write(f"{key}: " + ", ".join(f"{k}={v}" for k, v in s[key].items()) + "\n")
        out.write(f"sessions: {len(s['bySession'])}\n")
        for key in ("oldestCheckpoint", "newestCheckpoint"):
            if s.get(key):
                edge = s[key]
                out.write(f"{key}: {edge['id']} {edge['name']!r} {edge['timestamp']}\n")

    show.emit(out, args, data, human)


async def _validate(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    data = (await store.validate_checkpoint(args.id)).to_wire()

    def human(r: Mapping[str, Any]) -> None:
        show.fields(out, r, ["isValid", "checksumValid", "sizeMatches", "schemaValid"])
        for line in r["errors"]:
            out.write(f"error: {line}\n")
        for line in r["warnings"]:
            out.write(f"warning: {line}\n")

    show.emit(out, args, data, human)
    return 0 if data["isValid"] else 1


async def _verify(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    with Progress("verifying", await store.health()) as progress:
        result = await store.verify_log(progress=progress.update)
    data = result.to_wire()
    keys = ["ok", "events", "firstBadSeq", "signedSeq", "unsignedTail", "problem"]
    show.emit(out, args, data, lambda r: show.fields(out, r, keys))
    return 0 if result.ok else 1


async def _rebuild(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    with Progress("rebuilding", await store.health()) as progress:
        events = await store.rebuild(progress=progress.update)
    show.emit(out, args, {"events": events}, lambda r: show.fields(out, r, ["events"]))


class Progress:
    """A bar on stderr while long work runs (only on a terminal); ``update`` is thread-safe."""

    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self._what, self._total = what, max(total, 1)
        self._stream = sys.stderr if stream is None else stream
        self._on = self._stream.isatty()
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self.update(0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._on:
            self._stream.write("\n")
            self._stream.flush()

    def update(self, done: int) -> None:
        if not self._on:
            return
        share = min(done / self._total, 1.0)
        bar = "#" * int(share * 30)
        elapsed = time.monotonic() - self._started
        counts = f"{done:,}/{self._total:,} events"
        self._stream.write(f"\r{self._what} [{bar:<30}] {share:4.0%} {counts} {elapsed:.1f}s")
        self._stream.flush()


def register(add: AddVerb) -> None:
    """Declare the operator's verbs."""
    add("stats", _stats, "totals over all checkpoints")
    p = add("validate", _validate, "check a checkpoint's checksum, size and schema (1: invalid)")
    p.add_argument("id", help="the checkpoint's id")
    add("verify", _verify, "re-hash the whole event log (1: damaged)")
    add("rebuild", _rebuild, "rebuild every projection from the log")
