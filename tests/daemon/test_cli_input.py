"""What the CLI does with what users type: files, ``--param`` values, flags and ``--db`` paths.

Wrong input ends in one line on stderr naming the flag the user typed, with the documented exit
code (65 invalid, 78 configuration, 2 usage) and never a traceback; nothing is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from .clirun import Ran, Seeded, Target, cli, db, seeded, served, target
from .serving import run_cli

# The CLI tests' fixtures (see clirun.py).
__all__ = ["cli", "db", "seeded", "served", "target"]


def one_line_error(ran: Ran) -> str:
    """The error a failed run printed: one ``checkpointd:`` line (a hint may follow), no
    traceback and nothing on stdout."""
    assert "Traceback" not in ran.err
    assert ran.out == ""
    first, *hints = ran.err.splitlines()
    assert first.startswith("checkpointd: ")
    assert all(hint.startswith("  (") for hint in hints), ran.err
    return first


def total(target: Target, cli: Callable[..., Ran]) -> int:
    counted: int = cli("stats", "--json", *target.args).json()["totalCheckpoints"]
    return counted


# -- files that cannot be read as text --------------------------------------------------------


def test_config_check_of_a_file_that_is_not_utf8_exits_78(tmp_path: Path) -> None:
    """A TOML file with non-UTF-8 bytes: `config check` says so in one line and exits 78."""
    config = tmp_path / "latin1.toml"
    config.write_bytes(b'database_path = "caf\xe9.db"\n')
    ran = run_cli("config", "check", "--config", str(config), cwd=tmp_path)

    assert ran.returncode == 78, ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stderr.count("\n") == 1
    assert "not UTF-8" in ran.stderr
    assert str(config) in ran.stderr


@pytest.mark.parametrize("flag", ["--snapshot", "--metadata"])
def test_a_json_file_that_is_not_utf8_exits_65(
    db: Target, cli: Callable[..., Ran], tmp_path: Path, flag: str
) -> None:
    """@FILE with non-UTF-8 bytes: exit 65 naming the flag and the file, nothing created."""
    file = tmp_path / "latin1.json"
    file.write_bytes(b'{"name": "caf\xe9"}')
    ran = cli("create", "x", "--session", "s", flag, f"@{file}", *db.args)

    assert ran.code == 65
    line = one_line_error(ran)
    assert f"invalid: {flag}: {file} is not UTF-8 text (byte 0xe9" in line
    assert total(db, cli) == 0


def test_a_snapshot_nested_100000_levels_deep_exits_65(
    db: Target, cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """A snapshot file nested 100,000 levels deep: exit 65 naming --snapshot, nothing created."""
    file = tmp_path / "deep.json"
    file.write_text('{"state": ' + "[" * 100_000 + "]" * 100_000 + "}")
    ran = cli("create", "x", "--session", "s", "--snapshot", f"@{file}", *db.args)

    assert ran.code == 65
    assert "invalid: --snapshot: nested too deeply" in one_line_error(ran)
    assert total(db, cli) == 0


# -- --param, --timeout, --nats-url -----------------------------------------------------------


def test_param_fills_a_numeric_column_and_param_str_forces_text(
    db: Target, cli: Callable[..., Ran]
) -> None:
    """--param 137 is the number 137 (size = ?); --param-str 137 is the text "137" (name = ?)."""
    made = cli("create", "137", "--session", "p", "--snapshot", '{"a": 1}', "--json", *db.args)
    size = str(made.json()["size"])
    by_size = cli(
        "ls", "--session", "p", "--where", "size = ?", "--param", size, "--json", *db.args
    )
    by_name = cli(
        "ls", "--session", "p", "--where", "name = ? AND size < ?",
        "--param-str", "137", "--param", "1000", "--json", *db.args,
    )  # fmt: skip

    assert (by_size.code, by_name.code) == (0, 0), by_size.err + by_name.err
    assert [item["id"] for item in by_size.json()["items"]] == [made.json()["id"]]
    assert [item["id"] for item in by_name.json()["items"]] == [made.json()["id"]]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_timeout_must_be_above_zero(cli: Callable[..., Ran], value: str) -> None:
    """--timeout that is not a number of seconds above 0: a usage error (2) naming --timeout."""
    with pytest.raises(SystemExit) as exited:
        cli("stats", "--timeout", value, "--nats-url", "nats://127.0.0.1:4222")

    assert exited.value.code == 2


@pytest.mark.parametrize(
    "url", ["foo", "127.0.0.1:4222", "http://127.0.0.1:4222", "nats://", "nats://h:port"]
)
def test_nats_url_must_be_a_nats_url(
    url: str, capsys: pytest.CaptureFixture[str], cli: Callable[..., Ran]
) -> None:
    """--nats-url that is not nats://HOST:PORT (each of a list): usage error (2) naming it."""
    with pytest.raises(SystemExit) as exited:
        cli("stats", "--nats-url", f"nats://127.0.0.1:4222,{url}")

    assert exited.value.code == 2
    assert "--nats-url: not a NATS URL" in capsys.readouterr().err


def test_a_bad_nats_url_with_a_password_is_not_echoed(
    capsys: pytest.CaptureFixture[str], cli: Callable[..., Ran]
) -> None:
    """A malformed --nats-url carrying a password is refused without printing it."""
    with pytest.raises(SystemExit):
        cli("stats", "--nats-url", "nats://alice:s3cret-pw@host:port")

    assert "s3cret-pw" not in capsys.readouterr().err


# -- --db ---------------------------------------------------------------------------------------


def test_db_on_a_missing_path_creates_nothing_unless_asked(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """A verb on a --db path that does not exist exits 78 and leaves no file; `create` and
    --create start a new database."""
    missing = tmp_path / "typo.db"
    ran = cli("ls", "--session", "s", "--db", str(missing))

    assert ran.code == 78
    assert "does not exist" in one_line_error(ran)
    assert list(tmp_path.iterdir()) == []
    asked = cli("stats", "--create", "--json", "--db", str(missing))
    assert asked.code == 0, asked.err
    assert asked.json()["totalCheckpoints"] == 0
    made = cli("create", "first", "--session", "s", "--db", str(tmp_path / "new.db"))
    assert made.code == 0, made.err


def test_db_on_a_file_that_is_not_a_database_exits_65(
    cli: Callable[..., Ran], tmp_path: Path
) -> None:
    """--db on a config file, or on another program's SQLite file: exit 65 saying it is not a
    checkpointd database (not "damaged"), and no .lock file left beside it."""
    config = tmp_path / "checkpointd.toml"
    config.write_text('database_path = "/var/lib/checkpointd/checkpoints.db"\n')
    foreign = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")

    for path in (config, foreign):
        ran = cli("stats", "--db", str(path))

        assert ran.code == 65, ran.err
        line = one_line_error(ran)
        assert f"--db: {path} is not a checkpointd database" in line
        assert "damaged" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpointd.toml", "other.sqlite"]


# -- errors name the flag -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        pytest.param(("ls", "--session", "s", "--page-size", "5000"), "--page-size", id="ls"),
        pytest.param(("ls", "--session", "s", "--page", "0"), "--page", id="ls-page"),
        pytest.param(("ls", "--session", "s", "--order-by", "colour"), "--order-by", id="order"),
        pytest.param(("ls", "--session", "s", "--where", "colour = 1"), "--where", id="where"),
        pytest.param(("search", "x", "--limit", "5000"), "--limit", id="search"),
        pytest.param(("search", "x", "--page", "0"), "--page", id="search-page"),
        pytest.param(("history", "--limit", "5000"), "--limit", id="history"),
        pytest.param(("history", "--after-seq", "-1"), "--after-seq", id="after-seq"),
        pytest.param(("sessions", "--page-size", "0"), "--page-size", id="sessions"),
    ],
)
def test_errors_name_the_flag_the_user_typed(
    target: Target, cli: Callable[..., Ran], argv: tuple[str, ...], flag: str
) -> None:
    """An out-of-range or unknown value: exit 65 with the flag (--limit), not the request field
    (pagination.pageSize), through a database file and through a daemon alike."""
    ran = cli(*argv, *target.args)

    assert ran.code == 65, ran.err
    assert one_line_error(ran).startswith(f"checkpointd: invalid: {flag}: ")


def test_history_of_an_unknown_checkpoint_exits_3(target: Target, cli: Callable[..., Ran]) -> None:
    """history --checkpoint of an id the log never had: exit 3 like get."""
    ran = cli("history", "--checkpoint", "nope", *target.args)

    assert ran.code == 3
    assert "not_found: checkpoint 'nope' not found" in one_line_error(ran)


def test_history_of_a_deleted_checkpoint_still_lists_its_events(
    target: Target, seeded: Seeded, cli: Callable[..., Ran]
) -> None:
    """A deleted checkpoint is not "unknown": history --checkpoint shows its created and
    deleted events."""
    target.api(lambda store: store.delete_checkpoint(seeded.first.id))
    ran = cli("history", "--checkpoint", seeded.first.id, "--json", *target.args)

    assert ran.code == 0, ran.err
    types = [event["type"] for event in ran.json()["events"]]
    assert types == ["checkpoint.created", "checkpoint.deleted"]


@pytest.mark.parametrize("value", ["[]", "0", '""', "false", "null", '["feature"]'])
def test_metadata_that_is_not_an_object_is_refused(
    db: Target, cli: Callable[..., Ran], value: str
) -> None:
    """--metadata that is not a JSON object: exit 65 naming --metadata, nothing stored."""
    ran = cli("create", "x", "--session", "s", "--metadata", value, *db.args)

    assert ran.code == 65
    assert "invalid: --metadata: expected a JSON object" in one_line_error(ran)
    assert total(db, cli) == 0
