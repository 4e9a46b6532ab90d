"""The checkpoint store's public API, as one ``typing.Protocol``.

``CheckpointManager`` (in-process) and ``CheckpointClient`` (over NATS) both offer it, with the
same parameters and results; code that works with either takes a ``CheckpointAPI``. mypy checks
both classes against it (the assignments at the end of this module), so a signature that
drifts in one of them fails the type check rather than a caller.

What only one side has stays off the protocol: the manager's store id, metrics, commit
listeners and view positions; the client's ``last_seq`` and ``fetch_download``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from checkpointd.models import (
    Checkpoint,
    Event,
    History,
    Lineage,
    Notification,
    Page,
    VerifyResult,
)
from checkpointd.requests import DEFAULT_PAGE_SIZE, MAX_LINEAGE
from checkpointd.results import (
    CopySessionResult,
    Diff,
    PendingWrite,
    PutWritesResult,
    RestoreResult,
    SessionPage,
    SessionState,
    Stats,
    ValidationReport,
)

__all__ = ["CheckpointAPI", "NotificationSubscription"]


class NotificationSubscription(Protocol):
    """``async with store.notifications(...) as stream: async for n in stream: ...``."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> Notification: ...


class CheckpointAPI(Protocol):
    """The methods ``CheckpointManager`` and ``CheckpointClient`` share (see each for more)."""

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> Self: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- writes --------------------------------------------------------------------------

    async def create(
        self,
        request: Mapping[str, Any] | None = None,
        /,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Checkpoint: ...

    async def create_batch(
        self, requests: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Checkpoint]: ...

    async def update_checkpoint(
        self,
        checkpoint_id: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Checkpoint: ...

    async def delete_checkpoint(
        self, checkpoint_id: str, *, idempotency_key: str | None = None
    ) -> bool: ...

    async def delete_expired_checkpoints(self, *, idempotency_key: str | None = None) -> int: ...

    async def cleanup_once(self) -> int: ...

    async def rebuild(self, *, progress: Callable[[int], None] | None = None) -> int: ...

    async def restore_checkpoint(
        self,
        checkpoint_id: str,
        options: Mapping[str, Any] | None = None,
        /,
        *,
        custom_resolver: Callable[..., Any] | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> RestoreResult: ...

    async def put_writes(
        self,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[Any],
        task_path: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> PutWritesResult: ...

    async def copy_session(
        self,
        source_session_id: str,
        target_session_id: str,
        *,
        ids: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> CopySessionResult: ...

    async def prune_session(
        self, session_id: str, keep: int = 1, *, idempotency_key: str | None = None
    ) -> int: ...

    async def delete_by_metadata(
        self,
        key: str,
        values: Sequence[Any],
        session_id: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> int: ...

    # -- reads ---------------------------------------------------------------------------

    async def get_writes(self, checkpoint_id: str) -> list[PendingWrite]: ...

    async def get_checkpoint(
        self, checkpoint_id: str, include_snapshot: bool = True
    ) -> Checkpoint | None: ...

    async def get_checkpoints_by_session(
        self, session_id: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Page: ...

    async def get_checkpoints_by_feature(
        self, feature: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Page: ...

    def iter_checkpoints_by_session(
        self, session_id: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Checkpoint]: ...

    def iter_checkpoints_by_feature(
        self, feature: str, options: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Checkpoint]: ...

    async def history(
        self, request: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> History: ...

    def iter_history(
        self, request: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> AsyncIterator[Event]: ...

    async def health(self) -> int: ...

    async def verify_log(
        self, *, progress: Callable[[int], None] | None = None
    ) -> VerifyResult: ...

    async def search_checkpoints(
        self,
        query: str | Mapping[str, Any] | None = None,
        limit: int | None = None,
        /,
        **kwargs: Any,
    ) -> Page: ...

    async def get_checkpoint_stats(self) -> Stats: ...

    async def validate_checkpoint(self, checkpoint_id: str) -> ValidationReport: ...

    async def diff_checkpoints(self, before_id: str, after_id: str) -> Diff: ...

    async def get_lineage(
        self, checkpoint_id: str, *, limit: int = MAX_LINEAGE, offset: int = 0
    ) -> Lineage: ...

    async def get_session_state(self, session_id: str) -> SessionState: ...

    async def get_sessions(
        self, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> SessionPage: ...

    # -- notifications -------------------------------------------------------------------

    def notifications(
        self, event_type: str = "*", session_id: str | None = None
    ) -> NotificationSubscription: ...


if TYPE_CHECKING:  # checked by mypy, never run
    from checkpointd.client import CheckpointClient
    from checkpointd.manager import CheckpointManager

    def _both_offer_the_api(manager: CheckpointManager, client: CheckpointClient) -> None:
        in_process: CheckpointAPI = manager
        over_nats: CheckpointAPI = client
        del in_process, over_nats
