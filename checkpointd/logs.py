"""structlog for the daemon and the CLI: JSON off a terminal (or under journald), key=value on one.

A processor masks every value whose key names a secret, wherever a log call comes from.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_WORDS = ("password", "token", "secret", "passphrase", "encryption_key", "nkey_seed")
_MASK = "***"


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith("_file"):
            event[key] = _MASK
    return event


def wants_json(fmt: str, stream: TextIO) -> bool:
    """``auto``: JSON unless writing to a terminal; always JSON under journald."""
    if fmt != "auto":
        return fmt == "json"
    return bool(os.environ.get("JOURNAL_STREAM")) or not stream.isatty()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog to ``stream`` (stderr) at ``level`` in the chosen format."""
    out = sys.stderr if stream is None else stream
    # ConsoleRenderer formats exceptions itself; JSON needs them rendered to a string first.
    tail: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if wants_json(fmt, out)
        else [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
