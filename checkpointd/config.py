"""Settings of the engine, named as the original Checkpoint API's configuration, in snake_case.

Durations are seconds (the original ``cleanupInterval``/``metricsInterval`` were milliseconds).
``Config.from_seed`` takes the original API's configuration mapping as it is: camelCase names,
durations in milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from checkpointd.errors import ConfigError

KEY_ENV = "CHECKPOINTD_ENCRYPTION_KEY"

_CHOICES: dict[str, tuple[str, ...]] = {
    "compression_algorithm": ("gzip", "zstd", "none"),
    "encryption_algorithm": ("aes-256-gcm",),
    "validation_algorithm": ("sha256",),
    "durability": ("full", "normal"),
    "projector": ("thread", "process"),
}


@dataclass(frozen=True, slots=True)
class Config:
    """Every engine setting with its default; invalid values raise ConfigError on construction."""

    database_path: str = "checkpointd.db"
    enable_compression: bool = True
    compression_algorithm: str = "gzip"
    compression_level: int | None = None
    enable_encryption: bool = False
    encryption_algorithm: str = "aes-256-gcm"
    encryption_key: str | None = field(default=None, repr=False)
    encryption_key_file: str | None = None
    encryption_old_keys: tuple[str, ...] = field(default=(), repr=False)
    default_retention_days: float | None = None
    max_checkpoint_size: int = 100 * 1024 * 1024
    enable_validation: bool = True
    validation_algorithm: str = "sha256"
    enable_fts: bool = True
    auto_cleanup: bool = True
    cleanup_interval: float = 86_400.0
    enable_metrics: bool = False
    metrics_interval: float = 60.0
    durability: str = "full"
    reader_connections: int = 4
    max_group_size: int = 512
    idempotency_window: float = 86_400.0
    views_path: str | None = None
    projector: str = "thread"
    read_timeout: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            check_type(f.name, getattr(self, f.name), f.type)
        for key, allowed in _CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(key, value, f"must be one of {', '.join(allowed)}")
        for key in ("max_checkpoint_size", "reader_connections", "max_group_size"):
            if getattr(self, key) < 1:
                raise ConfigError(key, getattr(self, key), "must be at least 1")
        for key in ("cleanup_interval", "metrics_interval", "idempotency_window", "read_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(key, getattr(self, key), "must be positive")
        if self.default_retention_days is not None and self.default_retention_days <= 0:
            raise ConfigError("default_retention_days", self.default_retention_days, "must be > 0")

    @property
    def views_file(self) -> str:
        """Where the views live: ``views_path``, else the log's path with ``.views`` added."""
        return self.views_path or f"{os.fspath(self.database_path)}.views"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """A Config from settings by name; an unknown name is a ConfigError."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(key, values[key], "unknown setting")
        data = dict(values)
        if isinstance(data.get("encryption_old_keys"), list):
            data["encryption_old_keys"] = tuple(data["encryption_old_keys"])
        return cls(**data)

    @classmethod
    def from_seed(cls, values: Mapping[str, Any]) -> Config:
        """A Config from the original API's configuration mapping (``{"databasePath": ..., ...}``).

        Names are camelCase (``enableFTS`` as the original spells it, or ``enableFts``) and the
        durations ``cleanupInterval``, ``metricsInterval`` and ``idempotencyWindow`` are in
        milliseconds, as in the original (``cleanupInterval: 86400000`` is a day). A snake_case
        name is taken as the keyword argument is, durations in seconds.

        Raises:
            ConfigError: an unknown name, a setting given under both names, or a bad value;
                the message names the key as it was given.
        """
        if not isinstance(values, Mapping):
            raise ConfigError("config", type(values).__name__, "expected a mapping of settings")
        known = {f.name for f in fields(cls)}
        settings: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for key, value in values.items():
            name = _SEED_NAMES.get(key, key)
            if not isinstance(key, str) or name not in known:
                raise ConfigError(str(key), value, "unknown setting")
            if name in given_as:
                raise ConfigError(str(key), value, f"given twice (also as {given_as[name]!r})")
            given_as[name] = key
            settings[name] = _seconds(key, value) if key in _MILLISECONDS else value
        try:
            return cls.from_mapping(settings)
        except ConfigError as exc:
            key = given_as.get(exc.key, exc.key)
            raise ConfigError(key, values.get(key), exc.reason) from None

    def encryption_secret(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The active key: the setting, else ``CHECKPOINTD_ENCRYPTION_KEY``, else the key file.

        Raises:
            ConfigError: the key file cannot be read or is empty.
        """
        if self.encryption_key:
            return self.encryption_key
        env = os.environ if environ is None else environ
        if env.get(KEY_ENV):
            return env[KEY_ENV]
        if self.encryption_key_file is None:
            return None
        try:
            secret = Path(self.encryption_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else None
            reason = f"cannot read key file: {detail or type(exc).__name__}"
            raise ConfigError("encryption_key_file", self.encryption_key_file, reason) from None
        if not secret:
            raise ConfigError("encryption_key_file", self.encryption_key_file, "key file is empty")
        return secret


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


# The original Checkpoint API document's configuration names: every setting in camelCase,
# and ``enableFTS`` as that document spells it.
_SEED_NAMES = {_camel(f.name): f.name for f in fields(Config)} | {"enableFTS": "enable_fts"}
_MILLISECONDS = frozenset({"cleanupInterval", "metricsInterval", "idempotencyWindow"})


def _seconds(key: str, value: Any) -> Any:
    """A duration given in milliseconds, in seconds (the setting checks anything else)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, value, "must be a number of milliseconds")
    return value / 1000


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
}


def check_type(key: str, value: Any, annotation: Any) -> None:
    spec = str(annotation)
    if value is None:
        if "None" not in spec:
            raise ConfigError(key, value, "must not be null")
        return
    if spec.startswith("tuple"):
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, value, "must be a list of strings")
        return
    base = spec.split(" |", maxsplit=1)[0]
    expected = _TYPES[base]
    if isinstance(value, bool) and bool not in expected:
        raise ConfigError(key, value, f"must be {base}, not a boolean")
    if not isinstance(value, expected):
        raise ConfigError(key, value, f"must be {base}, not {type(value).__name__}")
