"""The check of an export (``checkpointd.ops.export``) without the database: what an auditor
runs on the file they were handed (``checkpointd verify --file``).

``verify_export`` re-hashes every event from its header fields and ``dataMsgpack`` exactly as
the writer did (``events.types``), checks that each ``prevHash`` is the hash before it (the
genesis hash when the export starts at the first event), that ``data`` says what
``dataMsgpack`` holds, that every snapshot's canonical encoding has the checksum its create
event records, that every signed head names the hash of its event and, with the key, that its
MAC holds. An export after ``seq`` N starts from the ``prevHash`` its first event carries:
matching that against event N is up to whoever holds the earlier part.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from checkpointd.errors import CheckpointError
from checkpointd.events.signing import ChainKeys, SignedHead
from checkpointd.events.types import GENESIS_HASH, EventRecord
from checkpointd.models import VerifyResult
from checkpointd.ops.export import FORMAT, PROGRESS_EVERY, Progress, json_view
from checkpointd.snapshots.canonical import canonical_encode, checksum


@dataclass(frozen=True, slots=True)
class ExportCheck:
    """The outcome of ``verify_export``: the check itself and what the export covers."""

    result: VerifyResult
    store_id: str | None
    after_seq: int
    last_seq: int

    def to_wire(self) -> dict[str, Any]:
        return {
            **self.result.to_wire(),
            "storeId": self.store_id,
            "afterSeq": self.after_seq,
            "lastSeq": self.last_seq,
        }


class _BadExportError(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def verify_export(
    lines: Iterable[bytes], keys: ChainKeys | None = None, progress: Progress | None = None
) -> ExportCheck:
    """Check an export (its lines as read from the file) as the module docstring says.

    ``keys`` check the MACs of signed heads (None: only that each names its event's hash).
    ``progress(events_so_far)`` is called every 10,000 events. Never raises for bad content:
    ``result.ok`` is False and ``result.problem`` says what and on which line.
    """
    check = _Check(keys, progress)
    try:
        check.run(lines)
    except _BadExportError as bad:
        return check.outcome(bad.problem)
    return check.outcome(None)


class _Check:
    def __init__(self, keys: ChainKeys | None, progress: Progress | None) -> None:
        self._keys, self._progress = keys, progress
        self.store_id: str | None = None
        self.after_seq = 0
        self._last: EventRecord | None = None
        self._events = 0
        self._signed: int | None = None
        self._number = 0

    def run(self, lines: Iterable[bytes]) -> None:
        ended = False
        for self._number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            if ended:
                raise _BadExportError(f"line {self._number}: more after the end line")
            item = self._parse(raw)
            if self._number == 1:
                self._header(item)
            elif "end" in item:
                self._end(item["end"])
                ended = True
            elif "signedHead" in item:
                self._signed_head(item["signedHead"])
            elif "snapshot" in item:
                self._snapshot(item["snapshot"])
            else:
                self._event(item)
        if self._number == 0:
            raise _BadExportError("the file is empty")
        if not ended:
            raise _BadExportError("the export has no end line: it was cut off")

    def outcome(self, problem: str | None) -> ExportCheck:
        last_seq = self.after_seq if self._last is None else self._last.seq
        if problem is None:
            result = VerifyResult(True, self._events, None, self._signed)
        else:
            result = VerifyResult(False, self._events, last_seq + 1, self._signed, None, problem)
        return ExportCheck(result, self.store_id, self.after_seq, last_seq)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            item = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _BadExportError(f"line {self._number}: not JSON") from None
        if not isinstance(item, dict):
            raise _BadExportError(f"line {self._number}: not a JSON object")
        return item

    def _header(self, item: dict[str, Any]) -> None:
        if item.get("checkpointdExport") != FORMAT:
            raise _BadExportError("line 1: not a checkpointd export (or of another format version)")
        after = item.get("afterSeq")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise _BadExportError("line 1: afterSeq is not a position")
        store_id = item.get("storeId")
        self.after_seq = after
        self.store_id = store_id if isinstance(store_id, str) else None

    def _event(self, item: dict[str, Any]) -> None:
        record = self._record(item)
        expected_seq = self.after_seq + self._events + 1
        if record.seq != expected_seq:
            raise _BadExportError(
                f"line {self._number}: seq {record.seq} where {expected_seq} comes next"
            )
        if self._last is not None and record.prev_hash != self._last.hash:
            raise _BadExportError(
                f"event {record.seq}: its prevHash is not the hash of event {record.seq - 1}"
            )
        if self._last is None and self.after_seq == 0 and record.prev_hash != GENESIS_HASH:
            raise _BadExportError("event 1: its prevHash is not the genesis hash")
        if record.expected_hash() != record.hash:
            raise _BadExportError(f"event {record.seq} does not match its hash")
        try:
            view = json_view(record.data)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise _BadExportError(f"event {record.seq}: dataMsgpack is not msgpack") from None
        if view != item.get("data"):
            raise _BadExportError(
                f"event {record.seq}: data differs from the dataMsgpack its hash covers"
            )
        self._last = record
        self._events += 1
        if self._progress is not None and self._events % PROGRESS_EVERY == 0:
            self._progress(self._events)

    def _record(self, item: dict[str, Any]) -> EventRecord:
        try:
            return EventRecord(
                seq=_typed(item["seq"], int),
                id=_typed(item["id"], str),
                type=_typed(item["type"], str),
                stream=_typed(item["stream"], str),
                session_id=_typed(item["sessionId"], str),
                version=_typed(item["version"], int),
                at=_typed(item["at"], str),
                actor=_typed(item["actor"], str, optional=True),
                causation=_typed(item["causation"], str, optional=True),
                data=base64.b64decode(_typed(item["dataMsgpack"], str), validate=True),
                prev_hash=bytes.fromhex(_typed(item["prevHash"], str)),
                hash=bytes.fromhex(_typed(item["hash"], str)),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise _BadExportError(
                f"line {self._number}: not an event line (a field is missing or bad)"
            ) from None

    def _current(self, what: str, seq: object) -> EventRecord:
        last = self._last
        if last is None or seq != last.seq:
            raise _BadExportError(f"line {self._number}: a {what} of seq {seq} out of place")
        return last

    def _signed_head(self, item: Any) -> None:
        try:
            signed = SignedHead(
                seq=_typed(item["seq"], int),
                hash=bytes.fromhex(_typed(item["hash"], str)),
                key_id=_typed(item["keyId"], str),
                at=_typed(item["at"], str),
                mac=bytes.fromhex(_typed(item["mac"], str)),
            )
        except (KeyError, TypeError, ValueError):
            raise _BadExportError(f"line {self._number}: not a signed head line") from None
        record = self._current("signed head", signed.seq)
        if signed.hash != record.hash:
            raise _BadExportError(
                f"the signed head of seq {signed.seq} names another hash than event's"
            )
        authentic = None if self._keys is None else signed.authentic(self._keys)
        if authentic is False:
            raise _BadExportError(f"the signed head of seq {signed.seq} is forged or edited")
        if authentic:
            self._signed = signed.seq

    def _snapshot(self, item: Any) -> None:
        seq = item.get("seq") if isinstance(item, dict) else None
        record = self._current("snapshot", seq)
        assert isinstance(item, dict)
        if "value" not in item:
            return  # exported without its value (its key was not there): nothing to check
        recorded, _ = record.checksum_and_size()
        try:
            actual = checksum(canonical_encode(item["value"]))
        except CheckpointError:
            actual = None
        if actual is None or actual != recorded:
            raise _BadExportError(
                f"the snapshot of event {seq} is not the one its checksum records"
            )

    def _end(self, item: Any) -> None:
        last = self._last
        expected = {
            "events": self._events,
            "lastSeq": self.after_seq if last is None else last.seq,
            "lastHash": None if last is None else last.hash.hex(),
        }
        if item != expected:
            raise _BadExportError(
                f"line {self._number}: the end line does not match the events before it"
            )


def _typed(value: Any, kind: type, *, optional: bool = False) -> Any:
    if optional and value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(kind.__name__)
    return value
