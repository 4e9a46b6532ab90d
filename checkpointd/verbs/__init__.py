"""The store's verbs of the ``checkpointd`` command, one module per group of verbs.

Each module's ``register(add)`` declares its verbs: ``add`` (from ``checkpointd.cli``) makes the
subcommand with the options every verb shares and returns it for the verb's own arguments. A
verb's work takes the open store (a ``CheckpointManager`` on ``--db``, else a
``CheckpointClient``), the parsed arguments and stdout, and returns the exit code (None is 0).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TextIO

from checkpointd.client import CheckpointClient
from checkpointd.manager import CheckpointManager

Store = CheckpointManager | CheckpointClient
Work = Callable[[Store, argparse.Namespace, TextIO], Awaitable[int | None]]


class AddVerb(Protocol):
    """Make the subcommand ``name`` running ``work``.

    ``flags`` maps the request fields an error may name (``pageSize``) to the flag the user
    typed (``--page-size``), so messages speak of what is on the command line. ``creates``
    marks the verb that may create a missing ``--db`` file.
    """

    def __call__(
        self,
        name: str,
        work: Work,
        help_text: str,
        *,
        flags: Mapping[str, str] = ...,
        creates: bool = ...,
    ) -> argparse.ArgumentParser: ...
