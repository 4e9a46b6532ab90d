"""The ``checkpointd`` command: ``serve``, ``config check|show`` and the store's verbs.

The verbs talk to a running daemon over NATS (``--nats-url``, else the configured or embedded
server's URL) or open a database file directly (``--db``), through the same API. Output is a
table for people, ``--json`` for scripts. Exit codes are documented in ``EXIT_CODES``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from checkpointd import __version__, logs
from checkpointd.client import CheckpointClient
from checkpointd.daemon import run
from checkpointd.daemon.settings import Settings, load
from checkpointd.errors import (
    CheckpointError,
    ConfigError,
    DatabaseInUseError,
    InvalidRequestError,
)
from checkpointd.manager import CheckpointManager
from checkpointd.transport import safe_url

EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "check failed (validate: invalid; verify: damaged log)": 1,
    "usage error": 2,
    "not found": 3,
    "conflict": 4,
    "invalid request or too large": 65,
    "integrity error (stored data damaged)": 66,
    "daemon or NATS unavailable": 69,
    "internal error": 70,
    "database in use by another checkpointd": 75,
    "configuration error": 78,
}
_BY_CODE = {
    "invalid": 65,
    "too_large": 65,
    "not_found": 3,
    "conflict": 4,
    "integrity": 66,
    "unavailable": 69,
    "internal": 70,
}
Store = CheckpointManager | CheckpointClient
Work = Callable[[Store, argparse.Namespace, TextIO], Awaitable[int | None]]
_CONNECT_WAIT = 3.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = load(args.config, flags=_flags(args))
    except ConfigError as exc:
        print(f"checkpointd: {exc.message}", file=sys.stderr)
        return run.EXIT_CONFIG
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    return handler(args, settings)


# -- serve and config ---------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    logs.configure(settings.daemon.log_level, settings.daemon.log_format)
    return run.run_serve(settings)


def _config(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "show":
        if args.json:
            print(json.dumps(settings.flat(), indent=2, default=list))
        else:
            sys.stdout.write(settings.to_toml())
        return 0
    where = args.config or "defaults and environment"
    print(f"config OK ({where}); database {settings.engine.database_path}; nats {_nats(settings)}")
    return 0


def _nats(settings: Settings) -> str:
    if settings.nats.url is not None:
        return safe_url(settings.nats.url)
    return f"embedded on {settings.nats.embedded_host}:{settings.nats.embedded_port}"


# -- the store's verbs --------------------------------------------------------------------


def _verb(
    work: Work,
) -> Callable[[argparse.Namespace, Settings], int]:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        logs.configure("warning", "auto")  # stdout is the verb's output; logs go to stderr
        try:
            result = asyncio.run(_with_store(args, settings, work))
        except CheckpointError as exc:
            print(f"checkpointd: {exc.code}: {exc.message}", file=sys.stderr)
            if isinstance(exc, DatabaseInUseError):
                print("  (drop --db to go through the running daemon)", file=sys.stderr)
                return run.EXIT_IN_USE
            if exc.code == "unavailable" and not args.db:
                print(
                    "  (is `checkpointd serve` running? or open a file with --db)", file=sys.stderr
                )
            return run.EXIT_CONFIG if isinstance(exc, ConfigError) else _BY_CODE.get(exc.code, 70)
        except KeyboardInterrupt:
            return 130
        return int(result or 0)

    return handler


async def _with_store(
    args: argparse.Namespace,
    settings: Settings,
    work: Work,
) -> Any:
    store: Store
    if args.db:
        store = CheckpointManager(settings.engine)
    else:
        nats = settings.nats
        url = nats.url or f"nats://{nats.embedded_host}:{nats.embedded_port}"
        store = CheckpointClient(
            url,
            prefix=nats.subject_prefix,
            request_timeout=args.timeout,
            # A CLI should say at once that no daemon answers (the daemon itself waits longer).
            connect_timeout=min(args.timeout, nats.connect_timeout or _CONNECT_WAIT, _CONNECT_WAIT),
            credentials_file=nats.credentials_file,
            nkey_seed_file=nats.nkey_seed_file,
            token=nats.token,
            user=nats.user,
            password=nats.password,
            tls=run.tls_context(nats),
            name="checkpointd-cli",
        )
    async with store:
        return await work(store, args, sys.stdout)


async def _create(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    request: dict[str, Any] = {
        "name": args.name,
        "sessionId": args.session,
        "snapshot": _json_arg(args.snapshot, "--snapshot") if args.snapshot else {},
    }
    if args.description is not None:
        request["description"] = args.description
    request["branches"] = args.branch or ["main"]
    metadata = _json_arg(args.metadata, "--metadata") if args.metadata else {}
    if args.parent is not None:
        if not isinstance(metadata, dict):
            raise InvalidRequestError("expected a JSON object", field="--metadata")
        metadata = {**metadata, "parentCheckpoint": args.parent}
    if metadata or args.metadata:
        request["metadata"] = metadata
    if args.retention_days is not None:
        if not args.retention_days > 0:
            raise InvalidRequestError("must be > 0", field="--retention-days")
        expires = datetime.now(UTC) + timedelta(days=args.retention_days)
        request["retentionExpiresAt"] = expires.isoformat().replace("+00:00", "Z")
    checkpoint = await store.create(request)
    _emit(out, args, checkpoint.to_wire(), lambda c: _fields(out, c, _SUMMARY))


async def _get(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    checkpoint = await store.get_checkpoint(args.id, include_snapshot=not args.no_snapshot)
    if checkpoint is None:
        print(f"checkpointd: not_found: checkpoint {args.id!r} not found", file=sys.stderr)
        return 3
    data = checkpoint.to_wire()

    def human(c: Mapping[str, Any]) -> None:
        _fields(out, c, [*_SUMMARY, "branches", "metadata", "checksum", "compressed", "encrypted"])
        if c.get("snapshot") is not None:
            out.write("snapshot:\n" + json.dumps(c["snapshot"], indent=2, default=str) + "\n")

    _emit(out, args, data, human)
    return 0


async def _ls(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    options: dict[str, Any] = {"pagination": {"page": args.page, "pageSize": args.page_size}}
    if args.where:
        options["where"] = args.where
        options["params"] = args.param or []
    if args.order_by:
        field, _, direction = args.order_by.partition(":")
        options["orderBy"] = [{"field": field, "direction": direction or "desc"}]
    if args.session is not None:
        page = await store.get_checkpoints_by_session(args.session, options)
    else:
        page = await store.get_checkpoints_by_feature(args.feature, options)
    data = page.to_wire()
    _emit(out, args, data, lambda p: _page(out, p, _COLUMNS))


async def _search(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    request: dict[str, Any] = {"query": args.query, "limit": args.limit}
    if args.session:
        request["filters"] = {"sessionId": args.session}
    data = (await store.search_checkpoints(request)).to_wire()
    _emit(out, args, data, lambda p: _page(out, p, [*_COLUMNS, "score"]))


async def _restore(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    options: dict[str, Any] = {"dryRun": args.dry_run}
    if args.target_session:
        options["targetSessionId"] = args.target_session
    if args.strategy:
        options["mergeStrategy"] = args.strategy
    result = await store.restore_checkpoint(args.id, options)
    data = result.to_wire()

    def human(r: Mapping[str, Any]) -> None:
        keys = ["success", "restoredFrom", "targetSessionId", "backupCheckpointId", "eventSeq"]
        _fields(out, r, keys)
        out.write(f"conflicts: {len(r['conflicts'])}\n")
        for warning in r.get("warnings", []):
            out.write(f"warning: {warning}\n")

    _emit(out, args, data, human)


async def _stats(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    data = (await store.get_checkpoint_stats()).to_wire()

    def human(s: Mapping[str, Any]) -> None:
        _fields(out, s, ["totalCheckpoints", "totalSize", "storedSize", "averageSize"])
        for key in ("byFeature", "byPriority"):
            if s[key]:
                out.write(f"{key}: " + ", ".join(f"{k}={v}" for k, v in s[key].items()) + "\n")
        out.write(f"sessions: {len(s['bySession'])}\n")

    _emit(out, args, data, human)


async def _validate(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    data = (await store.validate_checkpoint(args.id)).to_wire()

    def human(r: Mapping[str, Any]) -> None:
        _fields(out, r, ["isValid", "checksumValid", "sizeMatches", "schemaValid"])
        for line in r["errors"]:
            out.write(f"error: {line}\n")
        for line in r["warnings"]:
            out.write(f"warning: {line}\n")

    _emit(out, args, data, human)
    return 0 if data["isValid"] else 1


async def _history(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    request: dict[str, Any] = {"afterSeq": args.after_seq, "limit": args.limit}
    if args.checkpoint:
        request["checkpointId"] = args.checkpoint
    if args.session:
        request["sessionId"] = args.session
    data = (await store.history(request)).to_wire()
    columns = ["seq", "at", "type", "stream", "sessionId", "version"]
    _emit(out, args, data, lambda h: _table(out, h["events"], columns))


async def _verify(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    with _Progress("verifying", await store.health()) as progress:
        result = await store.verify_log(progress=progress.update)
    data = result.to_wire()
    _emit(out, args, data, lambda r: _fields(out, r, ["ok", "events", "firstBadSeq"]))
    return 0 if result.ok else 1


async def _rebuild(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    with _Progress("rebuilding", await store.health()) as progress:
        events = await store.rebuild(progress=progress.update)
    _emit(out, args, {"events": events}, lambda r: _fields(out, r, ["events"]))


# -- output -------------------------------------------------------------------------------

_SUMMARY = ["id", "name", "sessionId", "version", "size", "storedSize", "timestamp"]
_COLUMNS = ["id", "name", "sessionId", "version", "size", "timestamp"]
_WIDTH = 40


def _emit(out: TextIO, args: argparse.Namespace, data: Any, human: Callable[[Any], None]) -> None:
    if args.json:
        out.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    else:
        human(data)


def _fields(out: TextIO, data: Mapping[str, Any], keys: Sequence[str]) -> None:
    width = max(len(key) for key in keys)
    for key in keys:
        if key in data:
            out.write(f"{key.ljust(width)}  {_cell(data[key], wide=True)}\n")


def _page(out: TextIO, page: Mapping[str, Any], columns: Sequence[str]) -> None:
    _table(out, page["items"], columns)
    out.write(f"({len(page['items'])} of {page['total']}, page {page['page']})\n")


def _table(out: TextIO, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _cell(value: Any, *, wide: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if wide or len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


class _Progress:
    """A bar on stderr while long work runs (only on a terminal); ``update`` is thread-safe."""

    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self._what, self._total = what, max(total, 1)
        self._stream = sys.stderr if stream is None else stream
        self._on = self._stream.isatty()
        self._started = time.monotonic()

    def __enter__(self) -> _Progress:
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


def _json_arg(value: str, flag: str) -> Any:
    """JSON text, ``@file`` or ``-`` (stdin)."""
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidRequestError(
                f"cannot read {value[1:]}: {exc.strerror}", field=flag
            ) from None
    else:
        text = value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"not valid JSON ({exc.msg} at {exc.pos})", field=flag) from None


# -- arguments ----------------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "database_path": getattr(args, "db", None),
        "nats.url": getattr(args, "nats_url", None),
        "log_level": getattr(args, "log_level", None),
        "log_format": getattr(args, "log_format", None),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkpointd",
        description="An event-sourced checkpoint store for agent-session and workflow state.",
        epilog="exit codes: " + "; ".join(f"{c} {what}" for what, c in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"checkpointd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file")
    common.add_argument("--db", metavar="PATH", help="database file (verbs: open it directly)")
    common.add_argument("--nats-url", metavar="URL", help="NATS server URL(s), comma-separated")
    verbs = argparse.ArgumentParser(add_help=False, parents=[common])
    verbs.add_argument("--json", action="store_true", help="print JSON for scripts")
    verbs.add_argument("--timeout", type=float, default=30.0, help="seconds per request (NATS)")
    sub = parser.add_subparsers(metavar="command")

    serve = sub.add_parser("serve", parents=[common], help="run the daemon")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["auto", "json", "console"])
    serve.set_defaults(handler=_serve)

    config = sub.add_parser("config", parents=[common], help="check or show the configuration")
    config.add_argument("action", choices=["check", "show"])
    config.add_argument("--json", action="store_true", help="show as JSON")
    config.set_defaults(handler=_config)
    _add_verbs(sub, verbs)
    return parser


def _add_verbs(sub: Any, verbs: argparse.ArgumentParser) -> None:
    def verb(name: str, work: Work, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[verbs], help=help_text)
        p.set_defaults(handler=_verb(work))
        return p

    p = verb("create", _create, "create a checkpoint")
    p.add_argument("name")
    p.add_argument("--session", required=True, metavar="ID")
    p.add_argument("--snapshot", metavar="JSON|@FILE|-", help="the snapshot (default {})")
    p.add_argument("--description")
    p.add_argument("--branch", action="append", metavar="NAME", help="repeatable (main)")
    p.add_argument("--metadata", metavar="JSON|@FILE")
    p.add_argument("--parent", metavar="ID")
    p.add_argument("--retention-days", type=float)

    p = verb("get", _get, "show a checkpoint and its snapshot")
    p.add_argument("id")
    p.add_argument("--no-snapshot", action="store_true")

    p = verb("ls", _ls, "list a session's (or a feature's) checkpoints")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--session", metavar="ID")
    scope.add_argument("--feature")
    p.add_argument("--where", help="filter, e.g. \"metadata->>'feature' = ?\"")
    p.add_argument("--param", action="append", help="a value for a ? in --where")
    p.add_argument("--order-by", metavar="FIELD[:asc|desc]")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--page-size", type=int, default=20)

    p = verb("search", _search, "full-text search")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--session", metavar="ID")

    p = verb("restore", _restore, "restore a checkpoint into its (or another) session")
    p.add_argument("id")
    p.add_argument("--target-session", metavar="ID")
    p.add_argument("--strategy", choices=["overwrite", "merge", "keep-original"])
    p.add_argument("--dry-run", action="store_true")

    verb("stats", _stats, "totals over all checkpoints")

    p = verb("validate", _validate, "check a checkpoint's checksum, size and schema")
    p.add_argument("id")

    p = verb("history", _history, "the event log, oldest first")
    p.add_argument("--checkpoint", metavar="ID")
    p.add_argument("--session", metavar="ID")
    p.add_argument("--after-seq", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)

    verb("verify", _verify, "re-hash the whole event log")
    verb("rebuild", _rebuild, "rebuild every projection from the log")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
