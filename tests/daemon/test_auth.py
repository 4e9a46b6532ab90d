"""Who may do what: the embedded server's authentication, the example config's roles, files.

checkpointd checks no identity itself; NATS does. These tests run the real nats-server (the
embedded one, or one on ``config/nats-server.example.conf``) and the real daemon, and look at
what the server lets through and what it refuses. Then: what checkpointd writes on disk is its
owner's alone.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from natsserver import NatsServer, free_port, start_nats_server

from checkpointd import CheckpointClient
from checkpointd.daemon.embedded import EmbeddedNats
from checkpointd.daemon.endpoints import ENDPOINTS
from checkpointd.daemon.nats_auth import Authorization, is_loopback, public_nkey

from .serving import DEADLINE, Daemons, run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "nats-server.example.conf"
PASSWORDS = {
    "checkpointd": "change-me-checkpointd",
    "app": "change-me-app",
    "operator": "change-me-operator",
}
OPERATOR_VERBS = {"rebuild", "verify", "delete_expired"}
SUBJECTS = [*ENDPOINTS, "upload", "download"]
TOKEN = "t0ken for the embedded server"  # noqa: S105 - a test secret, not a credential
# Quotes and a backslash: the server's config must hold it exactly as given.
PASSWORD = 'pa55 "w0rd"\\'  # noqa: S105 - a test secret, not a credential
# A user nkey seed, the one nats' own documentation uses as its example.
USER_SEED = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"


async def _quiet(_: Exception) -> None:
    """nats-py's default error callback prints a traceback for every refusal."""


async def refusal(url: str, **credentials: str) -> str:
    """Why the server at ``url`` refused a connection with ``credentials`` ("" if it did not)."""
    nc = Client()
    try:
        await nc.connect(url, allow_reconnect=False, error_cb=_quiet, **credentials)
    except nats.errors.Error as exc:
        return str(exc)
    finally:
        await nc.close()  # a refused connect leaves its socket open otherwise
    return ""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the embedded server ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("LocalHost", True),
        ("0.0.0.0", False),  # noqa: S104 - a value judged here; nothing listens on it
        ("::", False),
        ("192.168.1.10", False),
        ("checkpointd.internal", False),  # a name may resolve anywhere
    ],
)
def test_only_loopback_addresses_may_go_without_authentication(host: str, loopback: bool) -> None:
    """localhost, 127.0.0.0/8 and ::1 are loopback; all interfaces, other addresses and host
    names are not (and so need credentials or the explicit opt-in)."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("authorization", "credentials"),
    [
        pytest.param(Authorization(token=TOKEN), {"token": TOKEN}, id="token"),
        pytest.param(
            Authorization(user="cpd", password=PASSWORD),
            {"user": "cpd", "password": PASSWORD},
            id="user-and-password",
        ),
    ],
)
async def test_the_embedded_server_lets_in_only_a_client_with_the_credentials(
    tmp_path: Path, authorization: Authorization, credentials: dict[str, str]
) -> None:
    """A token, or a user and password, is checked by the embedded server; none is refused."""
    server = await EmbeddedNats.start(tmp_path / "nats", port=0, authorization=authorization)
    try:
        anonymous = await refusal(server.url)
        authenticated = await refusal(server.url, **credentials)
    finally:
        await server.stop()
    assert "Authorization Violation" in anonymous
    assert authenticated == ""
    conf = tmp_path / "nats" / "nats-server.conf"
    assert (mode(tmp_path / "nats"), mode(conf)) == (0o700, 0o600)  # it holds the secret


async def test_the_embedded_server_checks_an_nkey(tmp_path: Path) -> None:
    """nkey_seed_file: the server gets the public key and lets in the client that signs."""
    pytest.importorskip("nkeys", reason="nats-py signs with an nkey only with nkeys installed")
    seed = tmp_path / "user.nk"
    seed.write_text(USER_SEED + "\n")
    authorization = Authorization(nkey=public_nkey(str(seed)))
    server = await EmbeddedNats.start(tmp_path / "nats", port=0, authorization=authorization)
    try:
        anonymous = await refusal(server.url)
        signed = await refusal(server.url, nkeys_seed=str(seed))
    finally:
        await server.stop()
    assert "Authorization Violation" in anonymous
    assert signed == ""
    assert USER_SEED not in (tmp_path / "nats" / "nats-server.conf").read_text()


async def test_a_daemon_with_a_token_serves_only_clients_that_present_it(
    daemons: Daemons,
) -> None:
    """nats.token and the embedded server: the daemon, a client and the CLI get in; no one else."""
    settings = {"nats": {"embedded_port": free_port(), "token": TOKEN}}
    daemon = daemons.start(settings, nats_url=None)

    assert "Authorization Violation" in await refusal(daemon.url)
    options: dict[str, Any] = {"prefix": daemon.prefix, "request_timeout": DEADLINE}
    async with CheckpointClient(daemon.url, token=TOKEN, **options) as client:
        created = await client.create(name="m1", session_id="s", snapshot={"x": 1}, branches=[])
    assert daemon.config is not None
    shown = run_cli("get", created.id, "--json", "--config", str(daemon.config), cwd=daemon.workdir)
    assert shown.returncode == 0, shown.stderr
    assert created.id in shown.stdout


# -- the example nats-server config -------------------------------------------------------------


@pytest.fixture
def roles_server() -> Iterator[NatsServer]:
    """A nats-server on a free loopback port with config/nats-server.example.conf as shipped."""
    server = start_nats_server(config=EXAMPLE)
    yield server
    server.stop()


@asynccontextmanager
async def signed_in(
    server: NatsServer, user: str
) -> AsyncIterator[tuple[Client, asyncio.Queue[str]]]:
    """A connection as ``user``, and the permissions violations the server reports to it."""
    violations: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            violations.put_nowait(str(exc))

    nc = await nats.connect(server.url, user=user, password=PASSWORDS[user], error_cb=on_error)
    try:
        yield nc, violations
    finally:
        await nc.close()


async def refused(nc: Client, violations: asyncio.Queue[str], subject: str) -> bool:
    """Whether the server refuses ``nc``'s request to ``subject`` (True) or the daemon answers."""
    request = asyncio.ensure_future(nc.request(subject, b"{}", timeout=DEADLINE))
    violation = asyncio.ensure_future(violations.get())
    try:
        done, _ = await asyncio.wait(
            {request, violation}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        request.cancel()
        violation.cancel()
    if violation in done:
        assert f'"{subject}"' in violation.result()
        return True
    assert request in done, f"neither an answer nor a refusal on {subject}"
    request.result()  # an answer (an error reply to "{}" is one too), not a timeout
    return False


async def test_the_example_config_keeps_the_operator_verbs_from_the_application(
    daemons: Daemons, roles_server: NatsServer
) -> None:
    """Under the example config the application's rebuild, verify and delete_expired are
    permissions violations and every other verb is answered; the operator is answered on all."""
    nats_settings = {
        "url": roles_server.url,
        "subject_prefix": "checkpoint",
        "user": "checkpointd",
        "password": PASSWORDS["checkpointd"],
    }
    daemon = daemons.start({"nats": nats_settings, "enable_metrics": True, "metrics_interval": 1.0})

    async with signed_in(roles_server, "app") as (app, violations):
        refused_to_app = {s for s in SUBJECTS if await refused(app, violations, f"checkpoint.{s}")}
    async with signed_in(roles_server, "operator") as (operator, violations):
        metrics = await operator.subscribe("checkpoint.metrics")
        refused_to_operator = {
            s for s in SUBJECTS if await refused(operator, violations, f"checkpoint.{s}")
        }
        await metrics.next_msg(timeout=DEADLINE)  # the daemon may publish them, the operator read

    assert refused_to_app == OPERATOR_VERBS
    assert refused_to_operator == set()
    assert "permissions violation" not in daemon.stderr().lower()


async def test_the_example_config_lets_the_application_work_and_be_notified(
    daemons: Daemons, roles_server: NatsServer
) -> None:
    """The application user creates and reads through CheckpointClient and gets the notification;
    the operator's rebuild through it is answered."""
    nats_settings = {
        "url": roles_server.url,
        "subject_prefix": "checkpoint",
        "user": "checkpointd",
        "password": PASSWORDS["checkpointd"],
    }
    daemon = daemons.start({"nats": nats_settings})
    options: dict[str, Any] = {"request_timeout": DEADLINE}

    async with (
        CheckpointClient(daemon.url, user="app", password=PASSWORDS["app"], **options) as app,
        app.notifications("created", "s-1") as stream,
    ):
        created = await app.create(name="m1", session_id="s-1", snapshot={"x": 1}, branches=[])
        stored = await app.get_checkpoint(created.id)
        async with asyncio.timeout(DEADLINE):
            notification = await anext(aiter(stream))
    async with CheckpointClient(
        daemon.url, user="operator", password=PASSWORDS["operator"], **options
    ) as operator:
        rebuilt = await operator.rebuild()

    assert stored is not None
    assert stored.snapshot == {"x": 1}
    assert notification.checkpoint_id == created.id
    assert rebuilt >= 1


@pytest.mark.parametrize(
    ("action", "subject"),
    [
        pytest.param("publish", "checkpoint.events.created.s-1", id="forge-a-notification"),
        pytest.param("subscribe", "checkpoint.create", id="serve-an-endpoint"),
        pytest.param("subscribe", "checkpoint.>", id="watch-the-requests"),
        pytest.param("subscribe", "checkpoint.metrics", id="read-the-metrics"),
    ],
)
async def test_the_example_config_keeps_the_application_from_posing_as_the_daemon(
    roles_server: NatsServer, action: str, subject: str
) -> None:
    """The application may not publish notifications, take requests or read the metrics."""
    async with signed_in(roles_server, "app") as (app, violations):
        if action == "publish":
            await app.publish(subject, b"{}")
        else:
            await app.subscribe(subject)
        async with asyncio.timeout(DEADLINE):
            violation = await violations.get()
    assert f'{action if action == "publish" else "subscription"} to "{subject}"' in violation


# -- files --------------------------------------------------------------------------------------


async def test_the_daemon_keeps_its_state_directory_and_database_private(
    daemons: Daemons,
) -> None:
    """The state directory it creates is 0700; the database, -wal and -shm files are 0600."""
    daemon = daemons.start({"nats": {"embedded_port": free_port()}}, nats_url=None)
    async with CheckpointClient(daemon.url, prefix=daemon.prefix) as client:
        await client.create(name="m1", session_id="s", snapshot={"x": 1}, branches=[])
    database = daemon.db_path
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]

    assert mode(daemon.state) == 0o700
    assert [mode(path) for path in files] == [0o600, 0o600, 0o600]
