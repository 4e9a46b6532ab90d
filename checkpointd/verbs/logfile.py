"""The verbs that work on the log file itself, while a daemon serves it or without one:
``backup``, ``restore-backup`` (daemon stopped), ``export`` and ``verify --file``.

They read the log at ``database_path`` (``--db``, else the config's) through SQLite, never over
NATS: an export keeps the stored bytes the hash chain covers, which the API does not return.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, TextIO

from checkpointd.daemon.settings import Settings
from checkpointd.errors import ConfigError, DatabaseInUseError
from checkpointd.events.signing import ChainKeys
from checkpointd.ops import audit
from checkpointd.ops import backup as backups
from checkpointd.ops import export as exports
from checkpointd.ops.files import chain_keys, codec_for, head_seq, read_only
from checkpointd.verbs import output as show
from checkpointd.verbs.operator import Progress

Direct = Callable[[argparse.Namespace, Settings, TextIO], int]
Handler = Callable[[argparse.Namespace, Settings], int]
EXIT_IN_USE = 75
_VERIFY_KEYS = ["ok", "events", "firstBadSeq", "signedSeq", "unsignedTail", "problem"]


def _backup(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    config = settings.engine
    with Progress("verifying the copy", _head(str(config.database_path))) as progress:
        made = backups.backup(config, args.destination, progress.update)
    keys = ["path", "seq", "bytes", "events", "signedSeq"]
    show.emit(out, args, made.to_wire(), lambda r: show.fields(out, r, keys))
    return 0


def _restore(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    try:
        with Progress("verifying the backup", _head(args.source)) as progress:
            restored = backups.restore_backup(settings.engine, args.source, progress.update)
    except DatabaseInUseError as exc:
        print(f"checkpointd: {exc.code}: {exc.message}", file=sys.stderr)
        hint = "  (stop the daemon first: a backup is restored while nothing serves the log)"
        print(hint, file=sys.stderr)
        return EXIT_IN_USE
    keys = ["path", "seq", "events", "signedSeq", "replaced"]
    show.emit(out, args, restored.to_wire(), lambda r: show.fields(out, r, keys))
    return 0


def _export(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    path = str(settings.engine.database_path)
    conn = read_only(path)
    try:
        codec = codec_for(settings.engine, conn) if args.snapshots else None
        total = max(head_seq(conn) - args.after_seq, 0)
        with _opened(args.output) as sink, Progress("exporting", total) as progress:
            done = exports.export(
                conn, sink, after_seq=args.after_seq, codec=codec, progress=progress.update
            )
    finally:
        conn.close()
    if args.output is not None:  # else stdout is the export itself
        keys = ["afterSeq", "lastSeq", "events", "snapshots"]
        show.emit(out, args, done.to_wire(), lambda r: show.fields(out, r, keys))
    return 0


def _verify_export(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    keys = _export_keys(settings)
    try:
        with open(args.file, "rb") as lines, Progress("verifying", _count(lines)) as progress:
            check = audit.verify_export(lines, keys, progress.update)
    except OSError as exc:
        raise ConfigError("--file", args.file, f"cannot read it: {exc.strerror}") from None
    show.emit(out, args, check.to_wire(), lambda r: show.fields(out, r, [*_VERIFY_KEYS, "lastSeq"]))
    return 0 if check.result.ok else 1


def _export_keys(settings: Settings) -> ChainKeys | None:
    """The chain keys for an export's signed heads, from the configured key and the log's
    salt when the log is here; None (heads checked against their events only) otherwise."""
    config = settings.engine
    if config.encryption_secret() is None and not config.encryption_old_keys:
        return None
    with contextlib.suppress(ConfigError):
        return chain_keys(config, str(config.database_path))
    return None


def _position(value: str) -> int:
    """``--after-seq``: a log position, 0 or more."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a seq, 0 or more: {value!r}")
    return int(value)


def _count(export: IO[bytes]) -> int:
    """The events an export says it holds (its header's ``headSeq - afterSeq``), for the
    progress bar; the file is left at its start."""
    try:
        header = json.loads(export.readline())
        return max(int(header["headSeq"]) - int(header["afterSeq"]), 0)
    except (ValueError, TypeError, KeyError):
        return 0  # the check says what is wrong with it
    finally:
        export.seek(0)


def _head(path: str) -> int:
    try:
        conn = read_only(path)
    except ConfigError:
        return 0  # the backup itself says so, with its hint
    try:
        return head_seq(conn)
    except Exception:  # the backup reports what is wrong with the file
        return 0
    finally:
        conn.close()


@contextlib.contextmanager
def _opened(path: str | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        handle = open(path, "wb")  # noqa: SIM115 (closed below, after the export)
    except OSError as exc:
        raise ConfigError("--output", path, f"cannot write it: {exc.strerror}") from None
    with handle:
        yield handle


def register(
    sub: Any, common: argparse.ArgumentParser, direct: Callable[[Direct], Handler]
) -> None:
    """Declare the log file's verbs, and ``--file`` on the store's ``verify`` (registered
    before). ``direct`` wraps a verb with the command's error reporting and exit codes."""
    shared = argparse.ArgumentParser(add_help=False, parents=[common])
    shared.add_argument("--json", action="store_true", help="print JSON for scripts")

    def add(name: str, work: Direct, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[shared], help=help_text, description=help_text
        )
        p.set_defaults(handler=direct(work))
        return p

    p = add(
        "backup", _backup,
        "copy the log while the daemon serves it, consistent to the seq it prints; the copy"
        " is verified before it is put at DEST",
    )  # fmt: skip
    p.add_argument("destination", metavar="DEST", help="the backup file, or a directory for it")
    p = add(
        "restore-backup", _restore,
        "install a backup as the log (daemon stopped), once it verifies; the log it replaces"
        " is kept beside it",
    )  # fmt: skip
    p.add_argument("source", metavar="SRC", help="the backup file")
    p = add("export", _export, "write the log as JSON Lines, for an auditor")
    p.add_argument(
        "--after-seq", type=_position, default=0, metavar="N",
        help="only the events after seq N (0: from the first)",
    )  # fmt: skip
    p.add_argument(
        "--snapshots", action="store_true",
        help="also each stored checkpoint's snapshot (decrypted with the configured key)",
    )  # fmt: skip
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    verify: argparse.ArgumentParser = sub.choices["verify"]
    verify.add_argument(
        "--file", metavar="EXPORT",
        help="check an export's hash chain instead of the log (no database or daemon needed)",
    )  # fmt: skip
    of_store: Handler = verify.get_default("handler")
    of_file = direct(_verify_export)

    def verify_either(args: argparse.Namespace, settings: Settings) -> int:
        return of_file(args, settings) if args.file else of_store(args, settings)

    verify.set_defaults(handler=verify_either)
