"""``checkpointd serve`` as a child process, watched the way systemd watches it.

A ``Daemons`` factory writes a TOML config under a work directory of its own, starts
``python -m checkpointd serve --config FILE`` with ``NOTIFY_SOCKET`` pointing at a datagram socket
the test holds, and returns once ``READY=1`` arrives there (or fails at once if the process exits
first: its exit is an event too, through a pidfd). ``close()`` stops whatever is still running
and checks that nothing it started is left behind.

Waits are bounded by ``DEADLINE``, which is generous because other jobs share this machine; no
test asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEADLINE = 60.0
"""Seconds any one wait may take before the test fails (a start, a stop, a datagram)."""

# Variables the daemon reads that must come from the test alone, never from the shell that runs
# pytest (a stray CHECKPOINTD_* would even be a config error).
INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY", "JOURNAL_STREAM")


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without anything that configures checkpointd, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CHECKPOINTD_") and name not in INHERITED
    }
    env.update(extra or {})
    return env


def checkpointd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "checkpointd", *args]


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``checkpointd ARGS`` as a subprocess; its exit code, stdout and stderr."""
    return subprocess.run(
        checkpointd_command(*args),
        cwd=cwd,
        env=clean_environ(env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


# -- TOML ---------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_text(settings: Mapping[str, Any]) -> str:
    """Top-level keys, then one ``[table]`` per mapping value (``{"nats": {...}}``)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items() if not isinstance(v, Mapping)]
    for table, values in settings.items():
        if isinstance(values, Mapping):
            lines += ["", f"[{table}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


# -- processes ----------------------------------------------------------------------------------


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid`` (``ps --ppid``, read from /proc): pid to name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                found[child] = command_name(child)
    return found


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_gone(pid: int, timeout: float = DEADLINE) -> bool:
    """True once process ``pid`` has exited (a zombie counts: it holds no port or file).

    The pid is not our child, so there is nothing to ``wait()`` on; a pidfd becomes readable
    when the process exits, which turns this into a wait on an event rather than a poll.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(pidfd, selectors.EVENT_READ)
            return bool(selector.select(timeout))
    finally:
        os.close(pidfd)


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


class NotifySocket:
    """The ``$NOTIFY_SOCKET`` a service manager listens on: every datagram, in order, in ``seen``.

    It lives in a short directory of its own under /tmp: an AF_UNIX path may not be longer than
    107 bytes, which pytest's ``tmp_path`` can exceed.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="cpd-", dir="/tmp"))
        self.path = self.directory / "notify"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(str(self.path))
        self.seen: list[str] = []
        self._next = 0  # seen[_next:] have not been looked at by expect()

    def expect(self, line: str, process: subprocess.Popen[bytes] | None = None) -> str:
        """The next datagram holding ``line`` (``READY=1``), within ``DEADLINE`` each.

        Raises:
            AssertionError: ``process`` exited without sending it, or nothing came in time.
        """
        while True:
            while self._next < len(self.seen):
                datagram = self.seen[self._next]
                self._next += 1
                if line in datagram.split("\n"):
                    return datagram
            if not self._receive(process):
                raise AssertionError(f"the process exited without sending {line}")

    def _receive(self, process: subprocess.Popen[bytes] | None) -> bool:
        """Wait for a datagram; False if ``process`` exited and none is left to read."""
        before = len(self.seen)
        if process is not None and process.poll() is not None:
            return len(self.drain()) > before
        pidfd = None if process is None else os.pidfd_open(process.pid)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._sock, selectors.EVENT_READ)
                if pidfd is not None:
                    selector.register(pidfd, selectors.EVENT_READ)
                if not selector.select(DEADLINE):
                    raise AssertionError(f"no datagram within {DEADLINE}s; saw {self.seen}")
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return len(self.drain()) > before

    def drain(self) -> list[str]:
        """Every datagram already queued (a process that has exited sent all it will send)."""
        self._sock.setblocking(False)
        try:
            while True:
                try:
                    self.seen.append(self._sock.recv(65536).decode("utf-8"))
                except BlockingIOError:
                    break
        finally:
            self._sock.setblocking(True)
        return self.seen

    def states(self) -> list[str]:
        """The ``KEY=value`` lines of every datagram seen so far, in order."""
        return [line for datagram in self.drain() for line in datagram.split("\n")]

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class Launch:
    """How a daemon is started: enough to start it again on the same state."""

    config: Path | None
    env: Mapping[str, str]
    args: tuple[str, ...]
    prefix: str
    state: Path
    wrapper: tuple[str, ...] = ()


@dataclass
class Daemon:
    """One ``checkpointd serve`` process."""

    process: subprocess.Popen[bytes]
    launch: Launch
    workdir: Path
    notify: NotifySocket
    url: str = ""
    ready: str = ""
    children: dict[int, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def prefix(self) -> str:
        return self.launch.prefix

    @property
    def config(self) -> Path | None:
        return self.launch.config

    @property
    def state(self) -> Path:
        return self.launch.state

    @property
    def db_path(self) -> Path:
        return self.state / "checkpointd.db"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = DEADLINE) -> int:
        """The exit code, once the process has exited (it is our child: ``wait`` is the event)."""
        return self.process.wait(timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` (unless it has exited) and return the exit code."""
        if self.process.poll() is None:
            self.send(sig)
        return self.wait()

    def stderr(self) -> str:
        """What the daemon wrote on stderr (and stdout, which should stay empty)."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """Every stderr line as JSON (fails on a line that is not a JSON object)."""
        records = []
        for number, line in enumerate(self.stderr().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"stderr line {number} is not JSON: {line!r}") from None
            assert isinstance(record, dict), f"stderr line {number} is not an object: {line!r}"
            records.append(record)
        return records

    def embedded_nats_pid(self) -> int:
        (pid,) = [pid for pid, name in self.children.items() if name == "nats-server"]
        return pid

    def diagnostics(self) -> str:
        return f"pid {self.pid}, notify {self.notify.seen}, stderr:\n{self.stderr()[-4000:]}"


class Daemons:
    """Starts daemons under ``root`` and, on ``close()``, stops them and checks what is left.

    ``close()`` fails a test whose daemon did not exit 0 on its SIGTERM, left a child process
    (the embedded nats-server) running, or wrote anything but JSON lines on stderr.
    """

    def __init__(self, root: Path, nats_url: str | None = None) -> None:
        self.root = root
        self.nats_url = nats_url
        self.started: list[Daemon] = []

    def start(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        nats_url: str | bool | None = True,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        config: Path | None = None,
        wrapper: Sequence[str] = (),
        ready: bool = True,
    ) -> Daemon:
        """A daemon on a fresh state directory, once it said ``READY=1`` (unless ``ready=False``).

        ``settings`` are TOML keys (a ``"nats"`` mapping for the table); the state directory and
        a unique subject prefix are added unless given. ``nats_url``: True for the factory's
        server, None for the embedded one, or a URL. ``config`` instead of ``settings``: that
        file as is (it may not exist). ``wrapper`` runs first and must ``exec`` the command.
        """
        workdir = self._workdir()
        state = workdir / "state"
        prefix = f"t{uuid.uuid4().hex[:12]}.checkpoint"
        if config is None:
            values = dict(settings or {})
            nats = dict(values.pop("nats", {}))
            url = self.nats_url if nats_url is True else nats_url
            if isinstance(url, str):
                nats.setdefault("url", url)
            nats.setdefault("subject_prefix", prefix)
            values.setdefault("state_directory", str(state))
            values["nats"] = nats
            config = workdir / "checkpointd.toml"
            config.write_text(toml_text(values), encoding="utf-8")
            prefix = nats["subject_prefix"]
            state = Path(values["state_directory"])
        launch = Launch(config, dict(env or {}), tuple(args), prefix, state, tuple(wrapper))
        return self._spawn(launch, workdir, ready)

    def start_bare(
        self, args: Sequence[str], env: Mapping[str, str], *, prefix: str, state: Path
    ) -> Daemon:
        """A daemon configured by its flags and environment alone (no ``--config``)."""
        launch = Launch(None, dict(env), tuple(args), prefix, state)
        return self._spawn(launch, self._workdir(), ready=True)

    def restart(self, daemon: Daemon) -> Daemon:
        """Another daemon with ``daemon``'s config, environment and state (once it stopped)."""
        return self._spawn(daemon.launch, self._workdir(), ready=True)

    def _workdir(self) -> Path:
        workdir = self.root / f"daemon{len(self.started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir

    def _spawn(self, launch: Launch, workdir: Path, ready: bool) -> Daemon:
        notify = NotifySocket()
        config = ["--config", str(launch.config)] if launch.config else []
        command = [*launch.wrapper, *checkpointd_command("serve", *config), *launch.args]
        with (workdir / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=clean_environ({**launch.env, "NOTIFY_SOCKET": str(notify.path)}),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        daemon = Daemon(process, launch, workdir, notify)
        self.started.append(daemon)
        if ready:
            try:
                daemon.ready = notify.expect("READY=1", process)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {daemon.diagnostics()}") from None
            status = re.search(r"^STATUS=serving on (\S+)", daemon.ready, re.MULTILINE)
            assert status, daemon.ready
            daemon.url = status.group(1)
            assert f"MAINPID={process.pid}" in daemon.ready.split("\n"), daemon.ready
            daemon.children = children_of(process.pid)
        return daemon

    def close(self) -> None:
        problems = []
        for daemon in self.started:
            problems += _shut(daemon)
            daemon.notify.close()
        assert not problems, "\n".join(problems)


def _shut(daemon: Daemon) -> list[str]:
    """Stop ``daemon`` if a test left it running; what is wrong with how it ended."""
    problems = []
    if daemon.process.poll() is None:
        daemon.send(signal.SIGTERM)
        try:
            code = daemon.wait()
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.wait()
            problems.append(f"daemon {daemon.pid} ignored SIGTERM for {DEADLINE}s; killed")
        else:
            if code != 0:
                problems.append(f"daemon {daemon.pid} exited {code} on SIGTERM")
    for child, name in daemon.children.items():
        # The name guards against a pid reused since: only that same program is waited for.
        if command_name(child) == name and not wait_gone(child):
            os.kill(child, signal.SIGKILL)
            problems.append(f"daemon {daemon.pid} left its child {child} ({name}) running")
    if daemon.ready:
        try:
            daemon.logs()
        except AssertionError as exc:
            problems.append(str(exc))
    return [f"{p}\n{daemon.diagnostics()}" for p in problems]


@contextlib.contextmanager
def daemons_under(root: Path, nats_url: str | None) -> Iterator[Daemons]:
    factory = Daemons(root, nats_url)
    try:
        yield factory
    finally:
        factory.close()
