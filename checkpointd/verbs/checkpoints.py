"""The checkpoint verbs: ``create``, ``get``, ``update``, ``delete``, ``ls``, ``search``,
``diff``, ``lineage`` and ``history``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from checkpointd.errors import InvalidRequestError, NotFoundError
from checkpointd.query.columns import COLUMNS as ORDERABLE
from checkpointd.verbs import AddVerb, Store
from checkpointd.verbs import output as show
from checkpointd.verbs.inputs import json_arg, json_object, param, text_param

_CREATE_FLAGS = {
    "sessionId": "--session",
    "snapshot": "--snapshot",
    "metadata": "--metadata",
    "branches": "--branch",
    "description": "--description",
    "retentionExpiresAt": "--retention-days",
}
_UPDATE_FLAGS = {
    "name": "--name",
    "metadata": "--metadata",
    "branches": "--branch",
    "retentionExpiresAt": "--retention-days",
    "expectedVersion": "--expected-version",
}
_LIST_FLAGS = {
    "sessionId": "--session",
    "feature": "--feature",
    "where": "--where",
    "params": "--param",
    "orderBy": "--order-by",
    "page": "--page",
    "pageSize": "--page-size",
    "pagination.page": "--page",
    "pagination.pageSize": "--page-size",
    "sorting.field": "--order-by",
}
_SEARCH_FLAGS = {
    "limit": "--limit",
    "filters.sessionId": "--session",
    "pagination.page": "--page",
    "pagination.pageSize": "--limit",
}
_HISTORY_FLAGS = {
    "limit": "--limit",
    "afterSeq": "--after-seq",
    "checkpointId": "--checkpoint",
    "sessionId": "--session",
}
# Without a session or a feature, ls lists through search, which sorts on these only.
_ALL_ORDER = ("timestamp", "name", "size")


def _retention(days: float | None) -> str | None:
    if days is None:
        return None
    if not days > 0:
        raise InvalidRequestError("must be > 0", field="--retention-days")
    expires = datetime.now(UTC) + timedelta(days=days)
    return expires.isoformat().replace("+00:00", "Z")


async def _create(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    request: dict[str, Any] = {
        "name": args.name,
        "sessionId": args.session,
        "snapshot": json_arg(args.snapshot, "--snapshot") if args.snapshot else {},
        "branches": args.branch or ["main"],
    }
    if args.description is not None:
        request["description"] = args.description
    metadata = json_object(args.metadata, "--metadata") if args.metadata else {}
    if args.parent is not None:
        metadata["parentCheckpoint"] = args.parent
    if metadata:
        request["metadata"] = metadata
    expires = _retention(args.retention_days)
    if expires is not None:
        request["retentionExpiresAt"] = expires
    checkpoint = await store.create(request)
    show.emit(out, args, checkpoint.to_wire(), lambda c: show.fields(out, c, show.SUMMARY))


async def _get(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    checkpoint = await store.get_checkpoint(args.id, include_snapshot=not args.no_snapshot)
    if checkpoint is None:
        raise NotFoundError("checkpoint", args.id)

    def human(c: Mapping[str, Any]) -> None:
        keys = [*show.SUMMARY, "branches", "metadata", "checksum", "compressed", "encrypted"]
        show.fields(out, c, [*keys, "retentionExpiresAt", "restoredFrom"])
        if c.get("snapshot") is not None:
            show.state_view(out, "snapshot", c["snapshot"], limit=None)

    show.emit(out, args, checkpoint.to_wire(), human)
    return 0


async def _update(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.metadata is not None:
        changes["metadata"] = json_object(args.metadata, "--metadata")
    if args.branch:
        changes["branches"] = args.branch
    if args.no_retention:
        changes["retentionExpiresAt"] = None
    elif args.retention_days is not None:
        changes["retentionExpiresAt"] = _retention(args.retention_days)
    if not changes:
        raise InvalidRequestError(
            "nothing to change: give --name, --metadata, --branch, --retention-days"
            " or --no-retention"
        )
    checkpoint = await store.update_checkpoint(
        args.id, changes, expected_version=args.expected_version
    )
    keys = [*show.SUMMARY, "branches", "metadata", "retentionExpiresAt"]
    show.emit(out, args, checkpoint.to_wire(), lambda c: show.fields(out, c, keys))


async def _delete(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    if not await store.delete_checkpoint(args.id):
        raise NotFoundError("checkpoint", args.id)
    show.emit(out, args, {"deleted": True}, lambda _: out.write(f"deleted {args.id}\n"))


async def _ls(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    order = [_sort_key(text) for text in args.order_by or ()]
    if args.session is None and args.feature is None:
        data = await _ls_everything(store, args, order)
    else:
        options: dict[str, Any] = {"pagination": {"page": args.page, "pageSize": args.page_size}}
        if args.where:
            options["where"] = args.where
            options["params"] = args.param or []
        elif args.param:
            raise InvalidRequestError("there is no --where for it to fill", field="--param")
        if order:
            options["orderBy"] = [{"field": f, "direction": d} for f, d in order]
        if args.session is not None:
            found = await store.get_checkpoints_by_session(args.session, options)
        else:
            found = await store.get_checkpoints_by_feature(args.feature, options)
        data = found.to_wire()
    show.emit(out, args, data, lambda p: show.page(out, p, show.COLUMNS))


async def _ls_everything(
    store: Store, args: argparse.Namespace, order: list[tuple[str, str]]
) -> dict[str, Any]:
    """Every checkpoint, newest first: a search without text (the engine's list of all)."""
    if args.where or args.param:
        flag = "--where" if args.where else "--param"
        raise InvalidRequestError("needs --session or --feature", field=flag)
    if len(order) > 1 or (order and order[0][0] not in _ALL_ORDER):
        raise InvalidRequestError(
            f"without --session or --feature, sort by one of {', '.join(_ALL_ORDER)}",
            field="--order-by",
        )
    field, direction = order[0] if order else ("timestamp", "desc")
    request = {
        "query": "",
        "sorting": {"field": field, "direction": direction},
        "pagination": {"page": args.page, "pageSize": args.page_size},
    }
    data = (await store.search_checkpoints(request)).to_wire()
    for item in data["items"]:
        item.pop("score", None)  # no text, no relevance
    return data


def _sort_key(text: str) -> tuple[str, str]:
    field, _, direction = text.partition(":")
    return field, direction or "desc"


async def _search(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    request: dict[str, Any] = {
        "query": args.query,
        "pagination": {"page": args.page, "pageSize": args.limit},
    }
    if args.session:
        request["filters"] = {"sessionId": args.session}
    data = (await store.search_checkpoints(request)).to_wire()
    show.emit(out, args, data, lambda p: show.page(out, p, [*show.COLUMNS, "score"]))


async def _diff(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    data = (await store.diff_checkpoints(args.before, args.after)).to_wire()

    def human(d: Mapping[str, Any]) -> None:
        if not d["changes"]:
            out.write("no differences\n")
            return
        changes = show.as_json_cells(d["changes"], ["before", "after"])
        show.table(out, changes, ["op", "path", "before", "after"])

    show.emit(out, args, data, human)


async def _lineage(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    found = await store.get_lineage(args.id)
    alone = not (found.ancestors or found.descendants)
    if alone and await store.get_checkpoint(args.id, include_snapshot=False) is None:
        raise NotFoundError("checkpoint", args.id)
    data = found.to_wire()

    def human(lineage: Mapping[str, Any]) -> None:
        columns = ["id", "name", "sessionId", "timestamp"]
        for side in ("ancestors", "descendants"):
            out.write(f"{side} (nearest first): {len(lineage[side]) or 'none'}\n")
            if lineage[side]:
                show.table(out, lineage[side], columns)

    show.emit(out, args, data, human)


async def _history(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    request: dict[str, Any] = {"afterSeq": args.after_seq, "limit": args.limit}
    if args.checkpoint:
        request["checkpointId"] = args.checkpoint
    if args.session:
        request["sessionId"] = args.session
    data = (await store.history(request)).to_wire()
    # A checkpoint's log outlives it (deleted ones have history), so only one with no event at
    # all was never there.
    if args.checkpoint and not data["events"] and not await _has_events(store, args.checkpoint):
        raise NotFoundError("checkpoint", args.checkpoint)

    def human(h: Mapping[str, Any]) -> None:
        show.table(out, h["events"], ["seq", "at", "type", "stream", "sessionId", "version"])
        if h.get("next") is not None:
            out.write(f"(more: --after-seq {h['next']})\n")

    show.emit(out, args, data, human)


async def _has_events(store: Store, checkpoint_id: str) -> bool:
    return bool((await store.history(checkpoint_id=checkpoint_id, limit=1)).events)


def register(add: AddVerb) -> None:
    """Declare the checkpoint verbs and their arguments."""
    p = add("create", _create, "create a checkpoint", flags=_CREATE_FLAGS, creates=True)
    p.add_argument("name", help="the checkpoint's name")
    p.add_argument("--session", required=True, metavar="ID", help="the session it belongs to")
    p.add_argument("--snapshot", metavar="JSON|@FILE|-", help="the snapshot (default {})")
    p.add_argument("--description", help="a description (searchable)")
    p.add_argument("--branch", action="append", metavar="NAME", help="a branch; repeatable (main)")
    p.add_argument("--metadata", metavar="JSON|@FILE|-", help="a JSON object of metadata")
    p.add_argument("--parent", metavar="ID", help="the checkpoint it derives from (lineage)")
    p.add_argument("--retention-days", type=float, metavar="DAYS", help="expire after DAYS days")

    p = add("get", _get, "show a checkpoint and its snapshot")
    p.add_argument("id", help="the checkpoint's id")
    p.add_argument("--no-snapshot", action="store_true", help="leave the snapshot out")

    p = add("update", _update, "rename, re-tag or re-time a checkpoint", flags=_UPDATE_FLAGS)
    p.add_argument("id", help="the checkpoint's id")
    p.add_argument("--name", help="the new name")
    p.add_argument("--metadata", metavar="JSON|@FILE|-", help="new metadata (replaces it whole)")
    p.add_argument("--branch", action="append", metavar="NAME", help="the branches; repeatable")
    retention = p.add_mutually_exclusive_group()
    retention.add_argument(
        "--retention-days", type=float, metavar="DAYS", help="expire DAYS days from now"
    )
    retention.add_argument("--no-retention", action="store_true", help="never expire it")
    p.add_argument(
        "--expected-version", type=int, metavar="N", help="refuse (exit 4) unless at version N"
    )

    p = add("delete", _delete, "delete a checkpoint and its snapshot (the log keeps the event)")
    p.add_argument("id", help="the checkpoint's id")

    p = add("ls", _ls, "list checkpoints: a session's, a feature's, or all", flags=_LIST_FLAGS)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--session", metavar="ID", help="only this session's checkpoints")
    scope.add_argument("--feature", help="only those whose metadata.feature is FEATURE")
    p.add_argument("--where", help="a filter, e.g. \"metadata->>'priority' = ? AND size > ?\"")
    p.add_argument(
        "--param", action="append", type=param, metavar="VALUE",
        help="a value for the next ? in --where; JSON if it parses (137, true, null), else text",
    )  # fmt: skip
    p.add_argument(
        "--param-str", action="append", type=text_param, dest="param", metavar="TEXT",
        help="a value for the next ? in --where, always as text (\"137\")",
    )  # fmt: skip
    p.add_argument(
        "--order-by", action="append", metavar="FIELD[:asc|desc]",
        help=f"sort by FIELD, one of {', '.join(ORDERABLE)}; direction desc unless :asc;"
        " repeatable (default: newest first; without --session or --feature only"
        f" {', '.join(_ALL_ORDER)})",
    )  # fmt: skip
    p.add_argument("--page", type=int, default=1, help="the page to show, from 1 (1)")
    p.add_argument("--page-size", type=int, default=20, help="checkpoints a page, 1..1000 (20)")

    p = add("search", _search, "full-text search over names, descriptions, tags, …",
            flags=_SEARCH_FLAGS)  # fmt: skip
    p.add_argument("query", help="words to find (the last one as a prefix)")
    p.add_argument("--limit", type=int, default=20, help="results a page, 1..1000 (20)")
    p.add_argument("--page", type=int, default=1, help="the page to show, from 1 (1)")
    p.add_argument("--session", metavar="ID", help="only this session's checkpoints")

    p = add("diff", _diff, "what changed between two checkpoints' snapshots")
    p.add_argument("before", metavar="A", help="the checkpoint to compare from")
    p.add_argument("after", metavar="B", help="the checkpoint to compare to")

    p = add("lineage", _lineage, "a checkpoint's ancestors and descendants")
    p.add_argument("id", help="the checkpoint's id")

    p = add("history", _history, "the event log, oldest first", flags=_HISTORY_FLAGS)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", metavar="ID", help="only this checkpoint's events")
    which.add_argument("--session", metavar="ID", help="only this session's events")
    p.add_argument("--after-seq", type=int, default=0, metavar="SEQ", help="start after SEQ (0)")
    p.add_argument("--limit", type=int, default=100, help="events a page, 1..1000 (100)")
