"""checkpointd: an event-sourced checkpoint store for agent-session and workflow state."""

from checkpointd import errors
from checkpointd.config import Config
from checkpointd.manager import CheckpointManager
from checkpointd.models import Checkpoint, Event, History, Lineage, Page, Priority, VerifyResult

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "Config",
    "Event",
    "History",
    "Lineage",
    "Page",
    "Priority",
    "VerifyResult",
    "__version__",
    "errors",
]
