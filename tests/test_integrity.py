"""Keys, tampering and retention: what the store does when bytes or time are not what they were."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import TEST_KEY, FakeClock, OpenManager, blob_count

from checkpointd import Checkpoint, CheckpointManager
from checkpointd.errors import ConfigError, IntegrityError

OTHER_KEY = "ffeeddccbbaa99887766554433221100" * 2
PASSPHRASE = "correct horse battery staple"  # noqa: S105 - a test key, not a credential
KEY_ENV = "CHECKPOINTD_ENCRYPTION_KEY"


async def create(manager: CheckpointManager, name: str, **fields: Any) -> Checkpoint:
    fields.setdefault("snapshot", {"state": {"name": name, "pad": "x" * 64}})
    return await manager.create(name=name, session_id="s-1", branches=["main"], **fields)


async def readable(manager: CheckpointManager, cp: Checkpoint) -> bool:
    got = await manager.get_checkpoint(cp.id)
    return got is not None and got.snapshot == cp.snapshot


def blob_rowids(db_path: Path) -> list[int]:
    """The rowids of the ``blobs`` table in insertion order (one blob per create)."""
    with closing(sqlite3.connect(db_path)) as conn:
        return [row[0] for row in conn.execute("SELECT rowid FROM blobs ORDER BY rowid")]


def edit_blob(db_path: Path, rowid: int, edit: Any) -> None:
    with closing(sqlite3.connect(db_path)) as conn, conn:
        (data,) = conn.execute("SELECT data FROM blobs WHERE rowid = ?", (rowid,)).fetchone()
        conn.execute("UPDATE blobs SET data = ? WHERE rowid = ?", (edit(bytes(data)), rowid))


def flip(offset: int) -> Any:
    def edit(data: bytes) -> bytes:
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        return bytes(damaged)

    return edit


# -- keys --------------------------------------------------------------------------------------


async def test_wrong_key_fails_the_read_not_the_open(open_manager: OpenManager) -> None:
    """A wrong key fails the read of encrypted snapshots, naming the checkpoint, not the open."""
    # A key without enable_encryption: encryption is per checkpoint, so a plain one can be made.
    first = await open_manager(encryption_key=TEST_KEY)
    secret = await create(first, "secret", encrypted=True)
    plain = await create(first, "plain", encrypted=False)
    assert (secret.encrypted, plain.encrypted) == (True, False)
    await first.close()

    wrong = await open_manager(enable_encryption=True, encryption_key=OTHER_KEY)
    with pytest.raises(IntegrityError, match=secret.id) as caught:
        await wrong.get_checkpoint(secret.id)
    assert caught.value.checkpoint_id == secret.id
    assert await readable(wrong, plain)
    bare = await wrong.get_checkpoint(secret.id, include_snapshot=False)
    assert bare is not None
    assert (bare.name, bare.checksum) == ("secret", secret.checksum)
    assert (await wrong.get_checkpoints_by_session("s-1")).total == 2


async def test_missing_key_names_the_fix(open_manager: OpenManager) -> None:
    """Without any key, reading an encrypted snapshot says which setting would open it."""
    first = await open_manager(enable_encryption=True, encryption_key=TEST_KEY)
    secret = await create(first, "secret")
    await first.close()

    keyless = await open_manager()
    with pytest.raises(IntegrityError, match=f"{secret.id}.*encryption_old_keys"):
        await keyless.get_checkpoint(secret.id)


async def test_key_rotation_keeps_old_snapshots_readable(open_manager: OpenManager) -> None:
    """After rotating, old snapshots open with the old key kept in encryption_old_keys."""
    before = await open_manager(enable_encryption=True, encryption_key=PASSPHRASE)
    old = await create(before, "old")
    await before.close()

    rotated = await open_manager(
        enable_encryption=True, encryption_key=OTHER_KEY, encryption_old_keys=[PASSPHRASE]
    )
    new = await create(rotated, "new")
    assert await readable(rotated, old)
    assert await readable(rotated, new)
    await rotated.close()

    dropped = await open_manager(enable_encryption=True, encryption_key=OTHER_KEY)
    assert await readable(dropped, new)
    with pytest.raises(IntegrityError, match=old.id):
        await dropped.get_checkpoint(old.id)


async def test_key_from_the_environment(
    open_manager: OpenManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHECKPOINTD_ENCRYPTION_KEY supplies the key when no key setting is given."""
    monkeypatch.setenv(KEY_ENV, OTHER_KEY)
    from_env = await open_manager(enable_encryption=True)
    cp = await create(from_env, "env")
    assert cp.encrypted
    await from_env.close()
    monkeypatch.delenv(KEY_ENV)

    explicit = await open_manager(encryption_key=OTHER_KEY)
    assert await readable(explicit, cp)
    await explicit.close()
    keyless = await open_manager()
    with pytest.raises(IntegrityError, match=cp.id):
        await keyless.get_checkpoint(cp.id)


async def test_key_from_a_file(open_manager: OpenManager, tmp_path: Path) -> None:
    """encryption_key_file supplies the key, trailing newline and all."""
    key_file = tmp_path / "key"
    key_file.write_text(PASSPHRASE + "\n", encoding="utf-8")
    from_file = await open_manager(enable_encryption=True, encryption_key_file=str(key_file))
    cp = await create(from_file, "file")
    assert cp.encrypted
    await from_file.close()

    explicit = await open_manager(encryption_key=PASSPHRASE)
    assert await readable(explicit, cp)


async def test_unreadable_key_file(open_manager: OpenManager, tmp_path: Path) -> None:
    """A key file that does not exist stops the open with a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match="encryption_key_file"):
        await open_manager(enable_encryption=True, encryption_key_file=str(tmp_path / "nope"))


async def test_encryption_without_a_key(open_manager: OpenManager) -> None:
    """enable_encryption with no key anywhere stops the open with a ConfigError."""
    with pytest.raises(ConfigError, match="encryption_key"):
        await open_manager(enable_encryption=True)


async def test_key_material_is_never_in_a_message(open_manager: OpenManager) -> None:
    """A rejected key setting is reported without the secret itself."""
    with pytest.raises(ConfigError, match="encryption_key") as caught:
        await open_manager(enable_encryption=True, encryption_key="short")
    assert "short" not in str(caught.value)


# -- tampering ---------------------------------------------------------------------------------

TAMPERED = [
    pytest.param({"compressed": False}, -1, id="plain-last-byte"),
    pytest.param({"compressed": False}, 0, id="plain-magic"),
    pytest.param({"snapshot": {"log": "all green. " * 400}}, -5, id="gzip-stream"),
    pytest.param({"snapshot": {"log": "all green. " * 400}}, 4, id="gzip-header"),
    pytest.param({"encrypted": True}, -1, id="encrypted-tag"),
    pytest.param({"encrypted": True}, 5, id="encrypted-flag"),
]


@pytest.mark.parametrize(("fields", "offset"), TAMPERED)
async def test_a_flipped_byte_in_a_blob(
    open_manager: OpenManager, db_path: Path, fields: dict[str, Any], offset: int
) -> None:
    """A changed byte in a stored snapshot fails the read of that checkpoint only."""
    manager = await open_manager(encryption_key=TEST_KEY)
    victim = await create(manager, "victim", **fields)
    bystander = await create(manager, "bystander", **fields)
    await manager.close()
    edit_blob(db_path, blob_rowids(db_path)[0], flip(offset))

    reopened = await open_manager(encryption_key=TEST_KEY)
    with pytest.raises(IntegrityError, match=victim.id):
        await reopened.get_checkpoint(victim.id)
    assert await readable(reopened, bystander)
    bare = await reopened.get_checkpoint(victim.id, include_snapshot=False)
    assert bare is not None
    assert bare.checksum == victim.checksum


async def test_validate_reports_damage_instead_of_raising(
    open_manager: OpenManager, db_path: Path
) -> None:
    """validate_checkpoint of a damaged blob says it is invalid, and of its neighbour valid."""
    manager = await open_manager()
    victim = await create(manager, "victim", compressed=False)
    bystander = await create(manager, "bystander", compressed=False)
    await manager.close()
    edit_blob(db_path, blob_rowids(db_path)[0], flip(-1))

    reopened = await open_manager()
    damaged = await reopened.validate_checkpoint(victim.id)
    assert (damaged.is_valid, damaged.checksum_valid) == (False, False)
    assert damaged.errors
    assert (await reopened.validate_checkpoint(bystander.id)).is_valid


async def test_validate_reports_a_wrong_key(open_manager: OpenManager) -> None:
    """validate_checkpoint under the wrong key reports the checkpoint invalid, naming the key."""
    first = await open_manager(enable_encryption=True, encryption_key=TEST_KEY)
    secret = await create(first, "secret")
    await first.close()

    wrong = await open_manager(encryption_key=OTHER_KEY)
    report = await wrong.validate_checkpoint(secret.id)
    assert report.is_valid is False
    assert any("key" in error for error in report.errors)


async def test_a_blob_moved_to_another_checkpoint(open_manager: OpenManager, db_path: Path) -> None:
    """An encrypted snapshot copied into another checkpoint's row does not open there."""
    manager = await open_manager(enable_encryption=True, encryption_key=TEST_KEY)
    source = await create(manager, "source", snapshot={"state": {"same": True}})
    target = await create(manager, "target", snapshot={"state": {"same": True}})
    assert source.checksum == target.checksum
    await manager.close()
    first, second = blob_rowids(db_path)
    with closing(sqlite3.connect(db_path)) as conn, conn:
        (data,) = conn.execute("SELECT data FROM blobs WHERE rowid = ?", (first,)).fetchone()
        conn.execute("UPDATE blobs SET data = ? WHERE rowid = ?", (data, second))

    reopened = await open_manager(encryption_key=TEST_KEY)
    with pytest.raises(IntegrityError, match=target.id):
        await reopened.get_checkpoint(target.id)
    assert await readable(reopened, source)


def edit_event(db_path: Path, seq: int, sql: str, *args: Any) -> None:
    """Tamper with the log as someone holding the file could: drop the guards, then edit."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute(sql, (*args, seq))


async def events_of_three_commands(open_manager: OpenManager) -> list[Checkpoint]:
    manager = await open_manager()
    first = await create(manager, "first")
    second = await create(manager, "second")
    await manager.update_checkpoint(first.id, {"name": "first-renamed"})
    await manager.close()
    return [first, second]


async def test_a_tampered_event_breaks_the_chain(open_manager: OpenManager, db_path: Path) -> None:
    """Changing the data of event 2 makes verify_log report ok False at seq 2."""
    await events_of_three_commands(open_manager)
    with closing(sqlite3.connect(db_path)) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE seq = 2").fetchone()
    forged = msgpack.unpackb(data, raw=False)
    forged["checksum"] = "sha256:" + "0" * 64
    edit_event(db_path, 2, "UPDATE events SET data = ? WHERE seq = ?", msgpack.packb(forged))

    manager = await open_manager()
    result = await manager.verify_log()
    assert (result.ok, result.first_bad_seq, result.events) == (False, 2, 1)


@pytest.mark.parametrize(
    ("sql", "args"),
    [
        pytest.param("UPDATE events SET type = ? WHERE seq = ?", ["checkpoint.deleted"], id="type"),
        pytest.param("UPDATE events SET at = ? WHERE seq = ?", ["2020-01-01T00:00:00Z"], id="at"),
        pytest.param("UPDATE events SET actor = ? WHERE seq = ?", ["mallory"], id="actor"),
        pytest.param("DELETE FROM events WHERE seq = ?", [], id="removed"),
    ],
)
async def test_any_change_to_an_event_is_found(
    open_manager: OpenManager, db_path: Path, sql: str, args: list[Any]
) -> None:
    """A changed header field or a removed event is reported at seq 2."""
    await events_of_three_commands(open_manager)
    edit_event(db_path, 2, sql, *args)
    manager = await open_manager()
    result = await manager.verify_log()
    assert (result.ok, result.first_bad_seq) == (False, 2)


# -- retention ---------------------------------------------------------------------------------


async def test_expired_checkpoints_are_removed(
    manager: CheckpointManager, clock: FakeClock, db_path: Path
) -> None:
    """A checkpoint past its retention expires: its own event type, its bytes gone, once."""
    old = await create(manager, "old", retention_expires_at=clock.now() - timedelta(seconds=1))
    kept = await create(manager, "kept", retention_expires_at=clock.now() + timedelta(days=1))
    forever = await create(manager, "forever")
    assert await manager.delete_expired_checkpoints() == 1
    assert await manager.get_checkpoint(old.id) is None
    assert await readable(manager, kept)
    assert await readable(manager, forever)
    history = await manager.history({"checkpointId": old.id})
    assert [e.type for e in history.events] == ["checkpoint.created", "checkpoint.expired"]
    assert history.events[1].data["checksum"] == old.checksum
    assert blob_count(db_path) == 2
    assert await manager.delete_expired_checkpoints() == 0


async def test_default_retention_days(open_manager: OpenManager, clock: FakeClock) -> None:
    """With default_retention_days=30 a checkpoint expires after 30 days and not before."""
    manager = await open_manager(default_retention_days=30)
    cp = await create(manager, "monthly")
    assert cp.retention_expires_at == clock.now() + timedelta(days=30)
    clock.advance(timedelta(days=29))
    assert await manager.delete_expired_checkpoints() == 0
    assert await readable(manager, cp)
    clock.advance(timedelta(days=2))
    assert await manager.cleanup_once() == 1
    assert await manager.get_checkpoint(cp.id) is None


async def test_explicit_retention_beats_the_default(
    open_manager: OpenManager, clock: FakeClock
) -> None:
    """A checkpoint's own retentionExpiresAt wins over default_retention_days."""
    manager = await open_manager(default_retention_days=30)
    later = clock.now() + timedelta(days=90)
    cp = await create(manager, "quarterly", retention_expires_at=later)
    clock.advance(timedelta(days=31))
    assert await manager.delete_expired_checkpoints() == 0
    assert cp.retention_expires_at == later


async def test_updated_retention_is_honoured(manager: CheckpointManager, clock: FakeClock) -> None:
    """Shortening a checkpoint's retention by update makes it expire on the new date."""
    cp = await create(manager, "extended", retention_expires_at=clock.now() + timedelta(days=90))
    await manager.update_checkpoint(cp.id, retention_expires_at=clock.now() + timedelta(days=1))
    clock.advance(timedelta(days=2))
    assert await manager.delete_expired_checkpoints() == 1


async def test_many_expire_at_once(manager: CheckpointManager, clock: FakeClock) -> None:
    """More expired checkpoints than one expiry step handles are all removed in one call."""
    due = clock.now() + timedelta(hours=1)
    await manager.create_batch(
        [
            {
                "name": f"cp-{n}",
                "sessionId": "s-1",
                "snapshot": {"n": n},
                "branches": [],
                "retentionExpiresAt": due,
            }
            for n in range(1000)
        ]
    )
    clock.advance(timedelta(hours=2))
    assert await manager.delete_expired_checkpoints() == 1000
    assert (await manager.get_checkpoints_by_session("s-1")).total == 0


async def test_the_event_log_refuses_edits_through_sql(
    open_manager: OpenManager, db_path: Path
) -> None:
    """Updating or deleting a stored event through SQL is refused by the database itself."""
    await events_of_three_commands(open_manager)
    with closing(sqlite3.connect(db_path)) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events WHERE seq = 1")
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
