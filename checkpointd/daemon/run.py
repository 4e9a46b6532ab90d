"""``checkpointd serve``: the store, the NATS service and their background loops, supervised.

Start-up order: open the store (which takes the database's writer lock), start the embedded
nats-server (when no URL is set), connect, make sure no other store is served on the subject
prefix (``discovery``: exit 78 if one is), serve, then tell systemd ``READY=1``. With
``log_backend = "jetstream"`` NATS comes first instead (never the embedded server): the stream,
its object store and lease bucket are set up, this daemon's copy of the log takes the store's
identity from the stream and catches up with it, then reads are served and, while this daemon
holds the writer lease, the writes (``checkpointd.daemon.cluster``).
SIGTERM/SIGINT/SIGHUP: ``STOPPING=1``, stop taking requests, answer those in flight, publish
what was committed, drain the connection, close the store, stop the embedded server, exit 0 —
within ``shutdown_timeout``.

The daemon's long-lived tasks (the embedded server's watcher, the cleanup, metrics and watchdog
loops, the announcement of a reconnect) belong to one ``asyncio.TaskGroup``: leaving it cancels
every one of them and waits for them, before the parts they use are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client

from checkpointd import __version__, transport
from checkpointd.daemon import nats_auth
from checkpointd.daemon.cluster import Cluster, identity
from checkpointd.daemon.discovery import check_prefix
from checkpointd.daemon.embedded import EmbeddedNats
from checkpointd.daemon.metrics import MetricsCollector
from checkpointd.daemon.probes import serve as serve_probes
from checkpointd.daemon.service import CheckpointService
from checkpointd.daemon.settings import NatsSettings, Settings
from checkpointd.daemon.systemd import notify, watchdog_interval
from checkpointd.errors import CheckpointError, ConfigError, DatabaseInUseError, UnavailableError
from checkpointd.loops import every
from checkpointd.manager import CheckpointManager
from checkpointd.storage.genesis import prepare_copy
from checkpointd.storage.jetstream import JetStreamLog
from checkpointd.storage.replica import StreamReplica
from checkpointd.transport import barrier, safe_url

_STATUS_EVERY = 1.0  # seconds between status lines while the views catch up
log = structlog.get_logger("checkpointd.daemon")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: NATS or the embedded server cannot be reached/started
EXIT_IN_USE = 75  # EX_TEMPFAIL: another checkpointd holds the database
EXIT_CONFIG = 78  # EX_CONFIG
# A hang-up (the terminal closed) stops cleanly too, rather than killing the process mid-commit.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def connect(
    url: str,
    settings: NatsSettings,
    *,
    name: str = "checkpointd",
    closed_cb: Callable[[], Awaitable[None]] | None = None,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect (within ``connect_timeout``, or retrying as long as it takes when it is 0), then
    reconnect forever; a dead server is noticed after ``ping_interval * max_outstanding_pings``
    seconds.

    Raises:
        UnavailableError: no connection before the deadline.
    """
    return await transport.connect(
        url,
        deadline=settings.connect_timeout or None,
        name=name,
        ping_interval=settings.ping_interval,
        max_outstanding_pings=settings.max_outstanding_pings,
        error_cb=_ErrorLog().report,
        disconnected_cb=disconnected_cb or _on_disconnected,
        reconnected_cb=reconnected_cb or _on_reconnected,
        closed_cb=closed_cb,
        user_credentials=settings.credentials_file,
        nkeys_seed=settings.nkey_seed_file,
        token=settings.token,
        user=settings.user,
        password=settings.password,
        tls=tls_context(settings),
    )


class Daemon:
    """One run of ``checkpointd serve``. ``await Daemon(settings).run()`` returns the exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._exit = EXIT_OK
        self._nc: Client | None = None
        self._status = ""
        self._tasks: asyncio.TaskGroup | None = None  # while it runs
        self._cluster: Cluster | None = None  # with the log on a JetStream stream

    def request_stop(self, code: int = EXIT_OK) -> None:
        if not self._stop.is_set():
            self._exit = code
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            return await self._run()
        except ConfigError as exc:
            return _cannot_start(exc, EXIT_CONFIG)
        except DatabaseInUseError as exc:
            return _cannot_start(exc, EXIT_IN_USE)
        except UnavailableError as exc:
            return _cannot_start(exc, EXIT_UNAVAILABLE)
        except CheckpointError as exc:  # e.g. a damaged database found at open
            return _cannot_start(exc, EXIT_FAILED)
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("stopping", signal=sig.name)
        self.request_stop()

    async def _run(self) -> int:
        settings = self.settings
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.TaskGroup() as tasks:
                    self._tasks = tasks
                    # Leaving the group by an exception cancels its tasks, and waits for them.
                    raise _Ended(await self._serve(stack, tasks))
            except BaseExceptionGroup as group:
                served = _ended(group).served
            finally:
                self._tasks = None
            if not served:
                log.info("stopped before ready", exit_code=self._exit)
                return self._exit
            try:
                async with asyncio.timeout(settings.daemon.shutdown_timeout):
                    await stack.aclose()
            except TimeoutError:
                timed_out = True
            else:
                timed_out = False
        if timed_out:
            log.error("shutdown timed out", seconds=settings.daemon.shutdown_timeout)
            return EXIT_FAILED
        log.info("stopped", exit_code=self._exit)
        return self._exit

    async def _serve(self, stack: contextlib.AsyncExitStack, tasks: asyncio.TaskGroup) -> bool:
        """Start, serve until a stop is requested, then say ``STOPPING=1``.

        Returns False when the stop came before the daemon was ready.
        """
        settings = self.settings
        # A stop requested while starting (NATS may take connect_timeout) ends the start: the
        # two are raced here and neither outlives this call.
        starting = asyncio.ensure_future(self._start(stack, tasks))
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            notify("STOPPING=1")
            return False
        manager, service, nc, url = starting.result()
        self._loops(tasks, manager, service, nc)
        notify(f"READY=1\n{self._status}\nMAINPID={os.getpid()}")
        log.info(
            "serving",
            version=__version__,
            nats_url=safe_url(url),
            prefix=settings.nats.subject_prefix,
            database=settings.engine.database_path,
            pid=os.getpid(),
        )
        await self._stop.wait()
        notify("STOPPING=1")
        return True

    async def _start(
        self, stack: contextlib.AsyncExitStack, tasks: asyncio.TaskGroup
    ) -> tuple[CheckpointManager, CheckpointService, Client, str]:
        """Start everything, registering each part's stop on ``stack`` as it comes up.

        The watcher of an embedded server joins ``tasks``, which end before ``stack`` unwinds.
        """
        settings = self.settings
        if settings.daemon.log_backend == "jetstream":
            return await self._start_in_cluster(stack, tasks)
        state = _make_directories(settings)
        # The store first: its lock says at once whether another daemon serves this database.
        # The daemon runs the cleanup loop itself, once its service publishes what expires.
        manager = CheckpointManager(settings.engine, cleanup_loop=False)
        await manager.open()
        stack.push_async_callback(manager.close)
        probes = await serve_probes(settings.http, manager, stack)  # /healthz answers from now
        await _catch_up(manager)
        url = settings.nats.url
        if url is None:
            for warning in nats_auth.warnings(settings.nats):
                log.warning("insecure setting", warning=warning)
            embedded = await EmbeddedNats.start(
                state / "nats",
                host=settings.nats.embedded_host,
                port=settings.nats.embedded_port,
                max_payload=settings.nats.embedded_max_payload,
                authorization=nats_auth.embedded_authorization(settings.nats),
            )
            stack.push_async_callback(embedded.stop)
            url = embedded.url
            tasks.create_task(self._watch(embedded), name="embedded nats-server watcher")
        if settings.nats.url is not None:
            # Until NATS answers (the daemon waits for it, retrying every second).
            notify(f"STATUS=connecting to NATS at {safe_url(url)}")
        nc = await self._connect(url, stack)
        # Another store on this prefix would get half the writes: refuse (78) before serving.
        try:
            await check_prefix(nc, settings.nats.subject_prefix, await manager.store_id())
        except ConfigError:
            self.request_stop(EXIT_CONFIG)  # closing the connection now is no lost connection
            raise
        service = CheckpointService(
            manager,
            nc,
            prefix=settings.nats.subject_prefix,
            queue_group=settings.nats.queue_group,
            max_inflight=settings.daemon.max_inflight,
            transfer_ttl=settings.daemon.transfer_ttl,
            transfer_idle_timeout=settings.daemon.transfer_idle_timeout,
            max_uploads=settings.daemon.max_uploads,
            max_uploads_per_connection=settings.daemon.max_uploads_per_connection,
        )
        # Pushed first: a start that fails part way still stops what it started.
        stack.push_async_callback(service.stop)
        await service.start()
        if probes is not None:
            probes.attach(service)
            stack.callback(probes.detach)  # not ready from the moment the service stops
        return manager, service, nc, url

    async def _connect(self, url: str, stack: contextlib.AsyncExitStack) -> Client:
        """Connect (waiting for NATS as long as the settings say); drained when ``stack``
        unwinds."""
        nc = await connect(
            url,
            self.settings.nats,
            closed_cb=self._on_closed,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._nc, self._status = nc, f"STATUS=serving on {safe_url(url)}"
        stack.push_async_callback(_drain, nc)
        return nc

    async def _start_in_cluster(
        self, stack: contextlib.AsyncExitStack, tasks: asyncio.TaskGroup
    ) -> tuple[CheckpointManager, CheckpointService, Client, str]:
        """``_start`` with the log on a JetStream stream (``checkpointd.daemon.cluster``).

        NATS comes first (the copy of the log takes the store's identity from the stream),
        then the store over that copy, caught up with the stream; reads are served from then
        on, the writes once the lease is taken (the lease loop, in ``tasks``).
        """
        settings, daemon = self.settings, self.settings.daemon
        _make_directories(settings)
        url = settings.nats.url
        assert url is not None, "settings require nats.url with the jetstream backend"
        notify(f"STATUS=connecting to NATS at {safe_url(url)}")
        nc = await self._connect(url, stack)
        stream = JetStreamLog(nc, daemon.jetstream_stream, daemon.jetstream_replicas)
        await stream.open()
        engine = settings.engine
        await prepare_copy(stream, engine.database_path, engine.durability)
        replica = StreamReplica(stream, asyncio.get_running_loop())
        manager = CheckpointManager(engine, cleanup_loop=False, replica=replica)
        await manager.open()
        stack.push_async_callback(manager.close)
        probes = await serve_probes(settings.http, manager, stack)
        notify("STATUS=copying the log from the stream")
        await replica.catch_up()
        await _catch_up(manager)
        try:
            await check_prefix(nc, settings.nats.subject_prefix, await manager.store_id())
        except ConfigError:
            self.request_stop(EXIT_CONFIG)
            raise
        service = CheckpointService(
            manager,
            nc,
            prefix=settings.nats.subject_prefix,
            queue_group=settings.nats.queue_group,
            max_inflight=daemon.max_inflight,
            transfer_ttl=daemon.transfer_ttl,
            transfer_idle_timeout=daemon.transfer_idle_timeout,
            max_uploads=daemon.max_uploads,
            max_uploads_per_connection=daemon.max_uploads_per_connection,
            writes=False,
            identity=identity(daemon.state_directory),
            log_floor=lambda seq: replica.wait_for_head(seq, engine.read_timeout),
        )

        async def on_writer(writing: bool) -> None:
            if not writing:
                await service.stop_writes()
                return
            await service.start_writes()
            if settings.engine.auto_cleanup:  # what expired while no daemon was the writer
                tasks.create_task(_cleanup_now(manager), name="cleanup as the new writer")

        cluster = Cluster(replica, nc, on_writer, daemon.state_directory)
        self._cluster = cluster
        # Unwound in reverse: the service stops (writes answered), then the lease is given up.
        stack.push_async_callback(cluster.release)
        stack.push_async_callback(service.stop)
        await service.start()
        if probes is not None:
            probes.attach(service)
            stack.callback(probes.detach)
        tasks.create_task(cluster.lease_loop(), name="writer lease")
        tasks.create_task(cluster.follow_loop(), name="stream follower")
        return manager, service, nc, url

    def _loops(
        self,
        tasks: asyncio.TaskGroup,
        manager: CheckpointManager,
        service: CheckpointService,
        nc: Client,
    ) -> None:
        """Start the loops of a ready daemon in ``tasks``: cleanup, metrics, watchdog."""
        settings = self.settings
        if settings.engine.auto_cleanup:
            # At start too: what expired while the daemon was down goes now.
            interval = settings.engine.cleanup_interval
            tasks.create_task(every(interval, self._cleanup(manager), "cleanup", now=True))
        if settings.engine.enable_metrics:
            collector = MetricsCollector(manager, service.metrics, extra=service.figures)
            subject = f"{settings.nats.subject_prefix}.metrics"

            async def publish_metrics() -> None:
                document = await collector.collect()
                await nc.publish(subject, _json(document))

            interval = settings.engine.metrics_interval
            tasks.create_task(every(interval, publish_metrics, "metrics"))
        ping = watchdog_interval()
        if ping is not None:

            async def watchdog() -> None:
                async with asyncio.timeout(ping):
                    await manager.health()
                notify("WATCHDOG=1")

            tasks.create_task(every(ping, watchdog, "watchdog"))

    def _cleanup(self, manager: CheckpointManager) -> Callable[[], Awaitable[object]]:
        """The cleanup step; in a cluster only the writer cleans up (the others' would fail)."""

        async def cleanup() -> object:
            if self._cluster is not None and not self._cluster.is_writer:
                return 0
            return await manager.cleanup_once()

        return cleanup

    async def _watch(self, embedded: EmbeddedNats) -> None:
        """The embedded server is part of the daemon: if it dies, the daemon stops (69)."""
        code = await embedded.wait()
        if not self._stop.is_set():
            log.error("embedded nats-server exited", exit_code=code)
            self.request_stop(EXIT_UNAVAILABLE)

    async def _on_disconnected(self) -> None:
        if not self._stop.is_set():
            await _on_disconnected()
            notify("STATUS=NATS disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        await _on_reconnected()
        # nats-py awaits this inside its reconnect loop: announce from a task of our own.
        if self._tasks is not None and not self._stop.is_set():
            with contextlib.suppress(RuntimeError):  # the group is ending: nothing to announce
                self._tasks.create_task(self._announce_reconnected())

    async def _announce_reconnected(self) -> None:
        """Tell the service manager once the server has our subscriptions again."""
        if self._nc is None or self._stop.is_set():
            return
        try:
            await barrier(self._nc)
        except Exception as exc:  # disconnected again: the next reconnect announces
            log.info("reconnect not confirmed", error=type(exc).__name__)
            return
        notify(f"{self._status} (reconnected)")

    async def _on_closed(self) -> None:
        if not self._stop.is_set():
            log.error("NATS connection closed")
            self.request_stop(EXIT_UNAVAILABLE)


class _Ended(Exception):  # noqa: N818 (not an error: how the daemon leaves its task group)
    """Raised to leave the task group once the daemon has stopped serving."""

    def __init__(self, served: bool) -> None:
        super().__init__(served)
        self.served = served


def _ended(group: BaseExceptionGroup) -> _Ended:
    """The ``_Ended`` the task group was left by; any other exception is raised as itself.

    A task group wraps what ends it in an exception group; a start that failed raises its
    own error (ConfigError...) again, so that ``run`` maps it to its exit code.
    """
    others = [exc for exc in group.exceptions if not isinstance(exc, _Ended)]
    if len(others) == 1:
        raise others[0]
    if others:
        raise BaseExceptionGroup("the daemon failed", others)
    ended = group.exceptions[0]
    assert isinstance(ended, _Ended)
    return ended


def _make_directories(settings: Settings) -> Path:
    """The state directory and the database's directory (the daemon creates what it names).

    Those it creates are its owner's alone (0700); existing ones keep their mode.

    Raises:
        ConfigError: one cannot be created.
    """
    state = Path(settings.daemon.state_directory)
    database = Path(settings.engine.database_path).parent
    for key, directory in (("state_directory", state), ("database_path", database)):
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create {directory}: {exc.strerror}"
            raise ConfigError(key, str(directory), reason) from None
    return state


async def _catch_up(manager: CheckpointManager) -> None:
    """Wait until the views have reached the log's head (ready means reads can be answered
    within ``read_timeout``), telling systemd how far the projector has come."""
    head = manager.log_head
    while manager.views_position < head:
        done = manager.views_progress
        notify(f"STATUS=building the views from the log: {done} of {head} events")
        log.info("views catching up", events=done, head=head)
        with contextlib.suppress(UnavailableError):
            await manager.wait_for_views(head, within=_STATUS_EVERY)


async def _cleanup_now(manager: CheckpointManager) -> None:
    try:
        await manager.cleanup_once()
    except Exception as exc:  # the next round of the cleanup loop tries again
        log.warning("cleanup failed", error=type(exc).__name__)


def _cannot_start(exc: CheckpointError, code: int) -> int:
    log.error("cannot start", error=exc.message, exit_code=code)
    return code


async def _drain(nc: Client) -> None:
    """Flush what is queued and close; a connection already lost has nothing left to drain."""
    with contextlib.suppress(Exception):
        await nc.drain()
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()


class _ErrorLog:
    """nats-py reports every failed (re)connect attempt, one a second while NATS is down: log
    the first of each kind at once, then the same one at most once a minute with a count."""

    EVERY = 60.0

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    async def report(self, exc: Exception) -> None:
        key = (type(exc).__name__, str(exc)[:200])
        now = asyncio.get_running_loop().time()
        logged_at, repeats = self._last.get(key, (-self.EVERY, 0))
        if now - logged_at < self.EVERY:
            self._last[key] = (logged_at, repeats + 1)
            return
        if len(self._last) > 100:  # errors that differ every time: forget the old ones
            self._last.clear()
        self._last[key] = (now, 0)
        log.warning("NATS error", error=key[0], detail=key[1], repeats_since_last=repeats)


async def _on_disconnected() -> None:
    log.warning("NATS disconnected; reconnecting")


async def _on_reconnected() -> None:
    log.info("NATS reconnected")


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if settings.tls_ca_file is None and settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca_file)
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def run_serve(settings: Settings) -> int:
    """Run the daemon to completion (the CLI's ``serve``); returns the exit code."""
    return asyncio.run(Daemon(settings).run())
