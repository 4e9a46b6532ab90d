"""NATS authentication from the ``[nats]`` settings: what the embedded nats-server checks.

The daemon and the CLI connect to the embedded server with the ``[nats]`` credentials, so the
server is given exactly those: a token, a user and password, or an nkey (the public key of
``nkey_seed_file``). What it cannot check that way is a configuration error naming the setting,
raised before anything starts: a ``.creds`` file (JWT needs an operator and a resolver), two
ways at once, half of a user and password, a secret nats-server would misread, and, on an
address beyond loopback, no authentication at all unless ``embedded_allow_anonymous`` says so.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from checkpointd.errors import ConfigError

if TYPE_CHECKING:
    from checkpointd.daemon.settings import NatsSettings

# nats-server takes a password or token that looks like this for a bcrypt hash of one.
_BCRYPT = re.compile(r"\$2[abxy]?\$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Authorization:
    """The embedded server's one way in: a token, a user and password, or a user nkey."""

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    nkey: str | None = None

    @property
    def kind(self) -> str:
        if self.nkey is not None:
            return "nkey"
        return "token" if self.token is not None else "user and password"

    def server_config(self) -> str:
        """nats-server's ``authorization`` block. It holds the secret: keep the file private."""
        if self.nkey is not None:
            inside = f"users = [ {{ nkey: {_quoted(self.nkey)} }} ]"
        elif self.token is not None:
            inside = f"token: {_quoted(self.token)}"
        else:
            inside = f"user: {_quoted(self.user)}, password: {_quoted(self.password)}"
        return f"authorization {{ {inside} }}\n"


def embedded_authorization(nats: NatsSettings) -> Authorization | None:
    """What the embedded server is to check; None: anyone who reaches it may connect.

    Reads ``nkey_seed_file``, the NKey's private part (only the public key goes in the server's
    config).

    Raises:
        ConfigError: naming the setting the embedded server cannot apply (see the module).
    """
    if nats.credentials_file is not None:
        reason = (
            "the embedded nats-server cannot check a .creds file (JWT needs an operator and a"
            " resolver): set nats.url to such a server, or use nats.token, nats.user and"
            " nats.password, or nats.nkey_seed_file"
        )
        raise ConfigError("nats.credentials_file", nats.credentials_file, reason)
    ways = _ways_in(nats)
    if len(ways) > 1:
        reason = f"the embedded nats-server takes one way in, not {' and '.join(ways)}"
        raise ConfigError(ways[-1], None, reason)
    if nats.nkey_seed_file is not None:
        return Authorization(nkey=public_nkey(nats.nkey_seed_file))
    if nats.token is not None:
        return Authorization(token=_checked("nats.token", nats.token, secret=True))
    if ways:
        return _user_and_password(nats)
    _check_anonymous(nats)
    return None


def public_nkey(seed_file: str) -> str:
    """The user public key (``U…``) of the nkey seed in ``seed_file``.

    Raises:
        ConfigError: the ``nkeys`` package is missing (nats-py needs it to sign with the
            seed), or the file is unreadable or holds no user seed.
    """
    key = "nats.nkey_seed_file"
    try:
        nkeys = importlib.import_module("nkeys")
    except ImportError:
        reason = "needs the nkeys package: pip install 'nats-py[nkeys]'"
        raise ConfigError(key, seed_file, reason) from None
    try:
        with open(seed_file, "rb") as handle:
            seed = bytearray(handle.read().strip())  # as nats-py reads it
    except OSError as exc:
        raise ConfigError(key, seed_file, f"cannot read the file: {exc.strerror}") from None
    try:
        public = str(nkeys.from_seed(seed).public_key.decode())
    except (nkeys.NkeysError, ValueError):
        public = ""
    if not public.startswith("U"):
        raise ConfigError(key, seed_file, "holds no user nkey seed (SU…)")
    return public


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; a host name that resolves is not trusted."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warnings(nats: NatsSettings) -> list[str]:
    """What an operator should hear about the embedded server's exposure (``config check``)."""
    if nats.url is not None or is_loopback(nats.embedded_host):
        return []
    where = f"{nats.embedded_host}:{nats.embedded_port}"
    found = [
        f"the embedded nats-server on {where} has no TLS: credentials and snapshots cross the"
        " network in clear text (for other machines, run a nats-server with TLS and set nats.url)"
    ]
    if nats.embedded_allow_anonymous and not _authenticates(nats):
        found.insert(
            0,
            f"the embedded nats-server on {where} lets in anyone who reaches it"
            " (nats.embedded_allow_anonymous): they may read, write, delete and rebuild",
        )
    return found


def _ways_in(nats: NatsSettings) -> list[str]:
    """The ways to authenticate that are set, by their first key."""
    given = {
        "nats.token": nats.token is not None,
        "nats.user": nats.user is not None or nats.password is not None,
        "nats.nkey_seed_file": nats.nkey_seed_file is not None,
    }
    return [key for key, present in given.items() if present]


def _user_and_password(nats: NatsSettings) -> Authorization:
    if nats.user is None or nats.password is None:
        given, missing = ("nats.user", "nats.password")
        if nats.user is None:
            given, missing = missing, given
        raise ConfigError(given, None, f"the embedded nats-server needs {missing} with it")
    return Authorization(
        user=_checked("nats.user", nats.user, secret=False),
        password=_checked("nats.password", nats.password, secret=True),
    )


def _authenticates(nats: NatsSettings) -> bool:
    given = (nats.token, nats.user, nats.password, nats.nkey_seed_file, nats.credentials_file)
    return any(value is not None for value in given)


def _check_anonymous(nats: NatsSettings) -> None:
    if is_loopback(nats.embedded_host) or nats.embedded_allow_anonymous:
        return
    reason = (
        "listening beyond loopback needs authentication: set nats.token (or nats.user and"
        " nats.password, or nats.nkey_seed_file), or nats.embedded_allow_anonymous = true to"
        " let in anyone who reaches it"
    )
    raise ConfigError("nats.embedded_host", nats.embedded_host, reason)


def _checked(key: str, value: str, *, secret: bool) -> str:
    """``value`` if nats-server reads it back as written in its config."""
    if not value:
        raise ConfigError(key, value, "must not be empty (leave the key out for none)")
    if _CONTROL.search(value):
        raise ConfigError(key, value, "must not hold control characters")
    if secret and _BCRYPT.match(value):
        raise ConfigError(key, value, "nats-server would read it as a bcrypt hash ($2…$)")
    return value


def _quoted(value: str | None) -> str:
    """A nats-server config string: a JSON string reads back the same (no control characters)."""
    return json.dumps(value, ensure_ascii=False)
