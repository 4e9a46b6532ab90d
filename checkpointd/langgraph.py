"""checkpointd as a LangGraph checkpointer: ``CheckpointdSaver``.

``graph.compile(checkpointer=saver)`` with a saver over an in-process ``CheckpointManager``
(``CheckpointdSaver.from_path("cp.db")``) or a ``CheckpointClient`` talking to a daemon
(``CheckpointdSaver.from_nats("nats://...")``). Needs the optional extra:
``pip install 'checkpointd[langgraph]'``.

How LangGraph's data maps onto checkpoints:

- A LangGraph thread and checkpoint namespace are one **session**: the thread id itself for
  the root namespace, ``<thread id>|<namespace>`` for a subgraph's (LangGraph joins nested
  namespaces with ``|`` too). In the thread id, ``%`` and ``|`` are written ``%25`` and
  ``%7C``, so two threads never share a session.
- A LangGraph checkpoint is one **checkpoint** of that session:
  - ``name`` is LangGraph's checkpoint id, ``timestamp`` its ``ts``, ``branches`` empty;
  - ``snapshot["langgraph"]`` holds the serializer's output, exactly: ``checkpoint`` and
    ``metadata`` as ``[type, base64 of the bytes]`` (a snapshot holds no raw bytes), and
    ``parent``, LangGraph's id of the parent checkpoint. ``snapshot["state"]["channels"]``
    is a readable copy of the channel values for ``checkpointd diff`` and ``get``: JSON
    values as they are, models through ``model_dump``, anything else as
    ``{"$type": name}``. It is never read back (``readable=False`` leaves it out).
    ``snapshot["sessions"]`` is ``[session]``: the snapshot has the shape ``validate`` and
    ``restore`` expect of one;
  - ``metadata`` is LangGraph's metadata (the JSON values of it, so ``where`` and search
    find them: ``metadata->>'run_id'``, ``metadata->>'source'``), plus ``feature``
    (``"langgraph"``, which the saver lists its checkpoints by) and ``parentCheckpoint``, the
    parent's checkpointd id, so lineage, history, verify and diff follow the thread. A
    LangGraph key named like one of checkpointd's own (``feature``, ``priority``, ``author``,
    ``description``, ``workflowId``, ``stepId``, ``tags``, ``parentCheckpoint``,
    ``chainDepth``) stays in LangGraph's metadata only.
  - its checkpointd id is derived from the session and LangGraph's id (``lg.<LangGraph id>.``
    and 16 hex digits of a hash of the session), so ``get_tuple`` and ``put_writes`` of a
    known checkpoint need no lookup. Ids are never reused, so a checkpoint that comes back
    under the same LangGraph id (a re-put, or a put after its deletion) gets an id from the
    store, and a lookup by ``name`` finds it.
- LangGraph's pending writes are the checkpoint's pending writes (``put_writes``), each value
  ``[type, bytes]`` from the serializer.
- "Latest" is the greatest LangGraph id in the session; lists are newest first by that id.
  After ``checkpointd restore <id>`` of one of the session's checkpoints (the last thing that
  happened to the session), the next lookup of the thread's latest checkpoint forks the thread
  there, as LangGraph's own ``update_state(config, None, as_node="__copy__")`` does: a copy of
  the restored checkpoint under a new LangGraph id (same values and parent, ``source``
  ``fork``, ``restoredFrom`` the restored one) becomes the head, and the thread goes on from
  it; the steps after the restored checkpoint run again.
- ``delete_thread`` and ``prune`` act on every session of the thread, each one atomically;
  ``prune`` keeps each session's newest by timestamp (LangGraph's ``ts``, which grows with its
  ids);
  ``delete_for_runs`` deletes every checkpoint whose ``metadata.run_id`` is one of the runs,
  in one atomic command; ``copy_thread`` copies each session of the thread atomically, the
  copies under the ids derived for the target session (their ``restoredFrom`` is the source).
- Re-putting a checkpoint id that exists replaces it (as LangGraph's in-memory saver does);
  the replaced checkpoint's pending writes go with it.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import math
import random
import re
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    CheckpointMetadata,
    CheckpointTuple,
    copy_checkpoint,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.base import Checkpoint as LangGraphCheckpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.base import SerializerProtocol

from checkpointd.api import CheckpointAPI
from checkpointd.client import CheckpointClient
from checkpointd.errors import ConflictError, InvalidRequestError, NotFoundError
from checkpointd.manager import CheckpointManager
from checkpointd.models import Checkpoint
from checkpointd.results import PendingWrite

__all__ = ["FEATURE", "CheckpointdSaver", "checkpoint_id_for", "session_for", "thread_of"]

T = TypeVar("T")

FEATURE = "langgraph"
"""The ``metadata.feature`` of every checkpoint the saver writes (its default)."""

FORMAT = 1
"""The version of ``snapshot["langgraph"]``'s layout."""

# Checkpointd's own metadata keys: a LangGraph key of these names stays out of the searchable
# copy (LangGraph gets it back from the serialized metadata all the same).
_RESERVED = frozenset(
    {
        "feature",
        "priority",
        "author",
        "description",
        "workflowId",
        "stepId",
        "tags",
        "parentCheckpoint",
        "chainDepth",
    }
)
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}", re.ASCII)  # a key a ``where`` may name
_LANGGRAPH_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}", re.ASCII)  # kept as it is in the id
_LAST_PUTS = 10_000  # sessions whose last put the saver remembers
_PAGE = 1000  # the largest page a list may ask for
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_DEPTH = 32  # nesting a readable copy follows before it gives up on a value
_STRATEGIES = {"keep_latest": 1, "delete": 0}


# -- the mapping ---------------------------------------------------------------------------------


def session_for(thread_id: str, checkpoint_ns: str = "") -> str:
    """The session of a LangGraph thread and checkpoint namespace (see the module docstring)."""
    thread = str(thread_id).replace("%", "%25").replace("|", "%7C")
    return thread if not checkpoint_ns else f"{thread}|{checkpoint_ns}"


def thread_of(session_id: str) -> tuple[str, str]:
    """The LangGraph thread id and checkpoint namespace of a session (``session_for``'s inverse)."""
    thread, _, namespace = session_id.partition("|")
    return thread.replace("%7C", "|").replace("%25", "%"), namespace


def checkpoint_id_for(session_id: str, langgraph_id: str) -> str:
    """The checkpointd id the saver first gives LangGraph checkpoint ``langgraph_id``.

    LangGraph's id (a UUID) is kept readable; the hash tells sessions apart, since a copied
    thread holds the same LangGraph ids. An id that is not made of the characters a checkpoint
    id allows is hashed whole.
    """
    digest = hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"), digest_size=8)
    if _LANGGRAPH_ID.fullmatch(langgraph_id):
        return f"lg.{langgraph_id}.{digest.hexdigest()}"
    whole = hashlib.blake2b(langgraph_id.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"lg.{whole.hexdigest()}.{digest.hexdigest()}"


_SKIP = object()


def _json_value(value: Any, depth: int = 0) -> Any:
    """``value`` when it is JSON-like (tuples become lists, UUIDs text), else ``_SKIP``."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else _SKIP
    if kind is float:
        return value if math.isfinite(value) else _SKIP
    if depth >= _DEPTH:
        return _SKIP
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                return _SKIP
            converted = _json_value(item, depth + 1)
            if converted is _SKIP:
                return _SKIP
            out[key] = converted
        return out
    if isinstance(value, list | tuple):
        items = [_json_value(item, depth + 1) for item in value]
        return _SKIP if any(item is _SKIP for item in items) else items
    if isinstance(value, uuid.UUID):
        return str(value)
    return _SKIP


def searchable_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON values of LangGraph's metadata, without checkpointd's own keys."""
    out = {}
    for key, value in metadata.items():
        if isinstance(key, str) and key not in _RESERVED:
            converted = _json_value(value)
            if converted is not _SKIP:
                out[key] = converted
    return out


def _readable(value: Any, depth: int = 0) -> Any:
    """A JSON rendering of a channel value, for people (never read back)."""
    converted = _json_value(value, _DEPTH) if depth < _DEPTH else _SKIP
    if converted is not _SKIP:  # a scalar
        return converted
    if depth < _DEPTH:
        if isinstance(value, Mapping):
            return {str(key): _readable(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [_readable(item, depth + 1) for item in value]
        if isinstance(value, uuid.UUID):
            return str(value)
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            try:
                return _readable(dump(mode="json"), depth + 1)
            except Exception:  # noqa: S110 - a readable copy is best effort
                pass
    kind = type(value)
    return {"$type": f"{kind.__module__}.{kind.__qualname__}"}


def _typed(serde: SerializerProtocol, value: Any) -> list[str]:
    kind, data = serde.dumps_typed(value)
    return [kind, base64.b64encode(data).decode("ascii")]


def _untyped(serde: SerializerProtocol, value: Any) -> Any:
    kind, data = value
    return serde.loads_typed((kind, base64.b64decode(data)))


# -- the saver ----------------------------------------------------------------------------------


class CheckpointdSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer over a checkpointd store (see the module docstring).

    Args:
        store: an open ``CheckpointManager`` or ``CheckpointClient`` (any ``CheckpointAPI``).
            The saver does not close it.
        serde: LangGraph's serializer (its default, ``JsonPlusSerializer``, when None).
        feature: the ``metadata.feature`` of the saver's checkpoints; the saver finds a
            thread's namespaces by it, so savers sharing a store and threads use the same one.
        readable: also store the readable copy of the channel values
            (``snapshot.state.channels``).
        writes_wait: seconds ``put_writes`` waits for its checkpoint when it arrives first
            (LangGraph saves in the background and may send a step's writes before the
            checkpoint they belong to is stored).
        follow_restores: a thread whose session was restored (``checkpointd restore <id>``)
            to one of its checkpoints continues from a fork of that checkpoint; costs one more
            read (a concurrent one) per lookup of a thread's latest checkpoint.

    The async methods run on any loop the store works on; the sync ones (``put``,
    ``get_tuple``, ``list``...) run them on the loop the saver was made on and must be called
    from another thread, as with LangGraph's ``AsyncSqliteSaver``.
    """

    def __init__(
        self,
        store: CheckpointAPI,
        *,
        serde: SerializerProtocol | None = None,
        feature: str = FEATURE,
        readable: bool = True,
        writes_wait: float = 30.0,
        follow_restores: bool = True,
    ) -> None:
        super().__init__(serde=serde)
        self.follow_restores = follow_restores
        self.store = store
        self.feature = feature
        self.readable = readable
        self.writes_wait = writes_wait
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "CheckpointdSaver must be made inside a running event loop (the loop its store"
                " runs on), e.g. `async with CheckpointdSaver.from_path(path) as saver:`"
            ) from None
        self._stored: dict[tuple[str, str], asyncio.Event] = {}
        # Per session, the checkpointd id of the checkpoint this saver put last: a guess at the
        # head whose writes are fetched with the head itself, used only when the store agrees.
        self._last_put: dict[str, str] = {}
        self._forking: dict[str, asyncio.Lock] = {}

    @classmethod
    @asynccontextmanager
    async def from_path(
        cls,
        path: str,
        *,
        serde: SerializerProtocol | None = None,
        readable: bool = True,
        follow_restores: bool = True,
        **settings: Any,
    ) -> AsyncIterator[CheckpointdSaver]:
        """A saver over an in-process ``CheckpointManager`` on the database file ``path``;
        ``settings`` are the manager's (``enable_encryption``, ``durability``...)."""
        async with CheckpointManager(database_path=str(path), **settings) as manager:
            yield cls(manager, serde=serde, readable=readable, follow_restores=follow_restores)

    @classmethod
    @asynccontextmanager
    async def from_nats(
        cls,
        url: str = "nats://127.0.0.1:4222",
        *,
        serde: SerializerProtocol | None = None,
        readable: bool = True,
        follow_restores: bool = True,
        **options: Any,
    ) -> AsyncIterator[CheckpointdSaver]:
        """A saver over a ``CheckpointClient`` to the daemon at ``url``; ``options`` are the
        client's (``prefix``, ``credentials_file``, ``request_timeout``...). Pending writes are
        bytes, so the client keeps its default encoding, msgpack."""
        async with CheckpointClient(url, **options) as client:
            yield cls(client, serde=serde, readable=readable, follow_restores=follow_restores)

    # -- reads ---------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (its ``checkpoint_id``), else the thread's latest."""
        configurable = config["configurable"]
        session = session_for(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        langgraph_id = get_checkpoint_id(config)
        if langgraph_id:
            # Where it usually is, and its writes, at once (one wait for the views, not two).
            derived = checkpoint_id_for(session, langgraph_id)
            found, writes = await asyncio.gather(
                self.store.get_checkpoint(derived), self._writes_of(derived)
            )
            if found is not None and found.session_id == session and found.name == langgraph_id:
                return self._to_tuple(found, writes or [])
            found = await self._find(session, langgraph_id, include_snapshot=True)
        else:
            found, restored, writes = await self._head(session)
            if found is not None and restored:
                return await self._fork(session)
            if found is not None and writes is not None:
                return self._to_tuple(found, writes)
        if found is None:
            return None
        return await self._tuple(found)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first (by LangGraph id): of one thread and namespace, of every
        namespace of a thread (no ``checkpoint_ns`` in ``config``) or of every thread
        (``config`` None); ``filter`` matches metadata values, ``before`` a LangGraph id."""
        if limit is not None and limit <= 0:
            return
        query = _ListQuery.of(config, filter or {}, before)
        page_size = min(limit, _PAGE) if limit is not None and query.on_server else _PAGE
        options: dict[str, Any] = {
            "order_by": [("name", "desc")],
            "page_size": page_size,
            "include_snapshot": True,
        }
        if query.conditions:
            options["where"] = " AND ".join(query.conditions)
            options["params"] = query.params
        seen: set[tuple[str, str]] = set()
        yielded = 0
        page_number = 1
        while True:
            if query.session is not None:
                page = await self.store.get_checkpoints_by_session(
                    query.session, page=page_number, **options
                )
            else:
                page = await self.store.get_checkpoints_by_feature(
                    self.feature, page=page_number, **options
                )
            chosen = []
            for found in page:
                key = (found.session_id, found.name)
                if key in seen or not query.holds(found.session_id):  # seen: a re-put's twin
                    continue
                seen.add(key)
                chosen.append(found)
            for item in await asyncio.gather(*(self._tuple(found) for found in chosen)):
                if query.matches(item.metadata):
                    yield item
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
            if not page or page_number * page.page_size >= page.total:
                return
            page_number += 1

    # -- writes --------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: LangGraphCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` as a checkpoint of the thread's session; its parent is the
        ``checkpoint_id`` of ``config``."""
        return await self._put(config, checkpoint, metadata)

    async def _put(
        self,
        config: RunnableConfig,
        checkpoint: LangGraphCheckpoint,
        metadata: CheckpointMetadata,
        restored_from: str | None = None,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns", "")
        session = session_for(thread_id, namespace)
        langgraph_id = checkpoint["id"]
        parent = configurable.get("checkpoint_id")
        full_metadata = get_checkpoint_metadata(config, metadata)
        state = {"channels": _readable(checkpoint["channel_values"])} if self.readable else {}
        snapshot: dict[str, Any] = {
            "sessions": [session],
            "state": state,
            "langgraph": {
                "format": FORMAT,
                "checkpoint": _typed(self.serde, checkpoint),
                "metadata": _typed(self.serde, full_metadata),
                "parent": parent,
            },
        }
        searchable = searchable_metadata(full_metadata)
        searchable["feature"] = self.feature
        fields = {
            "name": langgraph_id,
            "session_id": session,
            "timestamp": checkpoint["ts"],
            "snapshot": snapshot,
            "branches": [],
            "metadata": searchable,
        }
        if restored_from is not None:
            fields["restored_from"] = restored_from
        parent_id = None if not parent else checkpoint_id_for(session, parent)
        created = await self._create(fields, parent, parent_id)
        self._last_put.pop(session, None)  # kept in put order: the oldest are dropped first
        self._last_put[session] = created.id
        if len(self._last_put) > _LAST_PUTS:
            del self._last_put[next(iter(self._last_put))]
        stored = self._stored.pop((session, langgraph_id), None)
        if stored is not None:
            stored.set()
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": langgraph_id,
            }
        }

    async def _create(
        self, fields: dict[str, Any], parent: str | None, parent_id: str | None
    ) -> Checkpoint:
        """Create under the derived id; on a missing parent or a taken id, look them up."""
        session, name = fields["session_id"], fields["name"]
        given: str | None = checkpoint_id_for(session, name)
        replaced: Checkpoint | None = None
        for _ in range(4):
            metadata = dict(fields["metadata"])
            if parent_id is not None:
                metadata["parentCheckpoint"] = parent_id
            attempt = {**fields, "metadata": metadata}
            if given is not None:
                attempt["id"] = given
            try:
                created = await self._create_readable(attempt)
            except NotFoundError:  # the parent is not under its derived id (a copy's is not)
                if parent_id is None or parent is None:
                    raise
                found = await self._find(session, parent)
                new_parent = None if found is None else found.id
                if new_parent == parent_id:
                    raise
                parent_id = new_parent
                continue
            except ConflictError:  # the derived id is taken: a re-put, or a put after a delete
                if given is None:
                    raise
                given = None
                replaced = await self._find(session, name)
                continue
            if replaced is not None:
                await self.store.delete_checkpoint(replaced.id)
            return created
        raise ConflictError(f"checkpoint {name!r} of session {session!r}: could not be stored")

    async def _create_readable(self, fields: dict[str, Any]) -> Checkpoint:
        try:
            return await self.store.create(**fields)
        except InvalidRequestError as error:
            # A channel value no snapshot may hold (a lone surrogate...): the readable copy
            # is best effort, so store the checkpoint without it.
            if not (error.field or "").startswith("snapshot/state/channels"):
                raise
            snapshot = {**fields["snapshot"], "state": {}}
            return await self.store.create(**{**fields, "snapshot": snapshot})

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes as pending writes of the checkpoint ``config`` names; a
        write to a special channel (error, interrupt...) replaces the previous one."""
        configurable = config["configurable"]
        session = session_for(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        langgraph_id = str(configurable["checkpoint_id"])
        items = [
            {
                "index": WRITES_IDX_MAP.get(channel, index),
                "channel": channel,
                "value": list(self.serde.dumps_typed(value)),
            }
            for index, (channel, value) in enumerate(writes)
        ]
        target = checkpoint_id_for(session, langgraph_id)
        try:
            await self.store.put_writes(target, task_id, items, task_path=task_path)
        except NotFoundError:  # a copy, a re-put, or a checkpoint still on its way
            found = await self._find_or_wait(session, langgraph_id)
            await self.store.put_writes(found.id, task_id, items, task_path=task_path)

    async def _find_or_wait(self, session: str, langgraph_id: str) -> Checkpoint:
        """The checkpoint, waiting up to ``writes_wait`` for a put of it still on its way."""
        key = (session, langgraph_id)
        stored = self._stored.setdefault(key, asyncio.Event())
        try:
            found = await self._find(session, langgraph_id)
            if found is None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stored.wait(), self.writes_wait)
                found = await self._find(session, langgraph_id)
        finally:
            if self._stored.get(key) is stored and not stored.is_set():
                del self._stored[key]
        if found is None:
            raise NotFoundError("checkpoint", f"{langgraph_id} of session {session}")
        return found

    # -- whole threads -------------------------------------------------------------------

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint (and its writes) of the thread, in every namespace."""
        for session in await self._sessions(thread_id):
            await self.store.prune_session(session, keep=0)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint whose ``metadata.run_id`` is one of ``run_ids`` (with its
        writes), in one atomic command."""
        values = [str(run_id) for run_id in run_ids]
        if values:
            await self.store.delete_by_metadata("run_id", values)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and pending write of a thread to another thread, each
        namespace in one atomic command (the copies' lineage shows where they came from)."""
        for session, checkpoints in (await self._sessions_with(source_thread_id)).items():
            target = session_for(target_thread_id, thread_of(session)[1])
            ids = {found.id: checkpoint_id_for(target, found.name) for found in checkpoints}
            try:
                await self.store.copy_session(session, target, ids=ids)
            except ConflictError:  # a derived id taken already: let the store choose
                await self.store.copy_session(session, target)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's latest checkpoint; ``delete``: delete all."""
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, not {strategy!r}")
        for thread_id in thread_ids:
            for session in await self._sessions(thread_id):
                await self.store.prune_session(session, keep=_STRATEGIES[strategy])

    # -- versions ------------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """As LangGraph's in-memory saver: a counter, then a random part, as sortable text."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"  # noqa: S311 - not a secret

    # -- sync methods --------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        self._check_thread()
        iterator = self.alist(config, filter=filter, before=before, limit=limit)
        while True:
            try:
                yield self._sync(_next(iterator))
            except StopAsyncIteration:
                return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: LangGraphCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))

    def _check_thread(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self.loop:
            raise asyncio.InvalidStateError(
                "Synchronous calls to CheckpointdSaver are only allowed from another thread"
                " than its event loop's. In async code use the async methods: `await"
                " saver.aget_tuple(...)`, `graph.ainvoke(...)`, `graph.astream(...)`."
            )

    def _sync(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            self._check_thread()
        except asyncio.InvalidStateError:
            coroutine.close()
            raise
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    # -- helpers -------------------------------------------------------------------------

    async def _head(
        self, session: str
    ) -> tuple[Checkpoint | None, bool, builtins.list[PendingWrite] | None]:
        """The thread's head: its latest checkpoint, unless the session was restored since
        (``checkpointd restore <id>``) to one of its checkpoints, which is then the head
        (and True). Its pending writes too when the head is the checkpoint this saver put
        last in the session (asked for at the same time: one wait for the views, not two)."""
        hint = self._last_put.get(session)
        latest, restored, writes = await asyncio.gather(
            self.store.get_checkpoints_by_session(
                session, order_by=[("name", "desc")], page_size=1, include_snapshot=True
            ),
            self._restored(session),
            self._writes_of(hint) if hint is not None else _nothing(),
        )
        if restored is not None:
            return restored, True, None
        if not latest:
            return None, False, None
        return latest[0], False, writes if latest[0].id == hint else None

    async def _fork(self, session: str) -> CheckpointTuple | None:
        """The thread's new head after a restore: a copy of the restored checkpoint under a new
        LangGraph id, as LangGraph's own fork (``update_state(config, None, as_node="__copy__")``)
        makes one: same values, same parent, ``source`` ``fork``. Its tasks get new ids, so
        they run again (a subgraph too, from its start) rather than find the writes of the
        run the restore undid. Its ``restoredFrom`` is the restored checkpoint."""
        async with self._forking.setdefault(session, asyncio.Lock()):
            head, restored, writes = await self._head(session)
            if head is None:
                return None
            if not restored:  # another task of this saver forked it meanwhile
                return (
                    self._to_tuple(head, writes) if writes is not None else await self._tuple(head)
                )
            source = self._to_tuple(head, [])
            step = source.metadata.get("step", -2)
            fork = copy_checkpoint(source.checkpoint)
            fork["id"] = str(uuid6(clock_seq=step + 1))
            fork["ts"] = datetime.now(UTC).isoformat()
            metadata: CheckpointMetadata = {
                "source": "fork",
                "step": step + 1,
                "parents": source.metadata.get("parents", {}),
            }
            parent = source.parent_config or {
                "configurable": {**source.config["configurable"], "checkpoint_id": None}
            }
            stored = await self._put(parent, fork, metadata, restored_from=head.id)
            found = await self._find(
                session, stored["configurable"]["checkpoint_id"], include_snapshot=True
            )
            return None if found is None else self._to_tuple(found, [])

    async def _restored(self, session: str) -> Checkpoint | None:
        """The checkpoint of the session's last restore, when that restore is the last thing
        that happened to the session and restored one of its own live checkpoints."""
        if not self.follow_restores:
            return None
        try:
            state = await self.store.get_session_state(session)
        except NotFoundError:
            return None
        if state.checkpoint_id is not None or state.restored_from is None:
            return None
        found = await self.store.get_checkpoint(state.restored_from)
        if found is None or found.session_id != session:
            return None
        return found

    async def _find(
        self, session: str, langgraph_id: str, *, include_snapshot: bool = False
    ) -> Checkpoint | None:
        """The live checkpoint of ``session`` named ``langgraph_id`` (the newest of twins)."""
        page = await self.store.get_checkpoints_by_session(
            session,
            where="name = ?",
            params=[langgraph_id],
            order_by=[("name", "desc")],
            page_size=1,
            include_snapshot=include_snapshot,
        )
        return page[0] if page else None

    async def _sessions_with(self, thread_id: str) -> dict[str, builtins.list[Checkpoint]]:
        """The thread's sessions (one per namespace) and their live checkpoints, oldest first."""
        prefix = session_for(thread_id)
        sessions: dict[str, builtins.list[Checkpoint]] = {}
        page_number = 1
        while True:
            page = await self.store.get_checkpoints_by_feature(
                self.feature,
                where="sessionId = ? OR sessionId LIKE ?",
                params=[prefix, f"{prefix}|%"],
                order_by=[("createdAt", "asc")],
                page=page_number,
                page_size=_PAGE,
            )
            for found in page:
                if _in_thread(found.session_id, prefix):
                    sessions.setdefault(found.session_id, []).append(found)
            if not page or page_number * page.page_size >= page.total:
                return sessions
            page_number += 1

    async def _sessions(self, thread_id: str) -> builtins.list[str]:
        return builtins.list(await self._sessions_with(thread_id))

    async def _writes_of(self, checkpoint_id: str) -> builtins.list[PendingWrite] | None:
        """The checkpoint's pending writes; None when there is no such checkpoint."""
        try:
            return await self.store.get_writes(checkpoint_id)
        except NotFoundError:
            return None

    async def _tuple(self, found: Checkpoint) -> CheckpointTuple:
        """LangGraph's tuple for a stored checkpoint, with its pending writes."""
        return self._to_tuple(found, await self.store.get_writes(found.id))

    def _to_tuple(self, found: Checkpoint, writes: Sequence[PendingWrite]) -> CheckpointTuple:
        snapshot = found.snapshot
        stored = None if snapshot is None else snapshot.get("langgraph")
        if not isinstance(stored, Mapping):
            raise TypeError(
                f"checkpoint {found.id} of session {found.session_id!r} was not written by"
                " CheckpointdSaver (its snapshot has no 'langgraph' object)"
            )
        thread_id, namespace = thread_of(found.session_id)
        parent = stored.get("parent")
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": namespace,
                    "checkpoint_id": found.name,
                }
            },
            checkpoint=_untyped(self.serde, stored["checkpoint"]),
            metadata=_untyped(self.serde, stored["metadata"]),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": namespace,
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            pending_writes=[
                (write.task_id, write.channel, self.serde.loads_typed(tuple(write.value)))
                for write in writes
            ],
        )


@dataclass(frozen=True, slots=True)
class _ListQuery:
    """What ``alist`` asks the store (``where`` conditions and their parameters, one session or
    every session of the saver's feature) and what it checks itself (the exact filter)."""

    session: str | None
    thread: str | None
    conditions: builtins.list[str]
    params: builtins.list[Any]
    exact: Mapping[str, Any]
    on_server: bool

    @classmethod
    def of(
        cls, config: RunnableConfig | None, exact: Mapping[str, Any], before: RunnableConfig | None
    ) -> _ListQuery:
        conditions: builtins.list[str] = []
        params: builtins.list[Any] = []
        session = thread = None
        configurable = {} if config is None else config["configurable"]
        if configurable.get("thread_id") is not None:
            if "checkpoint_ns" in configurable:
                session = session_for(configurable["thread_id"], configurable["checkpoint_ns"])
            else:
                thread = session_for(configurable["thread_id"])
                conditions.append("(sessionId = ? OR sessionId LIKE ?)")
                params += [thread, f"{thread}|%"]
        if langgraph_id := configurable.get("checkpoint_id"):
            conditions.append("name = ?")
            params.append(langgraph_id)
        if before is not None and (before_id := get_checkpoint_id(before)):
            conditions.append("name < ?")
            params.append(before_id)
        on_server = True
        for key, value in exact.items():
            # Scalars the searchable copy holds are matched by the store too (fewer rows).
            if (
                type(value) in (str, int, float, bool)
                and _KEY.fullmatch(key)
                and key not in _RESERVED
            ):
                conditions.append(f"metadata->>'{key}' = ?")
                params.append(value)
            else:
                on_server = False
        return cls(session, thread, conditions, params, exact, on_server)

    def holds(self, session_id: str) -> bool:
        return self.thread is None or _in_thread(session_id, self.thread)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """LangGraph's rule: every filter key's value equals the metadata's."""
        return all(metadata.get(key) == value for key, value in self.exact.items())


async def _nothing() -> None:
    return None


async def _next(iterator: AsyncIterator[T]) -> T:
    return await anext(iterator)


def _in_thread(session_id: str, prefix: str) -> bool:
    return session_id == prefix or session_id.startswith(f"{prefix}|")
