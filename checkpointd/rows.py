"""Checkpoints view rows and create events to API values, derived from the field table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from checkpointd import derived
from checkpointd.events.types import EventRecord
from checkpointd.models import Checkpoint


class _FromRow(Protocol):
    def __call__(
        self, row: Mapping[str, Any], *, snapshot: Mapping[str, Any] | None
    ) -> Checkpoint: ...


checkpoint_from_row: _FromRow = derived.row_reader(Checkpoint)
"""``checkpoint_from_row(row, *, snapshot)``: the Checkpoint a view row (a dict keyed by
column) describes, with ``snapshot`` attached as given."""

created_wire: Callable[[EventRecord], dict[str, Any]] = derived.created_wire()
"""The wire form (without snapshot) of the checkpoint a ``checkpoint.created`` event made.

Equal to ``to_wire()`` of the Checkpoint the create returned: a keyed create's reply is
rendered from its event when a retry asks for it, rather than stored.
"""
