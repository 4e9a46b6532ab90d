"""The daemon's settings: defaults, then the TOML file, then ``CHECKPOINTD_*``, then flags.

Top-level keys are the engine's settings (``Config``) and the daemon's own (``DaemonSettings``);
the ``[nats]`` table is ``NatsSettings``. Every layer is checked by name and type, and a bad
value is one ``SettingsError`` naming where it came from, the key, the value and the reason (the
daemon exits 78 on it, before starting anything).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from checkpointd import faults
from checkpointd.config import Config, check_type
from checkpointd.daemon.nats_auth import embedded_authorization, public_nkey
from checkpointd.errors import ConfigError
from checkpointd.snapshots.crypto import check_secret
from checkpointd.transport import safe_url

ENV_PREFIX = "CHECKPOINTD_"
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("auto", "json", "console")
_LOG_BACKENDS = ("sqlite", "jetstream")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")
_MAX_REPLICAS = 5
_MASK = "***"
_FILES = ("credentials_file", "nkey_seed_file", "tls_ca_file", "tls_cert_file", "tls_key_file")
# A check that involves two keys blames the second when the first was never set.
_RELATED = {
    "nats.url": "nats.embedded",
    "nats.tls_cert_file": "nats.tls_key_file",
    "encryption_key": "enable_encryption",
}
_SECRETS = frozenset({"encryption_key", "encryption_old_keys", "nats.token", "nats.password"})


class SettingsError(ConfigError):
    """A setting is unusable; ``source`` says where the value came from."""

    def __init__(self, source: str, key: str, value: object, reason: str) -> None:
        super().__init__(key, value, reason)
        self.source = source
        self.message = f"{source}: {self.message}"
        self.args = (self.message,)


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """The ``[nats]`` table. No ``url``: start the embedded nats-server (when ``embedded``)."""

    url: str | None = None
    subject_prefix: str = "checkpoint"
    queue_group: str = "checkpointd"
    credentials_file: str | None = None
    nkey_seed_file: str | None = None
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout: float = 0.0
    ping_interval: int = 5
    max_outstanding_pings: int = 3
    embedded: bool = True
    embedded_host: str = "127.0.0.1"
    embedded_port: int = 4222
    embedded_max_payload: int = 1024 * 1024
    embedded_allow_anonymous: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            check_type(f"nats.{f.name}", getattr(self, f.name), f.type)
        if self.connect_timeout < 0:
            reason = "must be 0 (wait as long as it takes) or positive"
            raise ConfigError("nats.connect_timeout", self.connect_timeout, reason)
        if self.ping_interval <= 0:
            raise ConfigError("nats.ping_interval", self.ping_interval, "must be positive")
        pings, port = self.max_outstanding_pings, self.embedded_port
        payload = self.embedded_max_payload
        if pings < 1:
            raise ConfigError("nats.max_outstanding_pings", pings, "must be at least 1")
        if not 0 <= port <= 65535:
            raise ConfigError("nats.embedded_port", port, "must be 0 (any free port) to 65535")
        if payload < 1024:
            raise ConfigError("nats.embedded_max_payload", payload, "must be at least 1024")
        if self.url is None and not self.embedded:
            raise ConfigError("nats.url", None, "must be set when nats.embedded is false")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            reason = "nats.tls_cert_file and nats.tls_key_file go together"
            raise ConfigError("nats.tls_cert_file", self.tls_cert_file, reason)


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The daemon's own top-level settings."""

    state_directory: str = "checkpointd-data"
    log_level: str = "info"
    log_format: str = "auto"
    shutdown_timeout: float = 10.0
    max_inflight: int = 256
    transfer_ttl: float = 300.0
    transfer_idle_timeout: float = 10.0
    max_uploads: int = 256
    max_uploads_per_connection: int = 16
    log_backend: str = "sqlite"
    jetstream_stream: str = "CHECKPOINTD"
    jetstream_replicas: int = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        if self.log_backend not in _LOG_BACKENDS:
            reason = f"must be one of {', '.join(_LOG_BACKENDS)}"
            raise ConfigError("log_backend", self.log_backend, reason)
        if not _STREAM_NAME.fullmatch(self.jetstream_stream):
            reason = "must be letters, digits, '_' and '-' (a JetStream stream name), 1-200"
            raise ConfigError("jetstream_stream", self.jetstream_stream, reason)
        if not 1 <= self.jetstream_replicas <= _MAX_REPLICAS:
            reason = f"must be 1 to {_MAX_REPLICAS} (JetStream keeps at most 5 copies)"
            raise ConfigError("jetstream_replicas", self.jetstream_replicas, reason)
        if not self.state_directory:
            raise ConfigError("state_directory", self.state_directory, "must not be empty")
        if self.log_level not in _LOG_LEVELS:
            reason = f"must be one of {', '.join(_LOG_LEVELS)}"
            raise ConfigError("log_level", self.log_level, reason)
        if self.log_format not in _LOG_FORMATS:
            reason = f"must be one of {', '.join(_LOG_FORMATS)}"
            raise ConfigError("log_format", self.log_format, reason)
        for key in ("shutdown_timeout", "transfer_ttl", "transfer_idle_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(key, getattr(self, key), "must be positive")
        for key in ("max_inflight", "max_uploads", "max_uploads_per_connection"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "must be at least 1")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The ``[http]`` table: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

    ``listen`` None (the default) serves no HTTP; ``"PORT"`` listens on loopback,
    ``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) where it says.
    """

    listen: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.listen, int) and not isinstance(self.listen, bool):
            object.__setattr__(self, "listen", str(self.listen))  # `listen = 9464` in TOML
        check_type("http.listen", self.listen, "str | None")
        if self.listen is not None:
            self.address()

    def address(self) -> tuple[str, int]:
        """The host and port ``listen`` names. Raises ConfigError when it names none."""
        assert self.listen is not None
        host, colon, port = self.listen.rpartition(":")
        host = host.removeprefix("[").removesuffix("]") if colon else "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535 or (colon and not host):
            reason = "must be PORT (on loopback) or HOST:PORT, PORT 0 (any free port) to 65535"
            raise ConfigError("http.listen", self.listen, reason)
        return host, int(port)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``checkpointd serve`` runs with."""

    engine: Config
    daemon: DaemonSettings
    nats: NatsSettings
    http: HttpSettings = field(default_factory=HttpSettings)

    def flat(self, *, masked: bool = True) -> dict[str, Any]:
        """Every setting by dotted name (``nats.url``), secrets masked unless ``masked=False``.

        Masked, a password inside ``nats.url`` is replaced by ``***`` too.
        """
        values: dict[str, Any] = {}
        sections = (
            (self.engine, ""),
            (self.daemon, ""),
            (self.nats, "nats."),
            (self.http, "http."),
        )
        for section, prefix in sections:
            for name, value in asdict(section).items():
                key = prefix + name
                values[key] = _mask(key, value) if masked else value
        return values

    def to_toml(self) -> str:
        """The effective settings as a TOML document, secrets masked; unset keys commented."""
        lines: list[str] = []
        tables: dict[str, list[str]] = {name: ["", f"[{name}]"] for name in _TABLES}
        for key, value in self.flat().items():
            table, _, name = key.rpartition(".")
            line = f"# {name} = (not set)" if value is None else f"{name} = {_toml(value)}"
            (tables[table] if table else lines).append(line)
        return "\n".join([*lines, *(line for table in tables.values() for line in table)]) + "\n"


_TOP_ENGINE = {f.name: f for f in fields(Config)}
_TOP_DAEMON = {f.name: f for f in fields(DaemonSettings)}
_NATS = {f.name: f for f in fields(NatsSettings)}
_HTTP = {f.name: f for f in fields(HttpSettings)}
_TABLES = {"nats": _NATS, "http": _HTTP}


def load(
    config_file: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """The settings from the four layers; flags are dotted names (``nats.url``) to values.

    Raises:
        SettingsError: the file is unreadable or not TOML; a key is unknown; a value has the wrong
            type or is out of range; a key or credentials file cannot be read; the embedded
            nats-server cannot apply the authentication settings (``nats_auth``).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(key: str, value: Any, source: str) -> None:
        if not _known(key):
            raise SettingsError(source, key, value, "unknown setting")
        values[key] = value
        origin[key] = source

    if config_file is not None:
        for key, value in _read_toml(config_file).items():
            put(key, value, f"config file {config_file}")
    for name, text in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and name != faults.ENV:  # test-only, read by faults
            key = _env_key(name)
            put(key, _parse_env(key, text, name), f"environment variable {name}")
    for key, value in (flags or {}).items():
        if value is not None:
            put(key, value, "command line")
    return _build(values, origin, env)


def _known(key: str) -> bool:
    table, _, name = key.partition(".")
    if table in _TABLES:
        return name in _TABLES[table]
    return key in _TOP_ENGINE or key in _TOP_DAEMON


def _read_toml(path: str) -> dict[str, Any]:
    source = f"config file {path}"
    try:
        with Path(path).open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(source, "--config", path, f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(source, "--config", path, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes strings after parsing, unguarded
        reason = f"not UTF-8 text (byte {exc.object[exc.start]:#04x})"
        raise SettingsError(source, "--config", path, reason) from None
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise SettingsError(source, key, value, f"must be a table ([{key}])")
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def _env_key(name: str) -> str:
    key = name.removeprefix(ENV_PREFIX).lower()
    for table, names in _TABLES.items():
        if key.startswith(f"{table}_") and key.removeprefix(f"{table}_") in names:
            return f"{table}.{key.removeprefix(f'{table}_')}"
    return key


def _annotation(key: str) -> str:
    table, _, name = key.partition(".")
    if table in _TABLES:
        return str(_TABLES[table][name].type)
    spec = _TOP_ENGINE.get(key) or _TOP_DAEMON.get(key)
    return "str" if spec is None else str(spec.type)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_env(key: str, text: str, name: str) -> Any:
    """An environment variable's text read as the setting's type (empty unsets an optional)."""
    if not _known(key):
        raise SettingsError(f"environment variable {name}", key, text, "unknown setting")
    spec = _annotation(key)
    base = spec.split(" |", maxsplit=1)[0]
    if text == "" and "None" in spec:
        return None
    try:
        if base.startswith("tuple"):
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if base == "bool":
            return _boolean(text)
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        reason = f"must be {base}"
        raise SettingsError(f"environment variable {name}", key, text, reason) from None
    return text


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in _TRUE | _FALSE:
        raise ValueError(text)
    return lowered in _TRUE


def _build(values: dict[str, Any], origin: dict[str, str], env: Mapping[str, str]) -> Settings:
    def section(names: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        return {n: values[prefix + n] for n in names if prefix + n in values}

    engine_values = section(_TOP_ENGINE)
    daemon_values = section(_TOP_DAEMON)
    if "state_directory" not in daemon_values and env.get("STATE_DIRECTORY"):
        # systemd's StateDirectory= (the first, when it lists several).
        daemon_values["state_directory"] = env["STATE_DIRECTORY"].split(":")[0]
    try:
        daemon = DaemonSettings(**daemon_values)
        if "database_path" not in engine_values:
            engine_values["database_path"] = str(Path(daemon.state_directory) / "checkpointd.db")
        # The daemon projects on another core: its projector is a process of its own.
        engine_values.setdefault("projector", "process")
        if isinstance(engine_values.get("encryption_old_keys"), list):
            engine_values["encryption_old_keys"] = tuple(engine_values["encryption_old_keys"])
        engine = Config(**engine_values)
        nats = NatsSettings(**section(_NATS, "nats."))
        http = HttpSettings(**section(_HTTP, "http."))
        _check_secrets(engine, nats)
        _check_backend(daemon, nats)
    except ConfigError as exc:
        source = origin.get(exc.key) or origin.get(_RELATED.get(exc.key, ""), "default")
        value = values.get(exc.key)
        raise SettingsError(source, exc.key, _mask(exc.key, value), exc.reason) from None
    return Settings(engine, daemon, nats, http)


def _check_backend(daemon: DaemonSettings, nats: NatsSettings) -> None:
    if daemon.log_backend == "jetstream" and nats.url is None:
        reason = "needs nats.url: the NATS cluster's servers (nats://a,nats://b,nats://c)"
        raise ConfigError("log_backend", daemon.log_backend, reason)


def _check_secrets(engine: Config, nats: NatsSettings) -> None:
    """Read the key and credentials files and check the key's form now, not at first use."""
    secret = engine.encryption_secret(environ={})
    if engine.enable_encryption and secret is None:
        raise ConfigError("encryption_key", None, "enable_encryption is on but no key is set")
    if secret is not None:
        check_secret(secret)
    for old in engine.encryption_old_keys:
        check_secret(old, setting="encryption_old_keys")
    for key in _FILES:
        path = getattr(nats, key)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"nats.{key}", path, "cannot read the file")
    if nats.url is None:
        embedded_authorization(nats)  # what the embedded server cannot apply is refused now
    elif nats.nkey_seed_file is not None:
        public_nkey(nats.nkey_seed_file)  # nats-py cannot sign with it without nkeys either


def _mask(key: str, value: Any) -> Any:
    if key in _SECRETS and value not in (None, (), ""):
        return _MASK
    if key == "nats.url" and isinstance(value, str):
        return safe_url(value, mask=_MASK)
    return value


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
