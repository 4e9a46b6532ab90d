"""The ``checkpointd`` verbs end to end, on a database file (``--db``) and through a daemon.

Most calls run in-process through ``checkpointd.cli.main`` (fast, output from capsys); a
representative few run the installed command as a subprocess. Each verb's ``--json`` output is
compared with what the Python API returns for the same store; the human output is checked for
the fields a person looks for; and the exit codes are the ones ``EXIT_CODES`` documents.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from natsserver import free_port

from checkpointd.models import Checkpoint

from .clirun import Ran, Seeded, Store, Target, as_json, cli, db, seeded, served, target
from .serving import Daemon, Daemons, run_cli, toml_text

# The CLI tests' fixtures (see clirun.py).
__all__ = ["cli", "db", "seeded", "served", "target"]


# -- create ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["json", "@file", "-"])
def test_create_takes_the_snapshot_as_json_a_file_or_stdin(
    target: Target,
    cli: Callable[..., Ran],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    """--snapshot JSON, @FILE and - (stdin) store the same snapshot, with the other fields."""
    snapshot = {"state": {"todo": ["write", "test"], "done": 1}, "sessions": ["cli"]}
    text = json.dumps(snapshot)
    if source == "@file":
        (tmp_path / "snap.json").write_text(text)
        value = f"@{tmp_path / 'snap.json'}"
    elif source == "-":
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        value = "-"
    else:
        value = text
    session = f"cli-{uuid.uuid4().hex[:8]}"
    ran = cli(
        "create", "from cli", "--session", session, "--snapshot", value,
        "--description", "made by the CLI", "--branch", "main", "--branch", "exp",
        "--metadata", '{"feature": "cli", "tags": ["a"]}', "--json", *target.args,
    )  # fmt: skip

    assert ran.code == 0, ran.err
    created = ran.json()
    stored = target.api(lambda store: store.get_checkpoint(created["id"]))
    assert stored.snapshot == snapshot
    assert (stored.name, stored.session_id, stored.branches) == (
        "from cli",
        session,
        ["main", "exp"],
    )
    assert stored.metadata["feature"] == "cli"
    assert stored.metadata["description"] == "made by the CLI"
    without_snapshot = {k: v for k, v in as_json(stored).items() if k != "snapshot"}
    assert {k: v for k, v in created.items() if k != "snapshot"} == without_snapshot


def test_create_prints_a_summary_for_people(target: Target, cli: Callable[..., Ran]) -> None:
    """Without --json, create prints the new checkpoint's id, name, session and sizes."""
    ran = cli("create", "summary", "--session", "people", "--snapshot", '{"a": 1}', *target.args)

    assert ran.code == 0, ran.err
    fields = dict(line.split(None, 1) for line in ran.out.splitlines())
    assert set(fields) >= {"id", "name", "sessionId", "version", "size", "storedSize", "timestamp"}
    assert (fields["name"], fields["sessionId"], fields["version"]) == ("summary", "people", "1")
    assert target.api(lambda store: store.get_checkpoint(fields["id"])) is not None


def test_create_with_retention_days_sets_the_expiry(db: Target, cli: Callable[..., Ran]) -> None:
    """--retention-days N makes the checkpoint expire N days from now."""
    before = datetime.now(UTC)
    ran = cli(
        "create", "short-lived", "--session", "r", "--retention-days", "2", "--json", *db.args
    )

    assert ran.code == 0, ran.err
    expires = datetime.fromisoformat(ran.json()["retentionExpiresAt"].replace("Z", "+00:00"))
    assert before + timedelta(days=2) <= expires <= datetime.now(UTC) + timedelta(days=2)


def test_create_with_a_parent_links_it(db: Target, cli: Callable[..., Ran]) -> None:
    """--parent ID records the parent (metadata.parentCheckpoint), which lineage then shows."""
    parent = cli("create", "parent", "--session", "p", "--json", *db.args).json()["id"]
    ran = cli("create", "child", "--session", "p", "--parent", parent, "--json", *db.args)

    assert ran.code == 0, ran.err
    child = ran.json()
    assert child["metadata"]["parentCheckpoint"] == parent
    lineage = db.api(lambda store: store.get_lineage(child["id"]))
    assert parent in json.dumps(as_json(lineage))


def test_an_unusable_db_path_is_a_clear_error(cli: Callable[..., Ran], tmp_path: Path) -> None:
    """--db where no file can be created (under a regular file): 78 and the path, no traceback."""
    (tmp_path / "plain-file").write_text("")
    path = tmp_path / "plain-file" / "x.db"
    ran = run_cli("stats", "--db", str(path), cwd=tmp_path)

    assert ran.returncode == 78, ran.stderr
    assert "Traceback" not in ran.stderr
    assert str(tmp_path / "plain-file") in ran.stderr


# -- reads ----------------------------------------------------------------------------------------


def test_get_shows_the_fields_and_the_snapshot(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """get prints the checkpoint's fields and its snapshot; --json is the API's checkpoint."""
    checkpoint_id = seeded.first.id
    human = cli("get", checkpoint_id, *target.args)
    bare = cli("get", checkpoint_id, "--no-snapshot", *target.args)
    as_data = cli("get", checkpoint_id, "--json", *target.args)

    assert (human.code, bare.code, as_data.code) == (0, 0, 0), human.err + bare.err + as_data.err
    for field in ("id", "name", "sessionId", "branches", "metadata", "checksum", "encrypted"):
        assert any(line.startswith(field + " ") for line in human.out.splitlines()), field
    assert checkpoint_id in human.out
    assert json.loads(human.out.split("snapshot:\n", 1)[1]) == seeded.first.snapshot
    assert "snapshot:" not in bare.out
    stored = target.api(lambda store: store.get_checkpoint(checkpoint_id))
    assert as_data.json() == as_json(stored)


def test_ls_lists_a_session_or_a_feature_filtered_and_ordered(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """ls --session/--feature with --where/--param and --order-by; --json is the API's page."""
    by_session = cli("ls", "--session", seeded.session, *target.args)
    by_feature = cli("ls", "--feature", seeded.feature, "--json", *target.args)
    where = cli(
        "ls", "--session", seeded.session, "--where", "name = ?",
        "--param", seeded.second.name, "--json", *target.args,
    )  # fmt: skip
    ordered = cli(
        "ls", "--session", seeded.session, "--order-by", "name:asc", "--json", *target.args
    )

    for ran in (by_session, by_feature, where, ordered):
        assert ran.code == 0, ran.err
    header, *rows, footer = by_session.out.splitlines()
    assert header.split() == ["id", "name", "sessionId", "version", "size", "timestamp"]
    assert {row.split()[0] for row in rows} == {seeded.first.id, seeded.second.id}
    assert footer == "(2 of 2, page 1)"
    page = target.api(lambda store: store.get_checkpoints_by_feature(seeded.feature, page_size=20))
    assert by_feature.json() == as_json(page)
    assert [item["id"] for item in where.json()["items"]] == [seeded.second.id]
    names = [item["name"] for item in ordered.json()["items"]]
    assert names == sorted(names) == [seeded.first.name, seeded.second.name]


def test_search_finds_by_name(target: Target, seeded: Seeded, cli: Callable[..., Ran]) -> None:
    """search matches names (--session narrows it); --json is the API's result page."""
    word = seeded.first.name.split()[1]  # the tag, in every seeded name
    everywhere = cli("search", word, "--json", *target.args)
    in_session = cli("search", word, "--session", seeded.session, *target.args)

    assert (everywhere.code, in_session.code) == (0, 0), everywhere.err + in_session.err
    found = everywhere.json()
    assert {item["id"] for item in found["items"]} == {
        seeded.first.id,
        seeded.second.id,
        seeded.other.id,
    }
    assert found == as_json(target.api(lambda store: store.search_checkpoints(word, 20)))
    assert seeded.other.id not in in_session.out
    assert "score" in in_session.out.splitlines()[0]
    assert in_session.out.splitlines()[-1] == "(2 of 2, page 1)"


def test_stats_and_validate_match_the_api(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """stats prints the totals and validate a checkpoint's checks; --json is the API's result."""
    human = cli("stats", *target.args)
    stats = cli("stats", "--json", *target.args)
    valid = cli("validate", seeded.first.id, *target.args)
    report = cli("validate", seeded.first.id, "--json", *target.args)

    assert (human.code, stats.code, valid.code, report.code) == (0, 0, 0, 0)
    assert "totalCheckpoints" in human.out
    assert stats.json() == as_json(target.api(lambda store: store.get_checkpoint_stats()))
    assert stats.json()["totalCheckpoints"] >= 3
    assert valid.out.splitlines()[0].split() == ["isValid", "true"]
    expected = target.api(lambda store: store.validate_checkpoint(seeded.first.id))
    assert report.json() == as_json(expected)


def test_history_lists_the_events(target: Target, seeded: Seeded, cli: Callable[..., Ran]) -> None:
    """history --session/--checkpoint prints the events oldest first; --json is the API's."""
    table = cli("history", "--session", seeded.session, *target.args)
    one = cli("history", "--checkpoint", seeded.second.id, "--json", *target.args)

    assert (table.code, one.code) == (0, 0), table.err + one.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["seq", "at", "type", "stream", "sessionId", "version"]
    assert [row.split()[2:4] for row in rows] == [
        ["checkpoint.created", seeded.first.id],
        ["checkpoint.created", seeded.second.id],
    ]
    expected = target.api(lambda store: store.history(checkpoint_id=seeded.second.id))
    assert one.json() == as_json(expected)


# -- restore, verify, rebuild -------------------------------------------------------------------


def test_restore_dry_run_writes_nothing_and_a_real_one_is_logged(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """restore --dry-run reports success without an event; restore itself appends one."""
    events = cli("history", "--session", seeded.session, "--json", *target.args).json()["events"]
    dry = cli("restore", seeded.first.id, "--dry-run", "--json", *target.args)
    after_dry = cli("history", "--session", seeded.session, "--json", *target.args)
    real = cli("restore", seeded.first.id, "--strategy", "overwrite", *target.args)
    after = cli("history", "--session", seeded.session, "--json", *target.args)

    assert (dry.code, real.code) == (0, 0), dry.err + real.err
    assert dry.json()["success"] is True
    assert dry.json()["state"] == seeded.first.snapshot
    assert dry.json()["eventSeq"] is None
    assert after_dry.json()["events"] == events
    head = real.out.split("\nconflicts:", 1)[0].splitlines()
    fields = dict(line.split(None, 1) for line in head if "  " in line)
    assert (fields["success"], fields["restoredFrom"]) == ("true", seeded.first.id)
    assert fields["eventSeq"].isdigit()
    assert len(after.json()["events"]) > len(events)


def test_verify_and_rebuild_cover_the_whole_log(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """verify re-hashes every event (ok, exit 0); rebuild replays them all."""
    verified = cli("verify", "--json", *target.args)
    human = cli("verify", *target.args)
    rebuilt = cli("rebuild", "--json", *target.args)

    assert (verified.code, human.code, rebuilt.code) == (0, 0, 0)
    last = target.api(lambda store: store.health())
    assert verified.json() == {
        "ok": True,
        "events": last,
        "firstBadSeq": None,
        "signedSeq": None,
        "unsignedTail": None,
        "problem": None,
    }
    assert human.out.splitlines()[0].split() == ["ok", "true"]
    assert rebuilt.json() == {"events": last}
    assert cli("get", seeded.first.id, "--json", *target.args).json()["name"] == seeded.first.name


# -- exit codes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("get", "no-such-id"), id="get"),
        pytest.param(("restore", "no-such-id"), id="restore"),
        pytest.param(("validate", "no-such-id"), id="validate"),
    ],
)
def test_an_unknown_checkpoint_exits_3(
    target: Target, cli: Callable[..., Ran], argv: tuple[str, ...]
) -> None:
    """A checkpoint that does not exist: exit 3 and not_found on stderr, nothing on stdout."""
    ran = cli(*argv, *target.args)

    assert ran.code == 3
    assert "not_found" in ran.err
    assert "no-such-id" in ran.err
    assert ran.out == ""


@pytest.mark.parametrize("flag", ["--snapshot", "--metadata"])
def test_invalid_json_in_an_argument_exits_65(
    target: Target, cli: Callable[..., Ran], flag: str
) -> None:
    """Text that is not JSON where JSON is expected: exit 65 naming the flag, nothing created."""
    before = cli("stats", "--json", *target.args).json()["totalCheckpoints"]
    ran = cli("create", "bad", "--session", "bad", flag, '{"a": 1', *target.args)

    assert ran.code == 65
    assert f"invalid: {flag}: not valid JSON" in ran.err
    assert cli("stats", "--json", *target.args).json()["totalCheckpoints"] == before


def test_no_command_and_a_bad_config_have_their_codes(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """No verb: usage (2). A verb with a bad config: 78 before anything is opened."""
    config = tmp_path / "bad.toml"
    config.write_text("colour = 1\n")

    assert cli().code == 2
    bad = cli("stats", "--config", str(config), "--db", str(tmp_path / "x.db"))
    assert bad.code == 78
    assert "'colour'" in bad.err
    assert not (tmp_path / "x.db").exists()


def copy_of(target: Target, tmp_path: Path) -> Path:
    """A copy of the target's database file, to damage."""
    source = Path(target.args[1])
    copy = tmp_path / "damaged.db"
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(source, copy)
    return copy


@pytest.fixture
def seeded_db(db: Target) -> list[Checkpoint]:
    """Three checkpoints (events 1 to 3) in the database file ``db``."""

    async def seed(store: Store) -> list[Checkpoint]:
        return [
            await store.create(
                name=f"n{i}", session_id="d", snapshot={"state": {"i": i}}, branches=["main"]
            )
            for i in range(3)
        ]

    return db.api(seed)


def test_validate_of_a_damaged_snapshot_exits_1_naming_the_problem(
    db: Target, seeded_db: list[Checkpoint], cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """A flipped byte in the stored blob: validate says isValid false with an error, exit 1."""
    copy = copy_of(db, tmp_path)
    with closing(sqlite3.connect(copy)) as conn, conn:
        (seq,) = conn.execute(
            "SELECT seq FROM events WHERE stream = ? AND version = 1", (seeded_db[1].id,)
        ).fetchone()
        (blob,) = conn.execute("SELECT data FROM blobs WHERE seq = ?", (seq,)).fetchone()
        damaged = bytearray(blob)
        damaged[-1] ^= 0x01
        conn.execute("UPDATE blobs SET data = ? WHERE seq = ?", (bytes(damaged), seq))

    ran = cli("validate", seeded_db[1].id, "--db", str(copy))
    report = cli("validate", seeded_db[1].id, "--json", "--db", str(copy))
    intact = cli("validate", seeded_db[0].id, "--db", str(copy))

    assert ran.code == 1, ran.err
    assert ran.out.splitlines()[0].split() == ["isValid", "false"]
    assert any(line.startswith("error: ") for line in ran.out.splitlines())
    assert report.code == 1
    assert report.json()["isValid"] is False
    assert report.json()["errors"]
    assert intact.code == 0


def test_verify_of_a_tampered_log_exits_1_at_the_first_bad_event(
    db: Target, seeded_db: list[Checkpoint], cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """An event edited behind the store's back: verify reports ok false at its seq, exit 1."""
    copy = copy_of(db, tmp_path)
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 2")

    ran = cli("verify", "--json", "--db", str(copy))
    human = cli("verify", "--db", str(copy))

    assert ran.code == 1
    assert {k: ran.json()[k] for k in ("ok", "events", "firstBadSeq")} == {
        "ok": False,
        "events": 1,
        "firstBadSeq": 2,
    }
    assert ran.json()["problem"] == "event 2 does not match its hash"
    assert human.code == 1
    assert ["firstBadSeq", "2"] in [line.split() for line in human.out.splitlines()]


def test_an_unreachable_daemon_exits_69_with_a_hint(tmp_path: Path) -> None:
    """No server at --nats-url: exit 69 within --timeout, saying what to do."""
    url = f"nats://127.0.0.1:{free_port()}"
    ran = run_cli("stats", "--nats-url", url, "--timeout", "2", cwd=tmp_path)

    assert ran.returncode == 69, ran.stderr
    assert "unavailable" in ran.stderr
    assert "checkpointd serve" in ran.stderr  # the hint
    assert ran.stdout == ""


def test_an_unreachable_daemon_error_does_not_show_the_url_password(tmp_path: Path) -> None:
    """The credentials in a --nats-url never appear in the error message."""
    url = f"nats://alice:url-pa55w0rd@127.0.0.1:{free_port()}"
    ran = run_cli("stats", "--nats-url", url, "--timeout", "2", cwd=tmp_path)

    assert ran.returncode == 69, ran.stderr
    assert "url-pa55w0rd" not in ran.stderr


def test_db_on_a_database_the_daemon_holds_exits_75(
    served: Daemon, cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """--db on the running daemon's database: exit 75 naming its pid, with the way out."""
    ran = cli("stats", "--db", str(served.db_path))
    as_process = run_cli("ls", "--session", "x", "--db", str(served.db_path), cwd=tmp_path)

    assert ran.code == as_process.returncode == 75
    assert f"pid {served.pid}" in ran.err
    assert "drop --db" in ran.err
    assert f"pid {served.pid}" in as_process.stderr


# -- as the installed command ---------------------------------------------------------------------


def test_the_command_creates_from_stdin_and_reads_back_through_the_daemon(
    served: Daemon, tmp_path: Path
) -> None:
    """The subprocess CLI against the daemon: create from stdin, then get/ls/verify agree."""
    assert served.config is not None
    config = ("--config", str(served.config))
    snapshot = {"state": {"from": "stdin"}, "sessions": ["p"]}
    session = f"proc-{uuid.uuid4().hex[:8]}"
    created = run_cli(
        "create", "piped", "--session", session, "--snapshot", "-", "--json", *config,
        cwd=tmp_path, stdin=json.dumps(snapshot),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    checkpoint_id = json.loads(created.stdout)["id"]

    got = run_cli("get", checkpoint_id, "--json", *config, cwd=tmp_path)
    listed = run_cli("ls", "--session", session, *config, cwd=tmp_path)
    verified = run_cli("verify", *config, cwd=tmp_path)

    assert (got.returncode, listed.returncode, verified.returncode) == (0, 0, 0)
    assert json.loads(got.stdout)["snapshot"] == snapshot
    assert checkpoint_id in listed.stdout
    assert verified.stdout.splitlines()[0].split() == ["ok", "true"]
    assert created.stderr == got.stderr == listed.stderr == ""


def test_the_command_finds_an_embedded_daemon_from_the_config_alone(
    daemons: Daemons, tmp_path: Path
) -> None:
    """With no URL anywhere, the verbs go to the embedded server the same config describes."""
    daemon = daemons.start({"nats": {"embedded_port": free_port()}}, nats_url=None)
    assert daemon.config is not None
    created = run_cli(
        "create", "embedded", "--session", "e", "--config", str(daemon.config), cwd=tmp_path
    )
    stats = run_cli("stats", "--json", "--config", str(daemon.config), cwd=tmp_path)

    assert created.returncode == 0, created.stderr
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["totalCheckpoints"] == 1


def test_a_verb_with_a_toml_written_by_hand_reaches_the_daemon(
    served: Daemon, tmp_path: Path
) -> None:
    """--nats-url and CHECKPOINTD_NATS_SUBJECT_PREFIX are enough to reach a daemon."""
    config = tmp_path / "only-prefix.toml"
    config.write_text(toml_text({"nats": {"subject_prefix": served.prefix}}))
    ran = run_cli(
        "stats", "--json", "--nats-url", served.url, cwd=tmp_path,
        env={"CHECKPOINTD_NATS_SUBJECT_PREFIX": served.prefix},
    )  # fmt: skip
    by_file = run_cli(
        "stats", "--json", "--config", str(config), "--nats-url", served.url, cwd=tmp_path
    )

    assert ran.returncode == by_file.returncode == 0, ran.stderr + by_file.stderr
    assert json.loads(ran.stdout) == json.loads(by_file.stdout)
