"""Settings: four layers, one clear message and exit 78 for a bad value, secrets never shown.

A bad setting is caught before anything starts: ``checkpointd serve`` exits 78 with one line
naming where the value came from, the key, the value and the reason, and leaves no database, no
lock file and no ``READY=1`` behind. ``config check`` says the same; ``config show`` prints the
effective settings with every secret masked. ``settings.load`` and the notify protocol are also
tested directly here, which is fast.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from checkpointd.cli import main
from checkpointd.daemon import systemd
from checkpointd.daemon.settings import SettingsError, load

from .serving import Daemons, run_cli, toml_text

KEY = "00112233445566778899aabbccddeeff" * 2
MASK = "***"
SECRETS = {"encryption_key": KEY, "nats.password": "pa55-w0rd-x", "nats.token": "t0ken-xyz-123"}


@dataclass(frozen=True)
class Bad:
    """A bad configuration: the TOML (``{dir}`` is a scratch directory), the environment, and
    what the one error line must say. ``config`` ``missing``/``directory``: an unreadable file."""

    toml: str = ""
    env: dict[str, str] = field(default_factory=dict)
    says: tuple[str, ...] = ()
    config: str = "file"
    hidden: tuple[str, ...] = ()


BAD = [
    pytest.param(Bad("colour = 1\n", says=("'colour' = 1", "unknown setting")), id="unknown-key"),
    pytest.param(
        Bad('[nats]\nbogus = "x"\n', says=("'nats.bogus' = 'x'", "unknown setting")),
        id="unknown-nats-key",
    ),
    pytest.param(
        Bad('max_group_size = "x"\n', says=("'max_group_size' = 'x'", "must be int")),
        id="wrong-type",
    ),
    pytest.param(
        Bad(
            env={"CHECKPOINTD_NATS_PING_INTERVAL": "abc"},
            says=("CHECKPOINTD_NATS_PING_INTERVAL", "'nats.ping_interval' = 'abc'", "must be int"),
        ),
        id="bad-env-value",
    ),
    pytest.param(
        Bad(env={"CHECKPOINTD_FOO": "1"}, says=("CHECKPOINTD_FOO", "'foo'", "unknown setting")),
        id="unknown-env-variable",
    ),
    pytest.param(
        Bad("state_directory = \n", says=("--config", "not valid TOML", "at line 2")),
        id="invalid-toml",
    ),
    pytest.param(
        Bad(config="missing", says=("--config", "cannot read", "No such file")),
        id="missing-config",
    ),
    pytest.param(
        Bad(config="directory", says=("--config", "cannot read", "Is a directory")),
        id="unreadable-config",
    ),
    pytest.param(
        Bad(
            'enable_encryption = true\nencryption_key_file = "{dir}"\n',
            says=("'encryption_key_file'", "cannot read key file", "Is a directory"),
        ),
        id="unreadable-key-file",
    ),
    pytest.param(
        Bad(
            'enable_encryption = true\nencryption_key = "short7!"\n',
            says=("'encryption_key' = ***", "at least 8 characters"),
            hidden=("short7!",),
        ),
        id="short-passphrase",
    ),
    pytest.param(
        Bad(
            "enable_encryption = true\n",
            env={"CHECKPOINTD_ENCRYPTION_KEY": "tiny"},
            says=("CHECKPOINTD_ENCRYPTION_KEY", "'encryption_key' = ***", "at least 8"),
            hidden=("tiny",),
        ),
        id="short-passphrase-from-env",
    ),
    pytest.param(
        Bad("[nats]\nembedded = false\n", says=("'nats.url' = None", "nats.embedded is false")),
        id="no-url-and-no-embedded",
    ),
    pytest.param(
        Bad("cleanup_interval = 0\n", says=("'cleanup_interval' = 0", "must be positive")),
        id="out-of-range",
    ),
    pytest.param(
        Bad('[nats]\ncredentials_file = "{dir}/none.creds"\n', says=("nats.credentials_file",)),
        id="missing-credentials-file",
    ),
    # What the embedded nats-server cannot apply, and an open door, are refused too.
    pytest.param(
        Bad(
            '[nats]\nembedded_host = "0.0.0.0"\n',
            says=("'nats.embedded_host' = '0.0.0.0'", "needs authentication", "allow_anonymous"),
        ),
        id="embedded-beyond-loopback-without-authentication",
    ),
    pytest.param(
        Bad(
            '[nats]\ncredentials_file = "{dir}/checkpointd.toml"\n',
            says=("'nats.credentials_file'", "embedded nats-server cannot check a .creds file"),
        ),
        id="embedded-with-a-creds-file",
    ),
    pytest.param(
        Bad(
            '[nats]\ntoken = "t0ken-xyz-123"\nuser = "alice"\npassword = "pa55-w0rd-x"\n',
            says=("'nats.user' = 'alice'", "one way in, not nats.token and nats.user"),
            hidden=("t0ken-xyz-123", "pa55-w0rd-x"),
        ),
        id="embedded-with-two-ways-in",
    ),
    pytest.param(
        Bad('[nats]\nuser = "alice"\n', says=("'nats.user' = 'alice'", "needs nats.password")),
        id="embedded-user-without-password",
    ),
    pytest.param(
        Bad(
            '[nats]\ntoken = "$2a$11$t0ken"\n',
            says=("'nats.token' = ***", "bcrypt"),
            hidden=("$2a$11$t0ken",),
        ),
        id="embedded-token-read-as-a-hash",
    ),
    pytest.param(
        Bad('[nats]\ntoken = ""\n', says=("'nats.token' = ***", "must not be empty")),
        id="embedded-empty-token",
    ),
]


def bad_config(bad: Bad, directory: Path) -> Path:
    """The config file of ``bad`` in ``directory`` (its state directory beside it)."""
    path = directory / "checkpointd.toml"
    if bad.config == "missing":
        return path
    if bad.config == "directory":
        path.mkdir()
        return path
    state = f'state_directory = "{directory / "state"}"\n'
    path.write_text(state + bad.toml.replace("{dir}", str(directory)), encoding="utf-8")
    return path


def error_line(stderr: str, bad: Bad) -> str:
    """The one line a config error prints, checked against what it must (not) say."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for words in bad.says:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
    for secret in bad.hidden:
        assert secret not in lines[0]
    return lines[0]


def leftovers(directory: Path) -> list[Path]:
    """Whatever a start would have created: a database, its lock, a state directory."""
    patterns = ("*.db*", "*.lock", "state", "checkpointd-data")
    return [path for pattern in patterns for path in directory.rglob(pattern)]


@pytest.mark.parametrize("bad", BAD)
def test_serve_with_a_bad_setting_exits_78_naming_it_and_starts_nothing(
    daemons: Daemons, tmp_path: Path, bad: Bad
) -> None:
    """serve exits 78 with one line naming key, value and reason; no database, no READY."""
    (tmp_path / "conf").mkdir()
    config = bad_config(bad, tmp_path / "conf")
    daemon = daemons.start(config=config, env=bad.env, ready=False)

    assert daemon.wait() == 78, daemon.diagnostics()
    line = error_line(daemon.stderr(), bad)
    assert line.startswith("checkpointd: ")
    assert daemon.notify.states() == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", BAD)
def test_config_check_reports_the_same_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: Bad
) -> None:
    """config check exits 78 with the same one-line message."""
    for name, value in bad.env.items():
        monkeypatch.setenv(name, value)
    config = bad_config(bad, tmp_path)

    assert main(["config", "check", "--config", str(config)]) == 78
    error_line(capsys.readouterr().err, bad)
    assert leftovers(tmp_path) == []


# -- layers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        pytest.param((), "checkpointd-data/checkpointd.db", id="default"),
        pytest.param(("toml",), "from-toml.db", id="toml"),
        pytest.param(("toml", "env"), "from-env.db", id="env-over-toml"),
        pytest.param(("toml", "env", "flag"), "from-flag.db", id="flag-over-all"),
        pytest.param(("toml", "flag"), "from-flag.db", id="flag-over-toml"),
    ],
)
def test_later_layers_win(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    layers: tuple[str, ...],
    expected: str,
) -> None:
    """database_path and nats.url: defaults < TOML < CHECKPOINTD_* < flags, as config show says."""
    config = tmp_path / "c.toml"
    config.write_text(
        toml_text({"database_path": "from-toml.db", "nats": {"url": "nats://toml:4222"}})
    )
    argv = ["config", "show", "--json"]
    if "toml" in layers:
        argv += ["--config", str(config)]
    if "env" in layers:
        monkeypatch.setenv("CHECKPOINTD_DATABASE_PATH", "from-env.db")
        monkeypatch.setenv("CHECKPOINTD_NATS_URL", "nats://env:4222")
    if "flag" in layers:
        argv += ["--db", "from-flag.db", "--nats-url", "nats://flag:4222"]

    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["database_path"] == expected
    url = {"default": None, "toml": "toml", "env": "env", "flag": "flag"}[
        (layers or ("default",))[-1]
    ]
    assert shown["nats.url"] == (None if url is None else f"nats://{url}:4222")


def test_layers_in_a_subprocess(tmp_path: Path) -> None:
    """The same order holds for the installed command with a real environment."""
    config = tmp_path / "c.toml"
    config.write_text('database_path = "from-toml.db"\nmax_group_size = 7\n')
    env = {"CHECKPOINTD_DATABASE_PATH": "from-env.db", "CHECKPOINTD_MAX_GROUP_SIZE": "9"}
    argv = ["config", "show", "--json", "--config", str(config), "--db", "from-flag.db"]
    shown = run_cli(*argv, cwd=tmp_path, env=env)

    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert (values["database_path"], values["max_group_size"]) == ("from-flag.db", 9)


# -- secrets ------------------------------------------------------------------------------------


def secrets_config(tmp_path: Path, url: str = "nats://127.0.0.1:4222") -> Path:
    config = tmp_path / "secrets.toml"
    config.write_text(
        toml_text(
            {
                "enable_encryption": True,
                "encryption_key": SECRETS["encryption_key"],
                "nats": {
                    "url": url,
                    "password": SECRETS["nats.password"],
                    "token": SECRETS["nats.token"],
                    "user": "alice",
                },
            }
        )
    )
    return config


def test_config_show_masks_every_secret(tmp_path: Path) -> None:
    """config show (TOML and JSON) prints *** for the key, the password and the token."""
    config = secrets_config(tmp_path)
    as_toml = run_cli("config", "show", "--config", str(config), cwd=tmp_path)
    as_json = run_cli("config", "show", "--json", "--config", str(config), cwd=tmp_path)

    assert (as_toml.returncode, as_json.returncode) == (0, 0), as_toml.stderr + as_json.stderr
    for secret in SECRETS.values():
        assert secret not in as_toml.stdout + as_toml.stderr + as_json.stdout + as_json.stderr
    document = tomllib.loads(as_toml.stdout)
    flat = json.loads(as_json.stdout)
    assert document["encryption_key"] == flat["encryption_key"] == MASK
    assert document["nats"]["password"] == flat["nats.password"] == MASK
    assert document["nats"]["token"] == flat["nats.token"] == MASK
    assert document["nats"]["user"] == flat["nats.user"] == "alice"  # not a secret


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("nats://alice:url-pa55w0rd@127.0.0.1:4222", id="user-and-password"),
        pytest.param("tls://url-pa55w0rd@127.0.0.1:4222", id="token"),
        # nats-py reads a URL without a scheme as nats:// + it, credentials and all.
        pytest.param("alice:url-pa55w0rd@127.0.0.1:4222", id="no-scheme"),
        pytest.param("nats://127.0.0.1:4222,alice:url-pa55w0rd@127.0.0.2", id="second-of-two"),
    ],
)
def test_config_show_masks_a_password_inside_the_nats_url(tmp_path: Path, url: str) -> None:
    """A password written into nats.url (user:password@host, with a scheme or without) is a
    secret as well."""
    config = secrets_config(tmp_path, url=url)
    for argv in (["config", "show"], ["config", "show", "--json"], ["config", "check"]):
        shown = run_cli(*argv, "--config", str(config), cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "url-pa55w0rd" not in shown.stdout + shown.stderr, " ".join(argv)


def test_config_show_prints_a_config_that_loads_back_the_same(tmp_path: Path) -> None:
    """The TOML config show prints is itself a valid config with the same settings."""
    settings = load(None, environ={"CHECKPOINTD_COMPRESSION_ALGORITHM": "zstd"})
    again = tmp_path / "again.toml"
    again.write_text(settings.to_toml())

    assert load(str(again), environ={}).flat() == settings.flat()


# -- load() directly ----------------------------------------------------------------------------


def test_the_defaults() -> None:
    """No file, no environment: the embedded server on 4222, the data in ./checkpointd-data."""
    settings = load(None, environ={})

    assert settings.engine.database_path == os.path.join("checkpointd-data", "checkpointd.db")
    assert (settings.nats.url, settings.nats.embedded, settings.nats.embedded_port) == (
        None,
        True,
        4222,
    )
    assert settings.nats.subject_prefix == "checkpoint"


def test_systemd_state_directory_is_the_default_but_not_over_a_setting(tmp_path: Path) -> None:
    """$STATE_DIRECTORY (its first entry) places the data unless state_directory is set."""
    from_systemd = load(None, environ={"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"})
    config = tmp_path / "c.toml"
    config.write_text('state_directory = "/srv/mine"\n')
    from_config = load(str(config), environ={"STATE_DIRECTORY": "/var/lib/a"})

    assert from_systemd.daemon.state_directory == "/var/lib/a"
    assert from_systemd.engine.database_path == "/var/lib/a/checkpointd.db"
    assert from_config.engine.database_path == "/srv/mine/checkpointd.db"


def test_environment_values_are_read_as_their_settings_types() -> None:
    """Booleans (yes/off), numbers, lists (comma-separated) and empty-for-unset from strings."""
    settings = load(
        None,
        environ={
            "CHECKPOINTD_ENABLE_METRICS": "yes",
            "CHECKPOINTD_ENABLE_FTS": "off",
            "CHECKPOINTD_METRICS_INTERVAL": "2.5",
            "CHECKPOINTD_NATS_EMBEDDED_PORT": "0",
            "CHECKPOINTD_ENCRYPTION_OLD_KEYS": f"{KEY}, {'ff' * 32}",
            "CHECKPOINTD_NATS_URL": "",
            "CHECKPOINTD_NATS_SUBJECT_PREFIX": "cp.prod",
        },
    )

    assert (settings.engine.enable_metrics, settings.engine.enable_fts) == (True, False)
    assert settings.engine.metrics_interval == 2.5
    assert settings.nats.embedded_port == 0
    assert settings.engine.encryption_old_keys == (KEY, "ff" * 32)
    assert settings.nats.url is None
    assert settings.nats.subject_prefix == "cp.prod"


@pytest.mark.parametrize(
    ("environ", "flags", "message"),
    [
        pytest.param(
            {"CHECKPOINTD_NATS_EMBEDDED": "maybe"},
            {},
            "environment variable CHECKPOINTD_NATS_EMBEDDED: config key 'nats.embedded'"
            " = 'maybe': must be bool",
            id="env-bool",
        ),
        pytest.param(
            {},
            {"log_level": "loud"},
            "command line: config key 'log_level' = 'loud': must be one of debug, info,"
            " warning, error",
            id="flag",
        ),
        pytest.param(
            {"CHECKPOINTD_MAX_INFLIGHT": "0"},
            {},
            "environment variable CHECKPOINTD_MAX_INFLIGHT: config key 'max_inflight' = 0:"
            " must be at least 1",
            id="env-range",
        ),
        pytest.param(
            {"CHECKPOINTD_NATS": "x"},
            {},
            "environment variable CHECKPOINTD_NATS: config key 'nats' = 'x': unknown setting",
            id="env-table-name",
        ),
    ],
)
def test_an_error_names_its_source_key_value_and_reason(
    environ: dict[str, str], flags: dict[str, str], message: str
) -> None:
    """SettingsError's message is "<source>: config key 'k' = v: reason"."""
    with pytest.raises(SettingsError) as raised:
        load(None, environ=environ, flags=flags)
    assert raised.value.message == message


def test_a_config_file_error_names_the_file(tmp_path: Path) -> None:
    """A value from the file is blamed on the file, by path."""
    config = tmp_path / "c.toml"
    config.write_text('[nats]\nconnect_timeout = "soon"\n')
    with pytest.raises(SettingsError, match=f"^config file {config}: config key 'nats.conn"):
        load(str(config), environ={})


@pytest.mark.parametrize(
    ("toml", "environ", "secret"),
    [
        pytest.param("[nats]\npassword = 31415926\n", {}, "31415926", id="password-type"),
        pytest.param("encryption_key = 27182818\n", {}, "27182818", id="key-type"),
        pytest.param("", {"CHECKPOINTD_ENCRYPTION_KEY": "sh0rt"}, "sh0rt", id="key-form"),
        pytest.param("", {"CHECKPOINTD_ENCRYPTION_OLD_KEYS": "sh0rt"}, "sh0rt", id="old-keys"),
    ],
)
def test_a_rejected_secret_is_masked_in_the_error(
    tmp_path: Path, toml: str, environ: dict[str, str], secret: str
) -> None:
    """A bad secret's value never appears in the message; *** stands in for it."""
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError) as raised:
        load(str(config), environ=environ)
    assert secret not in raised.value.message
    assert "= ***:" in raised.value.message


def test_flags_left_unset_do_not_override() -> None:
    """A flag given as None (not on the command line) keeps the lower layer's value."""
    settings = load(
        None,
        environ={"CHECKPOINTD_DATABASE_PATH": "env.db"},
        flags={"database_path": None, "nats.url": None},
    )
    assert settings.engine.database_path == "env.db"


# -- the embedded server's authentication -------------------------------------------------------

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a setting checked here; nothing listens on it


@pytest.mark.parametrize(
    ("nats", "warns", "says"),
    [
        pytest.param({}, (), "embedded on 127.0.0.1:4222 (no authentication)", id="loopback"),
        pytest.param({"token": "t0ken-xyz-123"}, (), "(token)", id="token"),
        pytest.param(
            {"embedded_host": ALL_INTERFACES, "user": "cpd", "password": "pa55-w0rd-x"},
            ("has no TLS",),
            "embedded on 0.0.0.0:4222 (user and password)",
            id="all-interfaces-with-a-password",
        ),
        pytest.param(
            {"embedded_host": ALL_INTERFACES, "embedded_allow_anonymous": True},
            ("lets in anyone who reaches it", "has no TLS"),
            "(no authentication)",
            id="all-interfaces-opted-in",
        ),
    ],
)
def test_config_check_names_the_embedded_servers_authentication_and_warns_of_exposure(
    tmp_path: Path, nats: dict[str, object], warns: tuple[str, ...], says: str
) -> None:
    """config check says how the embedded server authenticates and warns, one line per
    warning, when it listens beyond loopback (openly, only after an explicit opt-in)."""
    config = tmp_path / "c.toml"
    config.write_text(toml_text({"nats": nats}))
    checked = run_cli("config", "check", "--config", str(config), cwd=tmp_path)

    assert checked.returncode == 0, checked.stderr
    assert says in checked.stdout
    warnings = checked.stderr.splitlines()
    assert len(warnings) == len(warns), checked.stderr
    for line, words in zip(warnings, warns, strict=True):
        assert line.startswith("checkpointd: warning: ")
        assert words in line
    assert "t0ken-xyz-123" not in checked.stdout + checked.stderr


def test_an_nkey_seed_without_the_nkeys_package_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-py cannot sign with an nkey seed without nkeys: refused at load, naming the package.

    The package is made unimportable for this test (whether or not it is installed): a missing
    package cannot be provoked otherwise.
    """
    monkeypatch.setitem(sys.modules, "nkeys", None)
    seed = tmp_path / "user.nk"
    seed.write_text("SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU\n")
    config = tmp_path / "c.toml"
    config.write_text(toml_text({"nats": {"nkey_seed_file": str(seed)}}))
    with pytest.raises(SettingsError, match=r"'nats.nkey_seed_file' = .*: needs the nkeys package"):
        load(str(config), environ={})


# -- the notify protocol ------------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in a short directory; yields it with its NOTIFY_SOCKET value."""
    directory = Path(tempfile.mkdtemp(prefix="cpd-", dir="/tmp"))
    path = directory / "n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        yield sock, str(path)
    path.unlink()
    directory.rmdir()


def test_notify_sends_one_datagram_to_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    """notify() sends the state as one datagram to $NOTIFY_SOCKET and says it did."""
    sock, path = notify_socket

    assert systemd.notify("READY=1\nSTATUS=serving", environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_reaches_an_abstract_socket() -> None:
    """An address starting with @ is Linux's abstract namespace (systemd uses such sockets)."""
    name = f"cpd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert systemd.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="unset"),
        pytest.param({"NOTIFY_SOCKET": ""}, id="empty"),
        pytest.param({"NOTIFY_SOCKET": "/nonexistent/notify"}, id="nobody-listening"),
    ],
)
def test_notify_without_a_listener_is_a_quiet_no_op(environ: dict[str, str]) -> None:
    """Not under Type=notify (or the socket is gone): notify() returns False and raises nothing."""
    assert systemd.notify("READY=1", environ=environ) is False


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        pytest.param({"WATCHDOG_USEC": "400000"}, 0.2, id="usec"),
        pytest.param({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2, id="pid"),
        pytest.param({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None, id="another-pid"),
        pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero"),
        pytest.param({"WATCHDOG_USEC": "soon"}, None, id="garbage"),
        pytest.param({}, None, id="unset"),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    environ: dict[str, str], interval: float | None
) -> None:
    """Ping at half the timeout, only when WATCHDOG_PID is unset or names this process."""
    assert systemd.watchdog_interval(environ) == interval
