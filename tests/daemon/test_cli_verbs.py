"""The verbs users reach for beyond create/get/ls, and the human output around them.

``update``, ``delete``, ``diff``, ``lineage``, ``state``, ``sessions``, ``ls`` of everything and a
restore that shows its conflicts, each through a database file and through a daemon, with
``--json`` equal to what the Python API returns; then help text, sizes and page hints.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Callable

import checkpointd.cli as command_line
from checkpointd.query.columns import COLUMNS

from .clirun import Ran, Seeded, Target, as_json, cli, db, seeded, served, target

# The CLI tests' fixtures (see clirun.py).
__all__ = ["cli", "db", "seeded", "served", "target"]


def cells(row: str) -> list[str]:
    """The cells of a table row (columns are two or more spaces apart)."""
    return re.split(r"\s{2,}", row.strip())


def fields_of(out: str) -> dict[str, str]:
    """``key  value`` lines of a human output, up to its first blank-keyed section."""
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition("  ")
        if not value or " " in key or key.endswith(":"):
            break
        found[key] = value.strip()
    return found


# -- update and delete --------------------------------------------------------------------------


def test_update_changes_name_metadata_branches_and_retention(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """update sets the name, metadata (whole), branches and retention; --expected-version
    guards it (a stale one exits 4); --json is the API's checkpoint."""
    checkpoint_id = seeded.first.id
    ran = cli(
        "update", checkpoint_id, "--name", "renamed", "--metadata", '{"feature": "x"}',
        "--branch", "a", "--branch", "b", "--retention-days", "3", "--expected-version", "1",
        "--json", *target.args,
    )  # fmt: skip
    stale = cli("update", checkpoint_id, "--name", "again", "--expected-version", "1", *target.args)
    cleared = cli("update", checkpoint_id, "--no-retention", *target.args)
    nothing = cli("update", checkpoint_id, *target.args)

    assert ran.code == 0, ran.err
    stored = target.api(lambda store: store.get_checkpoint(checkpoint_id, include_snapshot=False))
    assert (stored.name, stored.branches, stored.version) == ("renamed", ["a", "b"], 3)
    assert stored.metadata["feature"] == "x"
    assert stored.retention_expires_at is None
    assert ran.json()["retentionExpiresAt"] is not None
    assert stale.code == 4
    assert cleared.code == 0, cleared.err
    assert fields_of(cleared.out)["name"] == "renamed"
    assert nothing.code == 65
    assert "nothing to change" in nothing.err


def test_delete_removes_a_checkpoint_and_a_second_delete_exits_3(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """delete removes the checkpoint (get then exits 3); deleting it again exits 3."""
    first = cli("delete", seeded.first.id, *target.args)
    again = cli("delete", seeded.first.id, "--json", *target.args)

    assert first.code == 0, first.err
    assert first.out == f"deleted {seeded.first.id}\n"
    assert target.api(lambda store: store.get_checkpoint(seeded.first.id)) is None
    assert again.code == 3
    assert "not_found" in again.err
    assert again.out == ""


# -- diff and lineage ---------------------------------------------------------------------------


def test_diff_shows_what_changed_between_two_checkpoints(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """diff A B lists each changed path with its op and values; --json is the API's diff."""
    human = cli("diff", seeded.first.id, seeded.second.id, *target.args)
    as_data = cli("diff", seeded.first.id, seeded.second.id, "--json", *target.args)
    same = cli("diff", seeded.first.id, seeded.first.id, *target.args)
    missing = cli("diff", seeded.first.id, "nope", *target.args)

    assert (human.code, as_data.code, same.code) == (0, 0, 0), human.err + as_data.err
    expected = target.api(lambda store: store.diff_checkpoints(seeded.first.id, seeded.second.id))
    assert as_data.json() == as_json(expected)
    header, row = human.out.splitlines()
    assert header.split() == ["op", "path", "before", "after"]
    before, after = f'"{seeded.first.name}"', f'"{seeded.second.name}"'
    assert cells(row) == ["replace", "/state/name", before, after]
    assert same.out == "no differences\n"
    assert missing.code == 3


def test_lineage_shows_ancestors_and_descendants(target: Target, cli: Callable[..., Ran]) -> None:
    """lineage ID lists the parent and the child, nearest first; an unknown id exits 3."""
    session = f"l-{uuid.uuid4().hex[:8]}"
    parent = cli("create", "parent", "--session", session, "--json", *target.args).json()["id"]
    child = cli(
        "create", "child", "--session", session, "--parent", parent, "--json", *target.args
    ).json()["id"]
    grandchild = cli(
        "create", "grandchild", "--session", session, "--parent", child, "--json", *target.args
    ).json()["id"]
    human = cli("lineage", child, *target.args)
    as_data = cli("lineage", child, "--json", *target.args)
    unknown = cli("lineage", "nope", *target.args)

    assert (human.code, as_data.code) == (0, 0), human.err + as_data.err
    assert as_data.json() == as_json(target.api(lambda store: store.get_lineage(child)))
    ancestors, descendants = human.out.split("descendants", 1)
    assert parent in ancestors
    assert grandchild in descendants
    assert unknown.code == 3
    assert "not_found" in unknown.err


# -- sessions -----------------------------------------------------------------------------------


def test_state_shows_a_sessions_current_state(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """state --session S is the newest checkpoint's snapshot, then the restored one after a
    restore; an unknown session exits 3."""
    before = cli("state", "--session", seeded.session, "--json", *target.args)
    human = cli("state", "--session", seeded.session, *target.args)
    cli("restore", seeded.first.id, *target.args)
    after = cli("state", "--session", seeded.session, "--json", *target.args)
    unknown = cli("state", "--session", "no-such-session", *target.args)

    assert (before.code, human.code, after.code) == (0, 0, 0), before.err + after.err
    assert before.json()["state"] == seeded.second.snapshot
    assert before.json()["checkpointId"] == seeded.second.id
    assert fields_of(human.out)["checkpointId"] == seeded.second.id
    assert seeded.second.name in human.out.split("state:", 1)[1]
    assert after.json()["state"] == seeded.first.snapshot
    assert after.json()["restoredFrom"] == seeded.first.id
    assert after.json()["lastSeq"] > before.json()["lastSeq"]
    api = target.api(lambda store: store.get_session_state(seeded.session))
    assert after.json() == as_json(api)
    assert unknown.code == 3
    assert "session 'no-such-session' not found" in unknown.err


def test_sessions_lists_every_session_with_counts_newest_first(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """sessions lists each session with its checkpoints and last activity, the most recently
    active first; --json is the API's page."""
    as_data = cli("sessions", "--page-size", "1000", "--json", *target.args)
    human = cli("sessions", "--page-size", "1000", *target.args)

    assert (as_data.code, human.code) == (0, 0), as_data.err + human.err
    rows = {item["sessionId"]: item for item in as_data.json()["items"]}
    other = seeded.other.session_id
    assert (rows[seeded.session]["checkpoints"], rows[other]["checkpoints"]) == (2, 1)
    assert rows[other]["lastSeq"] > rows[seeded.session]["lastSeq"]
    order = [item["sessionId"] for item in as_data.json()["items"]]
    assert order.index(other) < order.index(seeded.session)
    api = target.api(lambda store: store.get_sessions(page_size=1000))
    assert as_data.json() == as_json(api)
    header = human.out.splitlines()[0].split()
    assert header[:3] == ["sessionId", "checkpoints", "lastActivity"]
    line = next(row for row in human.out.splitlines() if row.startswith(seeded.session + " "))
    assert line.split()[1] == "2"


def test_ls_without_a_session_or_feature_lists_everything_newest_first(
    db: Target, cli: Callable[..., Ran]
) -> None:
    """ls alone lists every checkpoint, newest first; --order-by name:asc sorts them."""
    made = [
        cli("create", name, "--session", f"s{i}", "--json", *db.args).json()["id"]
        for i, name in enumerate(["b", "c", "a"])
    ]
    newest = cli("ls", "--json", *db.args)
    by_name = cli("ls", "--order-by", "name:asc", "--json", *db.args)
    refused = cli("ls", "--where", "size > ?", "--param", "1", *db.args)

    assert (newest.code, by_name.code) == (0, 0), newest.err + by_name.err
    assert [item["id"] for item in newest.json()["items"]] == made[::-1]
    assert newest.json()["total"] == 3
    assert [item["name"] for item in by_name.json()["items"]] == ["a", "b", "c"]
    assert refused.code == 65
    assert "--where: needs --session or --feature" in refused.err


# -- restore ------------------------------------------------------------------------------------


def test_restore_shows_each_conflict_and_the_resulting_state(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """restore prints every conflict (path, current, checkpoint, resolution) and the state it
    leaves; --dry-run says it wrote nothing."""
    dry = cli("restore", seeded.first.id, "--strategy", "merge", "--dry-run", *target.args)
    real = cli("restore", seeded.first.id, "--strategy", "keep-original", *target.args)

    assert (dry.code, real.code) == (0, 0), dry.err + real.err
    assert dry.out.splitlines()[0].startswith("dry run: nothing was written")
    assert "nothing was written" not in real.out
    for ran, resolution, kept in (
        (dry, "checkpoint", seeded.first),
        (real, "current", seeded.second),
    ):
        lines = ran.out.splitlines()
        start = lines.index("conflicts: 1")
        assert lines[start + 1].split() == ["path", "current", "checkpoint", "resolution"]
        conflict = [f'"{seeded.second.name}"', f'"{seeded.first.name}"', resolution]
        assert cells(lines[start + 2]) == ["/state/name", *conflict]
        state = ran.out.split("state (the session's, after):\n", 1)[1]
        assert f'"name": "{kept.name}"' in state


# -- help, sizes, page hints --------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_verb_and_option_has_help_text() -> None:
    """Each subcommand has a summary and each of its arguments a help text."""
    parser = command_line.build_parser()
    listed = {
        choice.dest: choice.help
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
    }
    missing = [name for name, help_text in listed.items() if not help_text]
    for name, sub in subcommands(parser).items():
        missing += [
            f"{name} {action.option_strings or action.dest}"
            for action in sub._actions
            if not action.help or action.help == argparse.SUPPRESS
        ]

    assert set(listed) >= {"update", "delete", "diff", "lineage", "state", "sessions"}
    assert missing == []


def test_order_by_help_lists_its_fields_and_the_default_direction() -> None:
    """ls --order-by's help names every sortable field and says the direction is desc unless
    :asc is given."""
    ls = subcommands(command_line.build_parser())["ls"]
    (order_by,) = [a for a in ls._actions if "--order-by" in a.option_strings]

    assert order_by.help is not None
    for field in COLUMNS:
        assert field in order_by.help
    assert "desc unless :asc" in order_by.help


def test_sizes_and_scores_print_for_people(db: Target, cli: Callable[..., Ran]) -> None:
    """Sizes print with units (90.9 KB) and scores without exponents, in ls, stats and search."""
    blob = "x" * 90_900
    cli("create", "big one", "--session", "h", "--snapshot", f'{{"b": "{blob}"}}', *db.args)
    listed = cli("ls", "--session", "h", *db.args)
    stats = cli("stats", *db.args)
    found = cli("search", "big", *db.args)

    assert (listed.code, stats.code, found.code) == (0, 0, 0)
    header, row, _ = listed.out.splitlines()
    assert dict(zip(header.split(), cells(row), strict=True))["size"] == "90.9 KB"
    assert re.search(r"^totalSize\s+90\.9 KB$", stats.out, re.MULTILINE), stats.out
    assert re.search(r"^averageSize\s+90\.9 KB$", stats.out, re.MULTILINE), stats.out
    assert not re.search(r"\d[eE][+-]\d", listed.out + stats.out + found.out)


def test_a_page_that_is_not_the_last_says_how_to_get_the_next(
    db: Target, cli: Callable[..., Ran]
) -> None:
    """ls, search and sessions end a page that is not the last with "N more: --page P";
    history with "--after-seq SEQ"; the last page has no hint."""
    for i in range(3):
        cli("create", f"paged {i}", "--session", f"p{i % 2}", *db.args)
    first = cli("ls", "--page-size", "2", *db.args)
    last = cli("ls", "--page-size", "2", "--page", "2", *db.args)
    found = cli("search", "paged", "--limit", "1", *db.args)
    sessions = cli("sessions", "--page-size", "1", *db.args)
    history = cli("history", "--limit", "2", *db.args)
    rest = cli("history", "--limit", "2", "--after-seq", "2", *db.args)

    assert first.out.splitlines()[-1] == "(2 of 3, page 1; 1 more: --page 2)"
    assert last.out.splitlines()[-1] == "(1 of 3, page 2)"
    assert found.out.splitlines()[-1] == "(1 of 3, page 1; 2 more: --page 2)"
    assert sessions.out.splitlines()[-1] == "(1 of 2, page 1; 1 more: --page 2)"
    assert history.out.splitlines()[-1] == "(more: --after-seq 2)"
    assert not rest.out.splitlines()[-1].startswith("(more")
