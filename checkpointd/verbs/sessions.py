"""The session verbs: ``restore`` a checkpoint into a session, a session's ``state``, and
every session (``sessions``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO

from checkpointd.verbs import AddVerb, Store
from checkpointd.verbs import output as show

_RESTORE_FLAGS = {"targetSessionId": "--target-session", "mergeStrategy": "--strategy"}
_SESSIONS_FLAGS = {"page": "--page", "pageSize": "--page-size"}


async def _restore(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    options: dict[str, Any] = {"dryRun": args.dry_run}
    if args.target_session:
        options["targetSessionId"] = args.target_session
    if args.strategy:
        options["mergeStrategy"] = args.strategy
    if args.backup:
        options["preserveCurrentState"] = True
    data = (await store.restore_checkpoint(args.id, options)).to_wire()

    def human(r: Mapping[str, Any]) -> None:
        if args.dry_run:
            out.write("dry run: nothing was written; this is what a restore would do\n")
        keys = ["success", "restoredFrom", "targetSessionId", "backupCheckpointId", "eventSeq"]
        show.fields(out, r, keys)
        for warning in r.get("warnings", []):
            out.write(f"warning: {warning}\n")
        conflicts = r["conflicts"]
        out.write(f"conflicts: {len(conflicts) or 'none'}\n")
        if conflicts:
            conflicts = show.as_json_cells(conflicts, ["current", "checkpoint"])
            show.table(out, conflicts, ["path", "current", "checkpoint", "resolution"])
        show.state_view(out, "state (the session's, after)", r["state"])

    show.emit(out, args, data, human)


async def _state(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    data = (await store.get_session_state(args.session)).to_wire()

    def human(s: Mapping[str, Any]) -> None:
        show.fields(out, s, ["sessionId", "checkpointId", "restoredFrom", "lastSeq", "updatedAt"])
        show.state_view(out, "state", s["state"], limit=None)

    show.emit(out, args, data, human)


async def _sessions(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    data = (await store.get_sessions(page=args.page, page_size=args.page_size)).to_wire()
    columns = ["sessionId", "checkpoints", "lastActivity", "lastSeq", "checkpointId"]
    show.emit(out, args, data, lambda p: show.page(out, p, columns))


def register(add: AddVerb) -> None:
    """Declare the session verbs and their arguments."""
    p = add("restore", _restore, "put a session at a checkpoint's state", flags=_RESTORE_FLAGS)
    p.add_argument("id", help="the checkpoint to restore")
    p.add_argument(
        "--target-session", metavar="ID", help="the session to restore into (the checkpoint's)"
    )
    p.add_argument(
        "--strategy", choices=["overwrite", "merge", "keep-original"],
        help="overwrite: take the checkpoint's state (default); merge: deep merge, the"
        " checkpoint wins conflicts; keep-original: deep merge, the session's state wins",
    )  # fmt: skip
    p.add_argument(
        "--backup", action="store_true",
        help="first save the session's current state as a checkpoint",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="show the outcome, write nothing")

    p = add("state", _state, "a session's current state", flags={"sessionId": "--session"})
    p.add_argument("--session", required=True, metavar="ID", help="the session")

    p = add("sessions", _sessions, "every session, the most recently active first",
            flags=_SESSIONS_FLAGS)  # fmt: skip
    p.add_argument("--page", type=int, default=1, help="the page to show, from 1 (1)")
    p.add_argument("--page-size", type=int, default=20, help="sessions a page, 1..1000 (20)")
