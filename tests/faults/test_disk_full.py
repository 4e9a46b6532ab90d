"""Scenario 4: the daemon's disk fills up while it serves, then space returns.

The state directory is a small tmpfs of its own (``mount -t tmpfs``, as root), filled with a
filler file once the daemon has opened its database, leaving about a megabyte free. Where mounting
is not allowed the daemon gets ``RLIMIT_FSIZE`` instead (``prlimit`` on the running process, the
``ulimit -f`` of the issue): Python ignores SIGXFSZ, so a write past the limit fails with EFBIG.

Creates of incompressible snapshots go through NATS until writes fail. Then: every failed write
answers a clear storage error (503, ``unavailable``, "storage ... the write was not applied");
reads (``get``, ``list``, ``search``, ``stats``, ``history``) and ``$SRV.PING`` still answer;
the log holds exactly the acknowledged creates (nothing partial). Space comes back (the filler
removed, the limit raised) and the same daemon process takes writes again, no restart: the
refused creates, retried with their message ids, apply once. The oracle runs on the file at the
end.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import blob_count
from daemon.serving import DEADLINE, Daemon, Daemons
from nats.aio.client import Client
from natsserver import service_id

from checkpointd import Checkpoint, CheckpointClient, Page
from checkpointd.errors import UnavailableError

from .oracle import check_store

TMPFS_KB = 8 * 1024  # plus ROUND_KB per round: checkpointing keeps some data in both
ROUND_KB = 6 * 1024  # the WAL and the database file, so a round takes 2-4 MB for good
HEADROOM = 768 * 1024  # bytes left free once the disk is "full" of filler
BLOB = 24 * 1024  # random bytes per snapshot (48 KB of hex, stored uncompressed)
WAVE = 8  # concurrent creates per wave: a wave shares group commits
PAGE = 500  # page size of the reads that check everything
MAX_WAVES = 60  # 480 creates of ~48 KB: far more than the headroom holds
STORAGE_ERROR = ("storage is full", "storage failed")  # SQLITE_FULL, SQLITE_IOERR (EFBIG)


class SmallDisk:
    """Where the daemon's state lives, and the means to take its free space away and back."""

    kind = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def fill(self, daemon: Daemon) -> None:
        """Leave about ``HEADROOM`` bytes of room for the daemon's writes."""
        raise NotImplementedError

    def give_back(self, daemon: Daemon) -> None:
        """Return the space ``fill`` took."""
        raise NotImplementedError

    def close(self) -> None:
        """Undo the setup (after the daemon has stopped)."""


class Tmpfs(SmallDisk):
    """A tmpfs of ``TMPFS_KB`` mounted on the state directory; a filler file takes the room."""

    kind = "tmpfs"

    def __init__(self, directory: Path, size_kb: int) -> None:
        super().__init__(directory)
        self.size_kb = size_kb
        self.filler = directory / "filler"
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it; the reason it could not be mounted, or None."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            return "no mount command"
        done = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={self.size_kb}k,mode=0700",
                "tmpfs",
                self.directory,
            ],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        self.mounted = True
        return None

    def fill(self, daemon: Daemon) -> None:
        stat = os.statvfs(self.directory)
        size = stat.f_bavail * stat.f_frsize - HEADROOM
        assert size > 0, f"the tmpfs has only {stat.f_bavail * stat.f_frsize} bytes free"
        with self.filler.open("wb") as out:
            chunk = os.urandom(1 << 20)
            while size > 0:
                size -= out.write(chunk[: min(size, len(chunk))])

    def give_back(self, daemon: Daemon) -> None:
        self.filler.unlink()

    def close(self) -> None:
        if not self.mounted:
            return
        done = subprocess.run(
            ["umount", self.directory], capture_output=True, timeout=DEADLINE, check=False
        )
        if done.returncode != 0:  # still busy: detach it now, the kernel frees it when idle
            subprocess.run(["umount", "-l", self.directory], timeout=DEADLINE, check=False)
        self.mounted = False


class FileSizeLimit(SmallDisk):
    """``RLIMIT_FSIZE`` on the running daemon: no write of it may reach past the limit.

    The limit is the WAL's size (new writes go there; the log is small) plus ``HEADROOM``. A
    database file already bigger than that can still be read, but not checkpointed into, so the
    WAL cannot start over and soon hits the limit: writes fail with EFBIG (SQLITE_IOERR).
    """

    kind = "fsize"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.saved: tuple[int, int] | None = None

    def fill(self, daemon: Daemon) -> None:
        files = [Path(f"{daemon.db_path}-wal"), daemon.stderr_path]
        largest = max(f.stat().st_size for f in files if f.exists())
        self.saved = resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE)
        hard = self.saved[1]
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (largest + HEADROOM, hard))

    def give_back(self, daemon: Daemon) -> None:
        assert self.saved is not None
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, self.saved)


@pytest.fixture(params=["tmpfs", "fsize"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    """The state directory on a small disk. Set up before ``daemons`` (the test names it
    first), so it is torn down after: the tmpfs is unmounted once the daemon has stopped."""
    directory = tmp_path / "small-disk"
    if request.param == "tmpfs":
        rounds = request.node.callspec.params.get("rounds", 1)
        tmpfs = Tmpfs(directory, TMPFS_KB + rounds * ROUND_KB)
        reason = tmpfs.mount()
        if reason is not None:
            pytest.skip(f"no tmpfs for the state directory ({reason}); the fsize variant runs")
        try:
            yield tmpfs
        finally:
            tmpfs.close()
    else:
        if not hasattr(resource, "prlimit"):
            pytest.skip("resource.prlimit is not available on this platform")
        directory.mkdir()
        yield FileSizeLimit(directory)


def snapshot() -> dict[str, Any]:
    return {"sessions": ["full"], "state": {"blob": os.urandom(BLOB).hex()}}


@asynccontextmanager
async def client_of(daemon: Daemon) -> AsyncIterator[CheckpointClient]:
    async with CheckpointClient(daemon.url, prefix=daemon.prefix, request_timeout=DEADLINE) as c:
        yield c


async def every_page(fetch: Callable[[int], Awaitable[Page]]) -> set[str]:
    """The ids on every page of a list or search (``fetch(page_number)``)."""
    ids: list[str] = []
    for number in range(1, 100):
        page = await fetch(number)
        ids += [cp.id for cp in page]
        if len(ids) >= page.total or not page:
            break
    assert len(ids) == len(set(ids)), "a checkpoint on two pages"
    return set(ids)


async def ping(nc: Client, ident: str) -> dict[str, Any]:
    reply = await nc.request(f"$SRV.PING.checkpointd.{ident}", b"", timeout=DEADLINE)
    pong: dict[str, Any] = json.loads(reply.data)
    return pong


@pytest.mark.parametrize(
    "rounds",
    [pytest.param(3, id="3-rounds"), pytest.param(12, id="12-rounds", marks=pytest.mark.slow)],
)
async def test_a_full_disk_refuses_writes_keeps_reads_and_recovers_without_a_restart(
    disk: SmallDisk, daemons: Daemons, figures: dict[str, Any], rounds: int
) -> None:
    """Each round fills the disk under concurrent creates, checks what a user sees while it is
    full, gives the space back and retries the refused creates; one daemon process throughout."""
    daemon = daemons.start({"state_directory": str(disk.directory), "log_level": "warning"})
    pid = daemon.pid
    sent: dict[str, dict[str, Any]] = {}  # message id → the create's fields
    acked: dict[str, Checkpoint] = {}  # message id → the acknowledged checkpoint
    refused: dict[str, str] = {}  # message id → the error message (while it is refused)
    errors: set[str] = set()
    counts = {"refused": 0, "operations": 0}

    async def create(client: CheckpointClient) -> None:
        key = uuid.uuid4().hex
        sent[key] = {
            "name": f"filler {len(sent)}",
            "session_id": "full",
            "snapshot": snapshot(),
            "branches": ["main"],
            "metadata": {"feature": "disk", "tags": ["full"]},
            "compressed": False,
        }
        counts["operations"] += 1
        try:
            acked[key] = await client.create(**sent[key], idempotency_key=key)
        except UnavailableError as exc:
            refused[key] = exc.message

    nc = await nats.connect(daemon.url)
    try:
        async with client_of(daemon) as client:
            ident = await service_id(nc, daemon.prefix)
            for _ in range(4):  # some data before the disk first fills
                await create(client)
            assert not refused, refused
            for _ in range(rounds):
                disk.fill(daemon)
                await fill_until_refused(client, create, refused)
                counts["refused"] += len(refused)
                errors.update(refused.values())
                for message in refused.values():
                    assert message.startswith(STORAGE_ERROR), message
                    assert "not applied" in message, message
                for _ in range(MAX_WAVES):
                    counts["operations"] += 1
                    taken = await a_raw_create_is_refused(nc, daemon.prefix)
                    if taken is None:
                        break
                    # Room came back since the refusal (a WAL checkpoint let the log reuse its
                    # file): that create is acknowledged like any other; fill up again.
                    key, fields = taken
                    sent[key] = fields
                    got = await client.get_checkpoint(fields["id"])
                    assert got is not None
                    acked[key] = got
                    await fill_until_refused(client, create, refused)
                else:
                    raise AssertionError("raw creates kept going through on a full disk")
                await reads_answer(client, nc, ident, sent, acked)

                # Space returns: the same process takes writes again, and each refused create,
                # retried with its message id, applies once (a second retry: the same reply).
                disk.give_back(daemon)
                for key in list(refused):
                    retried = await client.create(**sent[key], idempotency_key=key)
                    again = await client.create(**sent[key], idempotency_key=key)
                    counts["operations"] += 2
                    assert (again.id, again.checksum) == (retried.id, retried.checksum)
                    acked[key] = retried
                    del refused[key]
                await create(client)
                assert not refused, refused
                assert set(acked) == set(sent)  # every create applied, the refused ones once
                assert daemon.process.poll() is None
                assert daemon.pid == pid
                assert await client.health() == len(acked)
    finally:
        await nc.close()

    assert await asyncio.to_thread(daemon.stop, signal.SIGTERM) == 0
    logs = daemon.logs()
    assert not [r for r in logs if r.get("level") in ("error", "critical")], logs
    assert "database is locked" not in daemon.stderr()
    verdict = await check_store(daemon.db_path, acked={cp.id: cp.checksum for cp in acked.values()})
    assert verdict.checkpoints == verdict.events == len(acked)
    assert blob_count(daemon.db_path) == len(acked)  # no snapshot bytes of a refused create
    figures.update(
        disk=disk.kind,
        rounds=rounds,
        operations=counts["operations"],  # write requests, retries included
        acknowledged=len(acked),
        refused=counts["refused"],
        errors=sorted(errors),
        losses=0,
    )


async def fill_until_refused(
    client: CheckpointClient,
    create: Callable[[CheckpointClient], Awaitable[None]],
    refused: dict[str, str],
) -> None:
    """Waves of concurrent creates (sharing group commits) until one is refused."""
    for _ in range(MAX_WAVES):
        await asyncio.gather(*(create(client) for _ in range(WAVE)))
        if refused:
            return
    raise AssertionError(f"{MAX_WAVES * WAVE} creates of {2 * BLOB} bytes never filled the disk")


async def a_raw_create_is_refused(nc: Client, prefix: str) -> tuple[str, dict[str, Any]] | None:
    """On the wire: 503, code ``unavailable``, the storage message in header and body.

    Its snapshot is twice the size of the creates just refused, and it too carries a message id
    (whose stored reply takes room). Space can still come back between the refusal and this
    create (the log's WAL checkpointed and its file reused): then it is applied, and its message
    id and fields (with the id it got) are returned for the caller to count it as acknowledged.
    """
    state = {"blob": os.urandom(2 * BLOB).hex()}
    key = uuid.uuid4().hex
    fields = {"name": "one more", "sessionId": "full", "snapshot": {"state": state}}
    body = json.dumps({**fields, "branches": [], "compressed": False}).encode()
    headers = {"Nats-Msg-Id": key}
    reply = await nc.request(f"{prefix}.create", body, timeout=DEADLINE, headers=headers)
    headers = reply.headers or {}
    answer = json.loads(reply.data)
    if "error" not in answer:
        taken = {"id": answer["id"], "name": "one more", "session_id": "full"}
        return key, {**taken, "snapshot": {"state": state}, "branches": []}
    error = answer["error"]
    assert headers.get("Nats-Service-Error-Code") == "503", (headers, error)
    assert error["code"] == "unavailable", error
    assert error["message"].startswith(STORAGE_ERROR), error
    assert headers.get("Nats-Service-Error") == error["message"]
    return None


async def reads_answer(
    client: CheckpointClient,
    nc: Client,
    ident: str,
    sent: dict[str, dict[str, Any]],
    acked: dict[str, Checkpoint],
) -> None:
    """With writes refused, reads see the acknowledged creates, whole, and nothing else."""
    ids = {cp.id for cp in acked.values()}
    key = next(reversed(acked))  # the newest: written just before the disk filled
    got = await client.get_checkpoint(acked[key].id)
    assert got is not None
    assert (got.snapshot, got.checksum) == (sent[key]["snapshot"], acked[key].checksum)
    listed = await every_page(
        lambda n: client.get_checkpoints_by_session("full", page=n, page_size=PAGE)
    )
    assert listed == ids
    found = await every_page(
        lambda n: client.search_checkpoints(
            {"query": "filler", "pagination": {"page": n, "pageSize": PAGE}}
        )
    )
    assert found == ids
    assert (await client.get_checkpoint_stats()).total_checkpoints == len(ids)
    seqs, streams = [], set()
    after: int | None = 0
    for _ in range(len(ids) // PAGE + 2):
        history = await client.history(after_seq=after, limit=PAGE)
        seqs += [e.seq for e in history.events]
        streams |= {e.stream for e in history.events}
        after = history.next
        if after is None:
            break
    assert seqs == list(range(1, len(ids) + 1))
    assert streams == ids  # no event of a refused create
    assert await client.health() == len(ids)
    pong = await ping(nc, ident)
    assert (pong["name"], pong["id"]) == ("checkpointd", ident)
