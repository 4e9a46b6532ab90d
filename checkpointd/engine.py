"""Opening the write side: the log's connection, migrations, keyring and codec.

Runs once, on the writer thread, when a CheckpointManager opens.
"""

from __future__ import annotations

import os
import sqlite3

import structlog

from checkpointd.clock import Clock
from checkpointd.config import Config
from checkpointd.errors import ConfigError
from checkpointd.snapshots import Compression, Keyring, SnapshotCodec
from checkpointd.storage.schema import migrate
from checkpointd.storage.sqlite import connect_writer, translate
from checkpointd.write.handler import CommandHandler

log = structlog.get_logger("checkpointd")


def open_write_side(config: Config, clock: Clock) -> CommandHandler:
    """Open (creating and migrating) the log and build the command handler over it.

    Raises:
        ConfigError: the encryption settings are unusable.
        StorageError, IntegrityError: the database cannot be opened.
    """
    try:
        conn = connect_writer(config.database_path, config.durability)
    except sqlite3.OperationalError:
        reason = "cannot open it: does its directory exist, and is it writable?"
        raise ConfigError("database_path", config.database_path, reason) from None
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    try:
        migrate(conn)
        codec = build_codec(config, _kdf_salt(conn))
        handler = CommandHandler(conn, config=config, codec=codec, clock=clock)
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc) from exc
    except BaseException:
        conn.close()
        raise
    return handler


def build_codec(config: Config, salt: bytes) -> SnapshotCodec:
    """The snapshot codec the settings describe; the keyring from the key settings."""
    secret = config.encryption_secret()
    if config.enable_encryption and secret is None:
        raise ConfigError(
            "encryption_key",
            None,
            "enable_encryption is on but no key is set (encryption_key,"
            " CHECKPOINTD_ENCRYPTION_KEY or encryption_key_file)",
        )
    keyring = (
        None
        if secret is None and not config.encryption_old_keys
        else Keyring.from_secrets(secret, config.encryption_old_keys, salt)
    )
    return SnapshotCodec(
        compression=Compression(config.compression_algorithm),
        compression_level=config.compression_level,
        keyring=keyring,
        max_size=config.max_checkpoint_size,
    )


def _kdf_salt(conn: sqlite3.Connection) -> bytes:
    """The database's random KDF salt, created on first open."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'kdf_salt'").fetchone()
    if row is not None:
        return bytes(row[0])
    salt = os.urandom(16)
    conn.execute("INSERT INTO meta (key, value) VALUES ('kdf_salt', ?)", (salt,))
    return salt
