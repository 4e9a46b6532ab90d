"""Before serving: is another store already served on this subject prefix?

Services on one prefix share its requests (one queue group takes turns; different queue groups
each get every request). Two daemons with different databases there would split the writes
between the two files and answer reads from either, silently. Every ``CheckpointService``
advertises its store's id and its prefix in its ``$SRV.INFO`` metadata; ``checkpointd serve``
asks ``$SRV.INFO.checkpointd`` before it subscribes and refuses to start when a service on its
prefix serves another store.

Services with the same store id are let be (replicas of one store share a prefix by design).
Two daemons started at the same instant can both miss each other: the check narrows the
mistake to that window, it is not a lock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client

from checkpointd.daemon.service import SERVICE_NAME
from checkpointd.errors import ConfigError

log = structlog.get_logger("checkpointd.daemon")

FIRST_REPLY = 2.0
"""Seconds to wait for the first ``$SRV.INFO`` reply (with no service at all, the server says
at once that nobody listens)."""

QUIET = 0.25
"""Seconds without a further reply after which every service has answered."""


@dataclass(frozen=True, slots=True)
class ServiceSeen:
    """One checkpointd service instance as its ``$SRV.INFO`` reply describes it."""

    id: str
    version: str
    store_id: str | None
    prefix: str | None
    subjects: tuple[str, ...]

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServiceSeen:
        metadata = info.get("metadata") or {}
        endpoints = info.get("endpoints") or []
        return cls(
            id=str(info.get("id", "")),
            version=str(info.get("version", "")),
            store_id=metadata.get("store_id"),
            prefix=metadata.get("prefix"),
            subjects=tuple(str(e.get("subject", "")) for e in endpoints if isinstance(e, dict)),
        )

    def serves(self, prefix: str) -> bool:
        """Whether it serves ``prefix`` (by its metadata, else by its endpoints' subjects)."""
        if self.prefix is not None:
            return self.prefix == prefix
        return any(subject.startswith(f"{prefix}.") for subject in self.subjects)


async def services(nc: Client) -> list[ServiceSeen]:
    """Every checkpointd service instance that answers ``$SRV.INFO.checkpointd``.

    Waits up to ``FIRST_REPLY`` seconds for the first answer, then until none came for
    ``QUIET`` seconds. A reply that is not a service description is skipped.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    found: list[ServiceSeen] = []
    try:
        await nc.publish(f"$SRV.INFO.{SERVICE_NAME}", b"", reply=inbox)
        timeout = FIRST_REPLY
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                break
            if msg.headers and msg.headers.get("Status") == "503":
                break  # no responders: no service of that name on this NATS
            timeout = QUIET
            try:
                info = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(info, dict):
                found.append(ServiceSeen.from_info(info))
    finally:
        await sub.unsubscribe()
    return found


async def check_prefix(nc: Client, prefix: str, store_id: str) -> None:
    """Refuse to serve ``prefix`` when another store is already served there.

    Raises:
        ConfigError: a checkpointd service on ``prefix`` serves a store with another id (the
            daemon exits 78). A service there that does not say its store (an older version)
            is logged as a warning and let be.
    """
    for other in await services(nc):
        if not other.serves(prefix) or other.store_id == store_id:
            continue
        if other.store_id is None:
            log.warning(
                "another checkpointd serves this prefix and does not say which store",
                prefix=prefix,
                service_id=other.id,
                version=other.version,
            )
            continue
        raise ConfigError(
            "nats.subject_prefix",
            prefix,
            f"already served by another checkpointd (service {other.id}, version"
            f" {other.version}) with a different store ({other.store_id}; this database is"
            f" {store_id}): the two would split writes between their databases. Give this"
            " daemon a subject_prefix or NATS server of its own, or stop the other one",
        )
