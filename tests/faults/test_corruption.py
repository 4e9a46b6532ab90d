"""Scenario 10: keys and damaged bytes, through the daemon and the wire.

A wrong key, an old key dropped after a rotation, a ciphertext moved to another checkpoint's row,
a flipped byte in a blob and in the raw database file, a decompression bomb. Each time, for the
checkpoints hit: a read is an integrity error (422) naming the checkpoint and never the wrong
data, ``validate`` reports it (``isValid`` false, naming it) instead of failing, a restore is
refused; every other checkpoint still reads back as it was written, and the daemon keeps serving
(``$SRV.PING``, a new create). Bytes are edited only while no daemon has the file open.

``tests/test_integrity.py`` covers the same damage at library level; here it goes through
``checkpointd serve`` and ``CheckpointClient`` (and raw NATS for the status code), and adds what
the library tests do not: the bomb, a flipped byte in a raw database page, a missing old key.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from daemon.serving import DEADLINE, Daemon, Daemons
from nats.aio.client import Client
from natsserver import service_id

from checkpointd import Checkpoint, CheckpointClient
from checkpointd.errors import IntegrityError
from checkpointd.snapshots.blob import MAGIC
from checkpointd.snapshots.crypto import key_id

from .oracle import check_store

KEY = "00112233445566778899aabbccddeeff" * 2
OTHER_KEY = "ffeeddccbbaa99887766554433221100" * 2
NEW_KEY = "0123456789abcdef" * 4
MiB = 1 << 20


# -- serving and checking -----------------------------------------------------------------------


@dataclass
class Ledger:
    """What the test was told and what it saw, for the oracle and the figures."""

    acked: dict[str, str] = field(default_factory=dict)  # id -> checksum of acknowledged creates
    deleted: list[str] = field(default_factory=list)
    operations: int = 0
    refused: int = 0  # reads refused with an integrity error naming the checkpoint
    wrong_data: int = 0  # reads that returned a snapshot other than the one written

    def created(self, checkpoint: Checkpoint) -> Checkpoint:
        self.acked[checkpoint.id] = checkpoint.checksum
        self.operations += 1
        return checkpoint

    def figures(self, rounds: int) -> dict[str, Any]:
        return {
            "rounds": rounds,
            "operations": self.operations,
            "acknowledged": len(self.acked),
            "losses": 0,  # the oracle fails the test on any: a finished test lost nothing
            "refused_reads": self.refused,
            "wrong_data": self.wrong_data,
        }


@dataclass
class Served:
    """A running daemon, a client and a plain NATS connection to it."""

    daemon: Daemon
    client: CheckpointClient
    nc: Client
    ledger: Ledger

    async def create(self, name: str, **fields: Any) -> Checkpoint:
        fields.setdefault("snapshot", snapshot_of(name))
        created = await self.client.create(
            name=name, session_id="damage", branches=["main"], **fields
        )
        return self.ledger.created(created)

    async def intact(self, *checkpoints: Checkpoint) -> None:
        """Each reads back exactly as written, and validates."""
        for checkpoint in checkpoints:
            got = await self.client.get_checkpoint(checkpoint.id)
            report = await self.client.validate_checkpoint(checkpoint.id)
            self.ledger.operations += 2
            assert got is not None, checkpoint.id
            if got.snapshot != checkpoint.snapshot:
                self.ledger.wrong_data += 1
            assert (got.snapshot, got.checksum) == (checkpoint.snapshot, checkpoint.checksum)
            assert (report.checksum_valid, report.size_matches) == (True, True), report

    async def refused(self, checkpoint: Checkpoint, *words: str) -> str:
        """A read of ``checkpoint`` is an integrity error naming it (and ``words``), on the
        client and on the wire (422, no snapshot in the body); its row still reads without the
        snapshot; validate reports it invalid, naming it; a restore is refused. Returns the
        error message."""
        try:
            got = await self.client.get_checkpoint(checkpoint.id)
        except IntegrityError as exc:
            message = exc.message
        else:
            if got is None or got.snapshot != checkpoint.snapshot:
                self.ledger.wrong_data += 1
            raise AssertionError(f"a read of damaged {checkpoint.id} returned {got}")
        assert checkpoint.id in message, message
        for word in words:
            assert word in message, message
        reply = await self.nc.request(
            f"{self.daemon.prefix}.get",
            json.dumps({"id": checkpoint.id}).encode(),
            timeout=DEADLINE,
        )
        headers = reply.headers or {}
        assert headers.get("Nats-Service-Error-Code") == "422", (headers, reply.data[:200])
        body = json.loads(reply.data)
        assert set(body) == {"error"}, body
        assert body["error"]["code"] == "integrity"
        bare = await self.client.get_checkpoint(checkpoint.id, include_snapshot=False)
        assert bare is not None
        assert bare.checksum == checkpoint.checksum
        report = await self.client.validate_checkpoint(checkpoint.id)
        assert report.is_valid is False, report
        assert any(checkpoint.id in error for error in report.errors), report.errors
        with pytest.raises(IntegrityError, match=checkpoint.id):
            await self.client.restore_checkpoint(checkpoint.id, dry_run=True)
        self.ledger.operations += 5
        self.ledger.refused += 1
        return message

    async def still_serving(self) -> Checkpoint:
        """The process runs, ``$SRV.PING`` of its service answers, a new create reads back."""
        assert self.daemon.process.poll() is None, self.daemon.diagnostics()
        ident = await service_id(self.nc, self.daemon.prefix)
        pong = await self.nc.request(f"$SRV.PING.checkpointd.{ident}", b"", timeout=DEADLINE)
        assert json.loads(pong.data)["name"] == "checkpointd"
        fresh = await self.create("still serving", encrypted=False)
        await self.intact(fresh)
        return fresh

    async def delete(self, *checkpoints: Checkpoint) -> None:
        """The remedy for a damaged checkpoint: delete it (which needs no readable snapshot)."""
        for checkpoint in checkpoints:
            assert await self.client.delete_checkpoint(checkpoint.id)
            del self.ledger.acked[checkpoint.id]
            self.ledger.deleted.append(checkpoint.id)
            self.ledger.operations += 1


@asynccontextmanager
async def serving(daemon: Daemon, ledger: Ledger) -> AsyncIterator[Served]:
    nc = await nats.connect(daemon.url)
    try:
        async with CheckpointClient(
            daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE
        ) as client:
            yield Served(daemon, client, nc, ledger)
    finally:
        await nc.close()


def snapshot_of(name: str) -> dict[str, Any]:
    """A snapshot of its own per name, compressible (so it is stored gzip-compressed)."""
    return {"sessions": ["damage"], "state": {"name": name, "log": f"{name} all green. " * 200}}


async def stop(daemon: Daemon) -> None:
    assert await asyncio.to_thread(daemon.stop) == 0, daemon.diagnostics()


def start_on(daemons: Daemons, state: Path, **settings: Any) -> Daemon:
    """A daemon on an existing state directory, with these settings."""
    return daemons.start({"state_directory": str(state), **settings})


async def finish(
    db_path: Path, ledger: Ledger, figures: dict[str, Any], rounds: int, **key: Any
) -> None:
    """The oracle on the stopped store: every acknowledged create is there (the deleted ones
    are not), and the figures."""
    verdict = await check_store(db_path, acked=ledger.acked, deleted=ledger.deleted, **key)
    figures.update(ledger.figures(rounds), events=verdict.events)
    assert ledger.wrong_data == 0


# -- editing the file ---------------------------------------------------------------------------


def blob_of(db_path: Path, checkpoint_id: str) -> bytes:
    with closing(sqlite3.connect(db_path)) as conn:
        (data,) = conn.execute(
            "SELECT b.data FROM blobs b JOIN events e ON b.seq = e.seq"
            " WHERE e.stream = ? AND e.version = 1",
            (checkpoint_id,),
        ).fetchone()
    return bytes(data)


def put_blob(db_path: Path, checkpoint_id: str, data: bytes) -> None:
    """Replace a checkpoint's stored bytes (nothing else: its row still records the old ones)."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        (seq,) = conn.execute(
            "SELECT seq FROM events WHERE stream = ? AND version = 1", (checkpoint_id,)
        ).fetchone()
        conn.execute("UPDATE blobs SET data = ? WHERE seq = ?", (data, seq))


def flipped(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0x01
    return bytes(damaged)


# -- keys ---------------------------------------------------------------------------------------


async def test_a_wrong_key_refuses_encrypted_reads_and_serves_the_rest(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Restarted with another key, the daemon refuses every read of an encrypted checkpoint with
    an integrity error naming it, reads unencrypted ones, keeps serving; with the right key back
    every checkpoint reads as written (the wrong key damaged nothing)."""
    ledger = Ledger()
    # A key without enable_encryption: encryption is per checkpoint, so a plain one can be made.
    first = daemons.start({"encryption_key": KEY})
    async with serving(first, ledger) as served:
        secrets = [await served.create(f"secret {n}", encrypted=True) for n in range(3)]
        plain = await served.create("plain", encrypted=False)
        assert all(cp.encrypted for cp in secrets)
        assert not plain.encrypted
    await stop(first)

    wrong = start_on(daemons, first.state, encryption_key=OTHER_KEY)
    async with serving(wrong, ledger) as served:
        for secret in secrets:
            await served.refused(secret, key_id(bytes.fromhex(KEY)), "encryption_old_keys")
        await served.intact(plain)
        await served.still_serving()
    await stop(wrong)

    right = start_on(daemons, first.state, encryption_key=KEY)
    async with serving(right, ledger) as served:
        await served.intact(*secrets, plain)
    await stop(right)
    await finish(first.db_path, ledger, figures, rounds=3, encryption_key=KEY)


async def test_a_dropped_old_key_names_the_fix_and_the_new_key_still_reads(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """After a rotation (new key, old key in encryption_old_keys) both generations read; with
    the old key dropped, the old checkpoints are integrity errors naming the checkpoint, the
    missing key id and the setting that fixes it, while new and unencrypted ones read."""
    ledger = Ledger()
    old_id, new_id = key_id(bytes.fromhex(KEY)), key_id(bytes.fromhex(NEW_KEY))
    first = daemons.start({"encryption_key": KEY})  # encrypting per checkpoint, as above
    async with serving(first, ledger) as served:
        old = [
            await served.create(f"sealed with the old key {n}", encrypted=True) for n in range(2)
        ]
        plain = await served.create("plain", encrypted=False)
    await stop(first)

    rotated = start_on(
        daemons,
        first.state,
        encryption_key=NEW_KEY,
        encryption_old_keys=[KEY],
        enable_encryption=True,
    )
    async with serving(rotated, ledger) as served:
        await served.intact(*old, plain)
        new = [await served.create(f"sealed with the new key {n}") for n in range(2)]
    await stop(rotated)

    dropped = start_on(daemons, first.state, encryption_key=NEW_KEY)
    async with serving(dropped, ledger) as served:
        for checkpoint in old:
            message = await served.refused(checkpoint, old_id, "encryption_old_keys")
            assert new_id not in message
            report = await served.client.validate_checkpoint(checkpoint.id)
            assert any("encryption_old_keys" in error for error in report.errors), report
        await served.intact(*new, plain)
        await served.still_serving()
    await stop(dropped)

    # This store needs both key generations.
    await finish(
        first.db_path, ledger, figures, rounds=3, encryption_key=NEW_KEY, encryption_old_keys=[KEY]
    )


# -- moved and flipped bytes --------------------------------------------------------------------


async def test_a_ciphertext_moved_to_another_row_never_reads_as_the_other_checkpoint(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Two encrypted checkpoints' blobs swapped, and a plain one's copied over another's: each
    read is an integrity error naming the checkpoint asked for, never the other's snapshot
    (the associated data binds a ciphertext to its checkpoint id; the checksum catches the rest)."""
    ledger = Ledger()
    first = daemons.start({"encryption_key": KEY})
    async with serving(first, ledger) as served:
        left = await served.create("left", encrypted=True)
        right = await served.create("right", encrypted=True)
        source = await served.create("source", encrypted=False)
        target = await served.create("target", encrypted=False)
        bystander = await served.create("bystander", encrypted=True)
    await stop(first)
    left_blob, right_blob = blob_of(first.db_path, left.id), blob_of(first.db_path, right.id)
    put_blob(first.db_path, left.id, right_blob)
    put_blob(first.db_path, right.id, left_blob)
    put_blob(first.db_path, target.id, blob_of(first.db_path, source.id))

    again = daemons.restart(first)
    async with serving(again, ledger) as served:
        await served.refused(left, "decryption failed")
        await served.refused(right, "decryption failed")
        await served.refused(target, "checksum mismatch")
        await served.intact(source, bystander)
        await served.still_serving()
        await served.delete(left, right, target)
    await stop(again)
    await finish(first.db_path, ledger, figures, rounds=3, encryption_key=KEY)


BLOB_DAMAGE = {
    # name: (create fields, offset of the flipped byte in the blob)
    "plain, last byte": ({"encrypted": False, "compressed": False}, -1),
    "gzip stream": ({"encrypted": False}, -5),
    "gzip magic": ({"encrypted": False}, 6),
    "encrypted, tag": ({"encrypted": True}, -1),
    "encrypted, flag": ({"encrypted": True}, 5),
    "encrypted, nonce": ({"encrypted": True}, 7 + 16 + 3),
}


async def test_a_flipped_byte_in_a_blob_fails_that_checkpoint_only(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """One byte flipped in the stored snapshot of a plain, a gzip and an encrypted checkpoint
    (stream, header, tag, flag, nonce): each read is a 422 naming that checkpoint; the
    undamaged twins read back; deleting the damaged ones leaves a store that passes the oracle."""
    ledger = Ledger()
    first = daemons.start({"encryption_key": KEY})
    async with serving(first, ledger) as served:
        victims = {name: await served.create(name, **f) for name, (f, _) in BLOB_DAMAGE.items()}
        twins = [
            await served.create(f"twin of {name}", **f) for name, (f, _) in BLOB_DAMAGE.items()
        ]
    await stop(first)
    for name, (_, offset) in BLOB_DAMAGE.items():
        victim = victims[name]
        put_blob(first.db_path, victim.id, flipped(blob_of(first.db_path, victim.id), offset))

    again = daemons.restart(first)
    async with serving(again, ledger) as served:
        for victim in victims.values():
            await served.refused(victim)
        await served.intact(*twins)
        await served.still_serving()
        await served.delete(*victims.values())
    await stop(again)
    await finish(first.db_path, ledger, figures, rounds=len(BLOB_DAMAGE), encryption_key=KEY)


# -- the raw database file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Flip:
    """One byte flipped in the database file: where, and the bytes around it afterwards (to
    find it again should SQLite have moved its page, and to flip it back)."""

    offset: int
    context: bytes
    at: int  # the flipped byte's index in ``context``


def flip_in_file(path: Path, offset: int, *, mask: int = 0x01) -> Flip:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(data)
    start = max(0, offset - 24)
    return Flip(offset, bytes(data[start : offset + 24]), offset - start)


def unflip(path: Path, flip: Flip, mask: int = 0x01) -> None:
    """Flip the byte back, wherever its surroundings are now (exactly one place)."""
    data = bytearray(path.read_bytes())
    found = data.find(flip.context)
    assert found >= 0, "the flipped byte is gone"
    assert data.find(flip.context, found + 1) < 0, "the flipped byte is in two places"
    data[found + flip.at] ^= mask
    path.write_bytes(data)


def page_size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def integrity_check(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def overflow_page(data: bytes, marker: bytes, size: int) -> int:
    """The offset of a page of the overflow chain holding ``marker`` (uncompressed, the end of
    a blob) that is not the chain's last. An overflow page starts with the 4-byte number of the
    next page of its chain, then carries the payload on; the marker's middle is on such a page
    (a 12 KB payload keeps about 3.8 KB in its leaf page, then fills 4 KB overflow pages)."""
    for start in range(len(marker) // 2, len(marker) - 64, 64):
        found = data.find(marker[start : start + 64])  # not across a page boundary
        if found >= 0:
            break
    else:
        raise AssertionError("the marker is not in the file")
    assert data.count(marker[start : start + 64]) == 1
    page = found - found % size
    (following,) = struct.unpack(">I", data[page : page + 4])
    assert 1 < following <= len(data) // size, following
    # The page it points to carries the marker on: this really is a link of the chain.
    assert marker.find(data[(following - 1) * size + 4 :][:64]) > start
    return page


async def test_a_flipped_byte_in_the_database_file(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Bytes flipped in the raw file while the daemon is stopped: in a blob's overflow page
    (a read is a 422 naming the checkpoint), in the page pointer of another's overflow chain
    (PRAGMA integrity_check reports it; the read is a 422 naming the checkpoint, validate reports
    it) and in an event (verify reports that seq). The other checkpoints read, the daemon
    serves and writes; with the bytes flipped back the store passes the oracle, creates made
    meanwhile included."""
    ledger = Ledger()
    first = daemons.start()
    markers: dict[str, bytes] = {}
    async with serving(first, ledger) as served:
        checkpoints = []
        for name in ("payload", "pointer", "bystander"):
            marker = os.urandom(6000).hex()  # 12 KB of text: a chain of overflow pages
            checkpoints.append(
                await served.create(
                    name,
                    snapshot={"state": {"marker": marker}},
                    compressed=False,
                    encrypted=False,
                )
            )
            markers[name] = marker.encode()
        payload, pointer, bystander = checkpoints
        history = await served.client.history(checkpoint_id=payload.id)
        (created_event,) = history.events
    await stop(first)
    db = first.db_path
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "a clean stop leaves no WAL to replay"

    size = page_size(db)
    data = db.read_bytes()
    payload_page = overflow_page(data, markers["payload"], size)
    pointer_page = overflow_page(data, markers["pointer"], size)
    with closing(sqlite3.connect(db)) as conn:
        (event_data,) = conn.execute(
            "SELECT data FROM events WHERE seq = ?", (created_event.seq,)
        ).fetchone()
    digits = bytes(event_data).find(payload.checksum.removeprefix("sha256:").encode())
    assert digits > 0
    assert data.count(bytes(event_data)) == 1
    flips = [
        (flip_in_file(db, payload_page + size // 2), 0x01),
        (flip_in_file(db, pointer_page, mask=0x80), 0x80),  # the next page: far past the end
        (flip_in_file(db, data.find(bytes(event_data)) + digits + 10), 0x01),
    ]
    problems = integrity_check(db)
    assert any("invalid page number" in p for p in problems), problems

    again = daemons.restart(first)
    async with serving(again, ledger) as served:
        await served.refused(payload, "checksum mismatch")
        await served.intact(bystander)
        verified = await served.client.verify_log()
        assert (verified.ok, verified.first_bad_seq) == (False, created_event.seq), verified
        ledger.operations += 1
        await served.still_serving()
        await served.refused(pointer)
        await served.still_serving()
    await stop(again)

    for flip, mask in flips:
        unflip(db, flip, mask)
    await finish(db, ledger, figures, rounds=len(flips))


# -- decompression bombs ------------------------------------------------------------------------

BOMB = 1024 * MiB  # what each bomb expands to
LIMIT = 4 * MiB  # the daemon's max_checkpoint_size


def gzip_bomb(size: int) -> bytes:
    """A valid gzip stream of ``size`` zero bytes, made without compressing them all: after a
    full flush deflate starts afresh, so each further MiB of zeros compresses to the same bytes."""
    unit = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    last_block = compressor.flush()[:-8]  # the final empty block; the trailer follows
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(unit, crc)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return first + repeat * (size // MiB - 1) + last_block + trailer


def zstd_bomb(size: int, *, declared: int | None = None) -> bytes:
    """A zstd frame of ``size`` zero bytes; its header declares ``declared`` bytes if given
    (a frame that lies about its size: the 4-byte content size field rewritten)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    frame = b"".join(
        [*(compressor.compress(bytes(MiB)) for _ in range(size // MiB)), compressor.flush()]
    )
    if declared is None:
        return frame
    descriptor = frame[4]
    assert descriptor >> 6 == 2, "a 4-byte content size field"
    assert not descriptor & 0x20, "a window descriptor byte before it"
    return frame[:6] + struct.pack("<I", declared) + frame[10:]


def plain_blob(compression: int, payload: bytes) -> bytes:
    """A blob with a well-formed header (checkpointd.snapshots.blob): compressed, not encrypted."""
    return MAGIC + bytes([compression, 0]) + payload


def sealed_blob(compression: int, payload: bytes, checkpoint_id: str, key: bytes) -> bytes:
    """An encrypted blob as the daemon seals one: this bomb authenticates under the real key."""
    ident = key_id(key).encode("ascii")
    head = MAGIC + bytes([compression, 1, len(ident)]) + ident
    nonce = os.urandom(12)
    return head + nonce + AESGCM(key).encrypt(nonce, payload, head + checkpoint_id.encode())


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_a_decompression_bomb_is_an_integrity_error_in_bounded_memory(
    daemons: Daemons, figures: dict[str, Any]
) -> None:
    """Blobs that expand to 1 GiB (gzip; zstd declaring it; zstd declaring the recorded size;
    gzip sealed under the real key) put in checkpoints' rows of a daemon whose
    max_checkpoint_size is 4 MiB: each read is an integrity error naming the checkpoint, validate
    reports it, and the daemon's peak memory stays far below the bomb's size."""
    ledger = Ledger()
    first = daemons.start({"encryption_key": KEY, "max_checkpoint_size": LIMIT})
    names = ("gzip", "zstd", "zstd lying about its size", "gzip sealed with the key")
    async with serving(first, ledger) as served:
        victims = {name: await served.create(name, encrypted="sealed" in name) for name in names}
        bystander = await served.create("bystander", encrypted=False)
    await stop(first)
    gzip_payload = gzip_bomb(BOMB)
    key = bytes.fromhex(KEY)
    bombs = {
        "gzip": plain_blob(1, gzip_payload),
        "zstd": plain_blob(2, zstd_bomb(BOMB)),
        "zstd lying about its size": plain_blob(
            2, zstd_bomb(BOMB, declared=victims["zstd lying about its size"].size)
        ),
        "gzip sealed with the key": sealed_blob(
            1, gzip_payload, victims["gzip sealed with the key"].id, key
        ),
    }
    for name, blob in bombs.items():
        assert len(blob) < 2 * MiB
        put_blob(first.db_path, victims[name].id, blob)

    again = daemons.restart(first)
    before = peak_rss(again.pid)
    outcomes: dict[str, str] = {}
    async with serving(again, ledger) as served:
        for name, victim in victims.items():
            try:
                await served.refused(victim)
                outcomes[name] = "ok"
            except (Exception, pytest.fail.Exception) as exc:  # reported together, below
                outcomes[name] = f"{type(exc).__name__}: {exc}"[:300]
        after = peak_rss(again.pid)
        await served.intact(bystander)
        await served.still_serving()
        await served.delete(*victims.values())
    await stop(again)

    figures.update(peak_rss_before_mb=before // MiB, peak_rss_after_mb=after // MiB)
    assert after < BOMB // 8, f"peak RSS {after // MiB} MiB for a {BOMB // MiB} MiB bomb"
    assert after - before < 16 * LIMIT, (before, after)
    assert all(outcome == "ok" for outcome in outcomes.values()), outcomes
    await finish(first.db_path, ledger, figures, rounds=len(bombs), encryption_key=KEY)
