"""The ``checkpointd`` command: ``serve``, ``config check|show`` and the store's verbs.

The verbs talk to a running daemon over NATS (``--nats-url``, else the configured or embedded
server's URL) or open a database file directly (``--db``), through the same API. Output is a
table for people, ``--json`` for scripts. Exit codes are documented in ``EXIT_CODES``.

This module parses the command line, opens the store and turns errors into one line and an
exit code; the verbs themselves are in ``checkpointd.verbs``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from checkpointd import __version__, logs
from checkpointd.client import CheckpointClient
from checkpointd.daemon import nats_auth, run
from checkpointd.daemon.settings import Settings, load
from checkpointd.errors import CheckpointError, ConfigError, DatabaseInUseError
from checkpointd.manager import CheckpointManager
from checkpointd.storage.jetstream import JetStreamLog, cluster_size
from checkpointd.storage.stream_import import import_log
from checkpointd.transport import safe_url
from checkpointd.verbs import Store, Work, checkpoints, logfile, operator, sessions
from checkpointd.verbs.database import check_database
from checkpointd.verbs.inputs import nats_urls, positive_seconds

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
_CONNECT_WAIT = 3.0
_INDEX = re.compile(r"\[\d+\]$")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
    for warning in nats_auth.warnings(settings.nats):
        print(f"checkpointd: warning: {warning}", file=sys.stderr)
    where = args.config or "defaults and environment"
    if settings.daemon.log_backend == "jetstream" and (code := _check_cluster(settings)):
        return code
    print(f"config OK ({where}); database {settings.engine.database_path}; nats {_nats(settings)}")
    return 0


def _check_cluster(settings: Settings) -> int:
    """Can the NATS cluster hold ``jetstream_replicas`` copies? 78 if not; 0 if it can or
    cannot be asked (a warning says so: the daemon's start checks again)."""
    replicas = settings.daemon.jetstream_replicas
    try:
        size = asyncio.run(_cluster_size(settings))
    except CheckpointError as exc:
        print(
            f"checkpointd: warning: jetstream_replicas not checked: {exc.message}",
            file=sys.stderr,
        )
        return 0
    if size is not None and replicas > size:
        reason = f"the NATS cluster has {size} server{'s' if size > 1 else ''}"
        print(
            f"checkpointd: {ConfigError('jetstream_replicas', replicas, reason).message}",
            file=sys.stderr,
        )
        return run.EXIT_CONFIG
    return 0


async def _cluster_size(settings: Settings) -> int | None:
    nats = replace(settings.nats, connect_timeout=_CONNECT_WAIT)
    assert nats.url is not None, "the jetstream backend requires nats.url"
    nc = await run.connect(nats.url, nats, name="checkpointd-config-check")
    try:
        return await cluster_size(nc)
    finally:
        await nc.close()


def _nats(settings: Settings) -> str:
    nats = settings.nats
    if nats.url is not None:
        return safe_url(nats.url)
    authorization = nats_auth.embedded_authorization(nats)
    who = "no authentication" if authorization is None else authorization.kind
    return f"embedded on {nats.embedded_host}:{nats.embedded_port} ({who})"


def _stream_import(args: argparse.Namespace, settings: Settings) -> int:
    logs.configure("warning", "auto")
    if not args.db:
        print("checkpointd: stream-import needs --db FILE: the log to move", file=sys.stderr)
        return 2
    if settings.nats.url is None:
        reason = "stream-import needs the NATS cluster's servers"
        print(f"checkpointd: {ConfigError('nats.url', None, reason).message}", file=sys.stderr)
        return run.EXIT_CONFIG
    try:
        check_database(args.db, may_create=False)
        events, segments = asyncio.run(_import(args.db, settings))
    except CheckpointError as exc:
        return _failed(exc, args, {})
    stream = settings.daemon.jetstream_stream
    print(f"imported {events} events into stream {stream} ({segments} segments)")
    return 0


async def _import(path: str, settings: Settings) -> tuple[int, int]:
    nats = replace(settings.nats, connect_timeout=settings.nats.connect_timeout or _CONNECT_WAIT)
    assert nats.url is not None
    nc = await run.connect(nats.url, nats, name="checkpointd-stream-import")
    try:
        daemon = settings.daemon
        stream = JetStreamLog(nc, daemon.jetstream_stream, daemon.jetstream_replicas)
        await stream.open()
        return await import_log(stream, path)
    finally:
        await nc.close()


# -- the store's verbs --------------------------------------------------------------------


def _verb(
    work: Work, flags: Mapping[str, str], *, creates: bool
) -> Callable[[argparse.Namespace, Settings], int]:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        logs.configure("warning", "auto")  # stdout is the verb's output; logs go to stderr
        try:
            if args.db:
                check_database(args.db, may_create=creates or args.create)
            result = asyncio.run(_with_store(args, settings, work))
        except CheckpointError as exc:
            return _failed(exc, args, flags)
        except KeyboardInterrupt:
            return 130
        return int(result or 0)

    return handler


def _direct(work: logfile.Direct) -> Callable[[argparse.Namespace, Settings], int]:
    """A verb on the log file itself (``checkpointd.verbs.logfile``): no store is opened."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        logs.configure("warning", "auto")
        try:
            return work(args, settings, sys.stdout)
        except CheckpointError as exc:
            return _failed(exc, args, {})
        except KeyboardInterrupt:
            return 130

    return handler


def _failed(exc: CheckpointError, args: argparse.Namespace, flags: Mapping[str, str]) -> int:
    """Report ``exc`` on stderr in one line (plus a hint) and return its exit code."""
    print(f"checkpointd: {exc.code}: {_as_typed(exc.message, flags)}", file=sys.stderr)
    if isinstance(exc, DatabaseInUseError):
        print("  (drop --db to go through the running daemon)", file=sys.stderr)
        return run.EXIT_IN_USE
    if exc.code == "unavailable" and not args.db:
        print("  (is `checkpointd serve` running? or open a file with --db)", file=sys.stderr)
    return run.EXIT_CONFIG if isinstance(exc, ConfigError) else _BY_CODE.get(exc.code, 70)


def _as_typed(message: str, flags: Mapping[str, str]) -> str:
    """The message with a leading request field (``pageSize:``, ``orderBy[0]:``) replaced by
    the flag the user typed, so errors from the store and from a daemon read alike."""
    field, colon, rest = message.partition(":")
    flag = flags.get(_INDEX.sub("", field))
    return f"{flag}:{rest}" if colon and flag else message


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


# -- arguments ----------------------------------------------------------------------------


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "database_path": getattr(args, "db", None),
        "nats.url": getattr(args, "nats_url", None),
        "log_level": getattr(args, "log_level", None),
        "log_format": getattr(args, "log_format", None),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``serve``, ``config`` and the store's verbs, each with its help."""
    parser = argparse.ArgumentParser(
        prog="checkpointd",
        description="An event-sourced checkpoint store for agent-session and workflow state.",
        epilog="exit codes: " + "; ".join(f"{c} {what}" for what, c in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"checkpointd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file")
    common.add_argument(
        "--db", metavar="PATH", help="the database file (verbs: open it directly, no daemon)"
    )
    common.add_argument(
        "--nats-url", metavar="URL", type=nats_urls,
        help="NATS server URL(s), comma-separated: nats://HOST:PORT",
    )  # fmt: skip
    verbs = argparse.ArgumentParser(add_help=False, parents=[common])
    verbs.add_argument("--json", action="store_true", help="print JSON for scripts")
    verbs.add_argument(
        "--timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
        help="how long to wait for the daemon's reply to each request (30)",
    )  # fmt: skip
    verbs.add_argument(
        "--create", action="store_true",
        help="with --db: start a new database if PATH does not exist (create always does)",
    )  # fmt: skip
    sub = parser.add_subparsers(metavar="command")

    serve = sub.add_parser("serve", parents=[common], help="run the daemon")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="the least to log"
    )
    serve.add_argument(
        "--log-format", choices=["auto", "json", "console"],
        help="json lines, console text, or auto (console on a terminal)",
    )  # fmt: skip
    serve.set_defaults(handler=_serve)

    importer = sub.add_parser(
        "stream-import", parents=[common],
        help="move the embedded store's log (--db FILE, not in use) into an empty JetStream"
        " stream (jetstream_stream on nats.url), hash chain intact",
    )  # fmt: skip
    importer.set_defaults(handler=_stream_import)

    config = sub.add_parser("config", parents=[common], help="check or show the configuration")
    config.add_argument(
        "action", choices=["check", "show"],
        help="check: load and report what is wrong (78); show: print the settings in effect",
    )  # fmt: skip
    config.add_argument("--json", action="store_true", help="show as JSON")
    config.set_defaults(handler=_config)
    _add_verbs(sub, verbs)
    logfile.register(sub, common, _direct)
    return parser


def _add_verbs(sub: Any, verbs: argparse.ArgumentParser) -> None:
    def add(
        name: str,
        work: Work,
        help_text: str,
        *,
        flags: Mapping[str, str] = MappingProxyType({}),
        creates: bool = False,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[verbs], help=help_text, description=help_text
        )
        p.set_defaults(handler=_verb(work, flags, creates=creates))
        return p

    for group in (checkpoints, sessions, operator):
        group.register(add)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
