"""checkpointd: an event-sourced checkpoint store for agent-session and workflow state."""

from checkpointd import errors
from checkpointd.api import CheckpointAPI
from checkpointd.client import CheckpointClient
from checkpointd.config import Config
from checkpointd.manager import CheckpointManager
from checkpointd.models import (
    Checkpoint,
    Event,
    History,
    Lineage,
    Notification,
    Page,
    Priority,
    VerifyResult,
)
from checkpointd.results import (
    CheckpointRef,
    CopySessionResult,
    Diff,
    PendingWrite,
    PutWritesResult,
    RestoreResult,
    SessionPage,
    SessionState,
    SessionSummary,
    Stats,
    ValidationReport,
)

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointAPI",
    "CheckpointClient",
    "CheckpointManager",
    "CheckpointRef",
    "Config",
    "CopySessionResult",
    "Diff",
    "Event",
    "History",
    "Lineage",
    "Notification",
    "Page",
    "PendingWrite",
    "Priority",
    "PutWritesResult",
    "RestoreResult",
    "SessionPage",
    "SessionState",
    "SessionSummary",
    "Stats",
    "ValidationReport",
    "VerifyResult",
    "__version__",
    "errors",
]
