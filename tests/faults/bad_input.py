"""Scenario 9's machinery: the catalogue of bad requests and how each reply is judged.

``test_bad_input.py`` and ``test_bad_input_hypothesis.py`` send these cases to a running daemon
with raw nats-py (and, for what nats-py will not put on the wire, ``RawNats``); ``Ledger``
records every reply and every problem (a missing reply, a 5xx, a leaked internal, a reply over
``max_payload``); ``finish`` checks the daemon afterwards and runs the oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgpack
import nats
import nats.errors
from conftest import TEST_KEY
from contract import CHUNK, CONTENT_TYPE, DOWNLOAD, ERROR, ERROR_CODE, JSON, MSG_ID, MSGPACK, UPLOAD
from daemon.serving import Daemon
from nats.aio.client import Client

from .oracle import check_store

ENCODINGS = (JSON, MSGPACK)

MAX_PAYLOAD = 64 * 1024  # the private nats-server's limit, headers counted
MAX_CHECKPOINT = 60 * 1024  # the daemon's max_checkpoint_size: less than MAX_PAYLOAD
REQUEST_TIMEOUT = 15.0  # seconds one request may wait for its reply on this shared machine
CONCURRENCY = 48  # requests in flight at once
RSS_BOUND = 150 * 1024 * 1024  # bytes the daemon's resident memory may grow by during a storm
CODES = {400: "invalid", 404: "not_found", 409: "conflict", 413: "too_large", 422: "integrity"}
SETTINGS: dict[str, Any] = {
    "enable_encryption": True,
    "encryption_key": TEST_KEY,
    "max_checkpoint_size": MAX_CHECKPOINT,
}

# Text only Python internals, SQLite or the file system would put in an error message (unless
# the request itself carried it: an unknown field's name is echoed back on purpose).
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|sqlite|pytest-of|/work/|/usr/|"
    r"<class |<object |object at 0x|no such (table|column)|\bsyntax error\b",
    re.IGNORECASE,
)
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")


# -- bodies on the wire --------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON literal put into a body as is (``1e400``, ``NaN``, a 5,000-digit number)."""

    text: str


def encode(value: Any, encoding: str) -> bytes:
    """``value`` in ``encoding``; ``Raw`` leaves become their literal text in JSON."""
    if encoding == MSGPACK:
        return bytes(msgpack.packb(value, use_bin_type=True))
    literals: list[str] = []

    def marked(item: Any) -> Any:
        if isinstance(item, Raw):
            literals.append(item.text)
            return f"\x01raw{len(literals) - 1}\x01"
        if isinstance(item, dict):
            return {k: marked(v) for k, v in item.items()}
        if isinstance(item, list):
            return [marked(v) for v in item]
        return item

    text = json.dumps(marked(value), ensure_ascii=True)
    for index, literal in enumerate(literals):
        text = text.replace(f'"\\u0001raw{index}\\u0001"', literal)
    return text.encode()


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_reply(data: bytes, headers: Mapping[str, str]) -> Any:
    """A reply body in the encoding its Content-Type names; strict JSON (no NaN, Infinity)."""
    if headers.get(CONTENT_TYPE) == MSGPACK:
        return msgpack.unpackb(data, raw=False)
    return json.loads(data, parse_constant=_strict_constant)


def header_size(headers: Mapping[str, str] | None) -> int:
    """Bytes nats-py's header block takes (the server counts it against max_payload)."""
    if not headers:
        return 0
    lines = [f"{k}: {v}\r\n".encode() for k, v in headers.items()]
    return len(b"NATS/1.0\r\n") + sum(map(len, lines)) + 2


# -- cases and verdicts --------------------------------------------------------------------------

Check = Callable[[Any], bool]


@dataclass
class Case:
    """One request: where it goes, what it carries, what may come back.

    ``expect``: the statuses allowed (200 for a result); None for any 4xx or a result.
    ``check``: a predicate a result must satisfy.
    """

    kind: str
    verb: str
    body: bytes
    headers: dict[str, str] | None = None
    expect: frozenset[int] | None = None
    check: Check | None = None
    encoding: str = JSON  # what the reply must be encoded in (if the Content-Type is usable)

    def describe(self) -> str:
        return f"{self.kind} {self.verb} {self.headers} {self.body[:160]!r}"


def case(
    kind: str,
    verb: str,
    value: Any,
    encoding: str = JSON,
    *,
    expect: Iterable[int] | None = None,
    check: Check | None = None,
    headers: Mapping[str, str] | None = None,
) -> Case:
    body = value if isinstance(value, bytes) else encode(value, encoding)
    return Case(
        kind,
        verb,
        body,
        {CONTENT_TYPE: encoding, **(headers or {})},
        None if expect is None else frozenset(expect),
        check,
        encoding,
    )


@dataclass
class Ledger:
    """What the requests did: counts, problems, and the writes they acknowledged."""

    sent: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)  # may expire: not for the oracle
    deleted: set[str] = field(default_factory=set)
    max_payload: int = MAX_PAYLOAD  # the server's, which no reply may exceed (headers counted)

    def problem(self, what: str, item: Case) -> None:
        self.problems.append(f"{what}: {item.describe()}"[:1000])

    def oracle_acked(self) -> dict[str, str]:
        skip = self.uncertain | self.deleted
        return {k: v for k, v in self.acked.items() if k not in skip}

    def figures(self) -> dict[str, Any]:
        return {
            "requests": sum(self.sent.values()),
            "by_kind": dict(sorted(self.sent.items())),
            "replies_by_code": dict(sorted(self.codes.items())),
            "problems": len(self.problems),
        }

    def judge(self, item: Case, data: bytes | None, headers: Mapping[str, str] | None) -> None:
        """Record the reply to ``item`` (None: none came) and any problem with it."""
        self.sent[item.kind] += 1
        if data is None:
            self.codes["no reply"] += 1
            self.problem("no reply within the timeout", item)
            return
        headers = headers or {}
        if header_size(headers) + len(data) > self.max_payload:
            self.problem("reply exceeds max_payload", item)
        if ERROR_CODE in headers:
            self._error(item, data, headers)
        else:
            self._result(item, data, headers)

    def _error(self, item: Case, data: bytes, headers: Mapping[str, str]) -> None:
        status_text = headers[ERROR_CODE]
        self.codes[status_text] += 1
        status = int(status_text) if status_text.isdigit() else 0
        if status == 503 and item.verb == "restore" and "timed out" in headers.get(ERROR, ""):
            return  # the restore's own ``timeout`` (fuzzed down to a millisecond) ran out
        if not 400 <= status < 500:
            self.problem(f"status {status_text} ({headers.get(ERROR)!r})", item)
            return
        if item.expect is not None and status not in item.expect:
            wanted = sorted(item.expect)
            self.problem(f"status {status} ({headers.get(ERROR)!r}), expected {wanted}", item)
        try:
            body = decode_reply(data, headers)
        except ValueError:
            self.problem(f"error body is not {headers.get(CONTENT_TYPE)}: {data[:200]!r}", item)
            return
        error = body.get("error") if isinstance(body, dict) else None
        if (
            set(body) != {"error"}
            or not isinstance(error, dict)
            or set(error) != {"code", "message"}
        ):
            self.problem(f"error body is not {{error: {{code, message}}}}: {body!r:.300}", item)
            return
        if error["code"] != CODES.get(status):
            self.problem(f"status {status} with code {error['code']!r}", item)
        message = f"{error['message']} {headers.get(ERROR, '')}"
        if not isinstance(error["message"], str) or ERROR not in headers:
            self.problem("error message missing", item)
        self._leaks(item, message)
        self._encoding(item, headers)

    def _result(self, item: Case, data: bytes, headers: Mapping[str, str]) -> None:
        self.codes["200"] += 1
        if item.expect is not None and 200 not in item.expect:
            self.problem(f"a result, expected {sorted(item.expect)}: {data[:200]!r}", item)
            return
        if DOWNLOAD in headers:  # too big to send: offered for a chunked download
            return
        if item.verb == "download":
            return  # raw bytes of a chunk
        try:
            result = decode_reply(data, headers)
        except ValueError:
            self.problem(f"result is not {headers.get(CONTENT_TYPE)}: {data[:200]!r}", item)
            return
        if not isinstance(result, dict):
            self.problem(f"result is not an object: {result!r:.200}", item)
            return
        if item.check is not None and not item.check(result):
            self.problem(f"result fails its check: {result!r:.300}", item)
        self._encoding(item, headers)
        self._account(item, result)

    def _encoding(self, item: Case, headers: Mapping[str, str]) -> None:
        declared = (item.headers or {}).get(CONTENT_TYPE)
        if declared in ENCODINGS and headers.get(CONTENT_TYPE) != declared:
            self.problem(f"reply in {headers.get(CONTENT_TYPE)}, asked in {declared}", item)

    def _leaks(self, item: Case, message: str) -> None:
        said = item.body.decode("utf-8", "replace").lower()
        said += " ".join((item.headers or {}).values()).lower()
        for pattern in (LEAKS, EXCEPTION_NAME):
            for found in pattern.finditer(message):
                if found.group(0).lower() not in said:
                    self.problem(f"message leaks {found.group(0)!r}: {message[:300]!r}", item)

    def _account(self, item: Case, result: dict[str, Any]) -> None:
        """Remember what a successful write acknowledged, for the oracle."""
        created: list[dict[str, Any]] = []
        if item.verb in {"create", "update"}:
            created = [result]
        elif item.verb == "create_batch":
            created = list(result.get("checkpoints", []))
        for checkpoint in created:
            self.acked[checkpoint["id"]] = checkpoint["checksum"]
            if checkpoint.get("retentionExpiresAt") is not None:
                self.uncertain.add(checkpoint["id"])
        if item.verb == "delete" and result.get("deleted") is True:
            encoding = MSGPACK if item.encoding == MSGPACK else JSON
            sent = decode_reply(item.body, {CONTENT_TYPE: encoding}) if item.body else {}
            self.deleted.add(sent["id"])
            self.acked.pop(sent["id"], None)


# -- talking to the daemon -----------------------------------------------------------------------


async def request(nc: Client, prefix: str, item: Case) -> tuple[bytes | None, dict[str, str]]:
    subject = f"{prefix}.{item.verb}"
    try:
        msg = await nc.request(subject, item.body, timeout=REQUEST_TIMEOUT, headers=item.headers)
    except nats.errors.TimeoutError:
        return None, {}
    return msg.data, dict(msg.headers or {})


async def storm(nc: Client, prefix: str, cases: list[Case], ledger: Ledger) -> None:
    """Send every case, ``CONCURRENCY`` at a time, and judge every reply."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Case) -> None:
        async with slots:
            data, headers = await request(nc, prefix, item)
        ledger.judge(item, data, headers)

    await asyncio.gather(*(one(item) for item in cases))


async def call(nc: Client, prefix: str, verb: str, body: Any) -> dict[str, Any]:
    """A valid request that must succeed (seeding, the health check after a storm)."""
    msg = await nc.request(
        f"{prefix}.{verb}", encode(body, JSON), timeout=REQUEST_TIMEOUT, headers=None
    )
    assert ERROR_CODE not in (msg.headers or {}), (verb, msg.headers, msg.data[:300])
    result: dict[str, Any] = json.loads(msg.data)
    return result


def memory(pid: int) -> tuple[int, int]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            values[name] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def log_problems(daemon: Daemon) -> list[str]:
    """Lines of the daemon's log that show an exception or an error, or are not JSON at all
    (Python prints an unhandled task exception to stderr as plain text)."""
    found = []
    plain = False  # the line before was not JSON either: one traceback is one finding
    for line in daemon.stderr().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if not plain:
                found.append(f"not JSON: {line[:300]}")
            plain = True
            continue
        plain = False
        keys = {"exception", "exc_info", "stack", "traceback"} & set(record)
        if keys or record.get("level") in {"error", "critical"} or "Traceback" in line:
            found.append(line[:1500])
    return found


@dataclass
class Seeded:
    """Checkpoints that exist before a storm: targets for the ids in the cases."""

    a: str
    b: str
    c: str
    big: str = ""  # one whose reply is bigger than max_payload (only on the private server)


def create_body(name: str = "fuzz", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "sessionId": "fuzz-s",
        "snapshot": {"sessions": ["fuzz-s"], "state": {"step": 1, "notes": "fuzz seed"}},
        "branches": ["main"],
        "metadata": {"feature": "auth", "priority": "high", "tags": ["stable"], "author": "me"},
        "createdBy": "fuzzer",
    }
    body.update(fields)
    return body


async def seed(nc: Client, prefix: str, ledger: Ledger) -> Seeded:
    created: list[str] = []
    for name, extra in (("alpha", {}), ("beta", {}), ("gamma", {"description": "third"})):
        body = create_body(name, **extra)
        if created:
            body["metadata"] = {**body["metadata"], "parentCheckpoint": created[0]}
        cp = await call(nc, prefix, "create", body)
        ledger.acked[cp["id"]] = cp["checksum"]
        created.append(cp["id"])
    return Seeded(*created)


def templates(ids: Seeded) -> dict[str, dict[str, Any]]:
    """A valid request body for every endpoint (writes that would destroy a seed are aimed
    at ids, sessions and metadata that do not exist, restores are dry runs)."""
    return {
        "create": create_body(),
        "create_batch": {"checkpoints": [create_body("batched")]},
        "get": {"id": ids.a, "includeSnapshot": True},
        "list": {
            "sessionId": "fuzz-s",
            "where": "metadata->>'feature' = ? AND compressed = ? AND size > 0",
            "params": ["auth", True],
            "orderBy": [{"field": "timestamp", "direction": "desc"}],
            "pagination": {"page": 1, "pageSize": 10},
        },
        "update": {"id": ids.c, "changes": {"name": "renamed", "branches": ["main", "b"]}},
        "delete": {"id": "fuzz-missing"},
        "delete_expired": {},
        "restore": {
            "id": ids.b,
            "targetSessionId": "fuzz-r",
            "mergeStrategy": "merge",
            "preserveCurrentState": True,
            "currentState": {"sessions": [], "state": {"step": 0}},
            "conflictResolution": {"strategy": "merge"},
            "validation": {"validateChecksum": True, "validateSchema": True},
            "rollbackOnError": True,
            "notify": True,
            "timeout": 20000,
            "dryRun": True,
        },
        "search": {
            "query": "alpha",
            "filters": {
                "feature": ["auth"],
                "priority": ["high"],
                "tags": ["stable"],
                "sessionId": "fuzz-s",
                "author": "me",
                "dateRange": {"from": "2020-01-01T00:00:00Z", "to": "2200-01-01T00:00:00Z"},
            },
            "sorting": {"field": "relevance", "direction": "desc"},
            "pagination": {"page": 1, "pageSize": 5},
        },
        "stats": {},
        "validate": {"id": ids.a},
        "lineage": {"id": ids.b},
        "diff": {"from": ids.a, "to": ids.b},
        "history": {"checkpointId": ids.a, "afterSeq": 0, "limit": 10},
        "verify": {},
        "rebuild": {},
        "health": {},
        "put_writes": {
            "checkpointId": ids.a,
            "taskId": "fuzz-task",
            "taskPath": "~pull, fuzz",
            "writes": [
                {"index": 0, "channel": "messages", "value": {"text": "fuzz", "n": [1, 2]}},
                {"index": -1, "channel": "__error__", "value": "fuzz error"},
            ],
        },
        "get_writes": {"checkpointId": ids.a},
        "copy_session": {"sourceSessionId": "fuzz-missing", "targetSessionId": "fuzz-copy"},
        "prune_session": {"sessionId": "fuzz-missing", "keep": 1},
        "delete_by_metadata": {
            "key": "fuzz-missing-key",
            "values": ["x", 1, True],
            "sessionId": "fuzz-s",
        },
        "download": {"id": "no-such-download", "index": 0},
    }


# -- the cases -----------------------------------------------------------------------------------


def truncations(bodies: Mapping[str, Any], rng: random.Random, cuts: int | None) -> list[Case]:
    """Each valid body cut short at every byte (``cuts`` None) or at ``cuts`` random bytes.

    A proper prefix of an object is never a whole one: 400. The empty body reads as ``{}``.
    """
    found = []
    for verb, body in bodies.items():
        for encoding in ENCODINGS:
            data = encode(body, encoding)
            points: Iterable[int] = range(len(data))
            if cuts is not None and len(data) > cuts:
                points = [0, *sorted(rng.sample(range(1, len(data)), cuts))]
            for cut in points:
                expect = None if cut == 0 else {400}
                found.append(case("truncated", verb, data[:cut], encoding, expect=expect))
    return found


def flips(bodies: Mapping[str, Any], rng: random.Random, per_body: int) -> list[Case]:
    """Each valid body with one to three bytes XORed with a random non-zero byte."""
    found = []
    for verb, body in bodies.items():
        for encoding in ENCODINGS:
            data = encode(body, encoding)
            for _ in range(per_body):
                damaged = bytearray(data)
                for _ in range(rng.randint(1, 3)):
                    damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
                found.append(case("flipped", verb, bytes(damaged), encoding))
    return found


WRONG_ANY: list[Any] = [
    None,
    True,
    0,
    -1,
    2**53,
    2**63,
    2**64 - 1,
    -(2**63),
    1.5,
    -0.0,
    "",
    "x",
    "\x00",
    "x" * 300,
    [],
    [None],
    [[[]]],
    {},
    {"": None},
    {"a": {"b": [1, {}]}},
]
WRONG_JSON = [
    Raw("1e400"),
    Raw("-1e400"),
    Raw("1e-400"),
    Raw("1" * 5000),
    Raw("123456789012345678901234567890"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw('"\\ud800"'),
    Raw('"\\u0000"'),
]
WRONG_MSGPACK = [
    b"bytes",
    b"",
    msgpack.ExtType(5, b"ab"),
    msgpack.Timestamp(0, 0),
    float("nan"),
    float("inf"),
    {b"bin-key": 1},
]


def paths(body: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of ``body``, objects recursed (lists are values)."""
    for key, value in body.items():
        yield (*prefix, key)
        if isinstance(value, dict) and value:
            yield from paths(value, (*prefix, key))


def replaced(body: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(body)
    copy[path[0]] = replaced(body.get(path[0], {}), path[1:], value)
    return copy


def wrong_types(bodies: Mapping[str, Any]) -> list[Case]:
    """Every field of every body given every other type (and literals only JSON or only
    msgpack can carry); some happen to be valid."""
    found = []
    for verb, body in bodies.items():
        for path in paths(body):
            for n, value in enumerate(WRONG_ANY):
                encoding = ENCODINGS[n % 2]
                found.append(case("wrong-type", verb, replaced(body, path, value), encoding))
            for value in WRONG_JSON:
                found.append(case("wrong-type", verb, replaced(body, path, value), JSON))
            for packed in WRONG_MSGPACK:
                found.append(case("wrong-type", verb, replaced(body, path, packed), MSGPACK))
    return found


def bytes_keys(bodies: Mapping[str, Any]) -> list[Case]:
    """A msgpack bin-type (bytes) key beside the string keys of every body and of every object
    in it, and as a body's only key: a 400 wherever it is (JSON cannot carry one)."""
    found = []
    for verb, body in bodies.items():
        found.append(case("bytes-key", verb, {b"x": 1}, MSGPACK, expect={400}))
        found.append(case("bytes-key", verb, {**body, b"x": 1}, MSGPACK, expect={400}))
        for path in paths(body):
            inner = body
            for key in path:
                inner = inner[key]
            if isinstance(inner, dict):
                bad = replaced(body, path, {**inner, b"k": "v"})
                found.append(case("bytes-key", verb, bad, MSGPACK, expect={400}))
    return found


def deep_json(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def deep_msgpack(depth: int, kind: str) -> bytes:
    return (b"\x91" if kind == "array" else b"\x81\xa1a") * depth + b"\x01"


def deep_nesting(bodies: Mapping[str, Any]) -> list[Case]:
    """10,000 levels of arrays and of maps, as the body and inside fields; and depths just
    past the limits (64 for a body, 64 for a snapshot) where the parsers would still cope."""
    found = []
    spots = [
        ("create", ("snapshot",)),
        ("create", ("metadata",)),
        ("create", ("snapshot", "state")),
        ("list", ("params",)),
        ("restore", ("currentState",)),
        ("search", ("filters",)),
        ("update", ("changes", "metadata")),
    ]
    for kind in ("array", "map"):
        found.append(case("deep", "create", deep_json(10_000, kind).encode(), JSON, expect={400}))
        found.append(case("deep", "create", deep_msgpack(10_000, kind), MSGPACK, expect={400}))
        for verb, path in spots:
            for depth in (10_000, 900, 100, 66):
                marker = replaced(bodies[verb], path, Raw("DEEP"))
                text = encode(marker, JSON).decode().replace("DEEP", deep_json(depth, kind))
                found.append(case("deep", verb, text.encode(), JSON, expect={400}))
                packed = encode(replaced(bodies[verb], path, "\x00DEEP\x00"), MSGPACK)
                marker_bytes = msgpack.packb("\x00DEEP\x00")
                data = packed.replace(marker_bytes, deep_msgpack(depth, kind))
                found.append(case("deep", verb, data, MSGPACK, expect={400}))
    return found


# msgpack headers that declare far more than follows them.
OVERSIZED = [
    b"\xd9\xff",  # str 8: 255 bytes
    b"\xda\xff\xff",  # str 16
    b"\xdb\xff\xff\xff\xff",  # str 32: 4 GiB
    b"\xc4\xff",  # bin 8
    b"\xc5\xff\xff",  # bin 16
    b"\xc6\xff\xff\xff\xff",  # bin 32
    b"\xdc\xff\xff",  # array 16
    b"\xdd\xff\xff\xff\xff",  # array 32
    b"\xde\xff\xff",  # map 16
    b"\xdf\xff\xff\xff\xff",  # map 32
    b"\xc7\xff\x01",  # ext 8
    b"\xc8\xff\xff\x01",  # ext 16
    b"\xc9\xff\xff\xff\xff\x01",  # ext 32
    b"\xbf",  # fixstr 31
    b"\x9f",  # fixarray 15
    b"\x8f",  # fixmap 15
]


def oversized_lengths(bodies: Mapping[str, Any]) -> list[Case]:
    """Each oversized header as the whole body, as a field's value, as a key, and before a
    run of filler that still falls short."""
    found = []
    create = bodies["create"]
    for header in OVERSIZED:
        as_value = b"\x84\xa4name" + header + b"abc"
        as_key = b"\x81" + header + b"abc"
        filler = header + b"\xc0" * 30_000
        in_field = encode(replaced(create, ("branches",), "\x00X\x00"), MSGPACK)
        in_field = in_field.replace(msgpack.packb("\x00X\x00"), header + b"abc")
        for data in (header + b"abc", as_value, as_key, filler, in_field):
            found.append(case("oversized-length", "create", data, MSGPACK, expect={400}))
        get = b"\x81\xa2id" + header + b"\x00\x01"
        found.append(case("oversized-length", "get", get, MSGPACK, expect={400}))
    return found


BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"]


def invalid_utf8(bodies: Mapping[str, Any], ids: Seeded) -> list[Case]:
    """Invalid UTF-8 in JSON text and in msgpack strings, in keys and in values; JSON escapes
    of lone surrogates. (JSON in UTF-16 or with a BOM is still JSON: either answer is fine.)"""
    found = []
    targets = [
        ("create", ("name",)),
        ("create", ("metadata", "author")),
        ("create", ("snapshot", "state", "notes")),
        ("get", ("id",)),
        ("list", ("where",)),
        ("search", ("query",)),
        ("history", ("checkpointId",)),
    ]
    for bad in BAD_UTF8:
        for verb, path in targets:
            marked = replaced(bodies[verb], path, "\x00U\x00")
            text = encode(marked, JSON).replace(b'"\\u0000U\\u0000"', b'"a' + bad + b'b"')
            found.append(case("utf8", verb, text, JSON, expect={400}))
            packed = encode(marked, MSGPACK)
            raw = b"a" + bad + b"b"
            data = packed.replace(msgpack.packb("\x00U\x00"), bytes([0xA0 | len(raw)]) + raw)
            found.append(case("utf8", verb, data, MSGPACK, expect={400}))
        key = bytes([0xA0 | (len(bad) + 1)]) + b"k" + bad
        found.append(case("utf8", "stats", b"\x81" + key + b"\x01", MSGPACK, expect={400}))
        found.append(case("utf8", "stats", b'{"k' + bad + b'": 1}', JSON, expect={400}))
    for escape in ("\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800"):
        for verb, path in targets:
            marked = replaced(bodies[verb], path, Raw(f'"x{escape}"'))
            found.append(case("utf8", verb, encode(marked, JSON), JSON, expect={400}))
    valid = json.dumps(bodies["get"] | {"id": ids.a})
    found.append(case("utf8", "get", b"\xef\xbb\xbf" + valid.encode(), JSON))
    found.append(case("utf8", "get", valid.encode("utf-16"), JSON))
    found.append(case("utf8", "get", valid.encode("utf-32"), JSON))
    return found


def content_types(bodies: Mapping[str, Any]) -> list[Case]:
    """Absent, usable and unusable Content-Types on a valid body of every verb."""
    usable = ["", ";", "application/json", "APPLICATION/JSON; charset=latin-1", "text/json"]
    unusable = [
        "text/plain",
        "application/cbor",
        "application/json,application/msgpack",
        "x" * 8000,
        "application/ms gpack",
        "ü/ö",
    ]
    found = []
    for verb, body in bodies.items():
        data = encode(body, JSON)
        found.append(Case("content-type", verb, data, None, None))
        for declared in usable:
            found.append(Case("content-type", verb, data, {CONTENT_TYPE: declared}, None))
        for declared in unusable:
            headers = {CONTENT_TYPE: declared}
            found.append(Case("content-type", verb, data, headers, frozenset({400})))
        # The other encoding's bytes under a usable label.
        headers = {CONTENT_TYPE: MSGPACK}
        expect = None if data == b"{}" else frozenset({400})  # b"{" is a msgpack int
        found.append(Case("content-type", verb, data, headers, expect, encoding=MSGPACK))
        packed = encode(body, MSGPACK)
        expect = frozenset({400}) if body else None  # an empty map is one byte, 0x80
        found.append(Case("content-type", verb, packed, {CONTENT_TYPE: JSON}, expect))
        found.append(
            Case(
                "content-type",
                verb,
                packed,
                {CONTENT_TYPE: "application/x-msgpack"},
                None,
                encoding=MSGPACK,
            )
        )
    return found


HOSTILE_IDS = [
    ".",
    "*",
    ">",
    " ",
    "a b",
    "  padded  ",
    "../../etc/passwd",
    "..",
    "/",
    "\\",
    "a.b.c",
    "$SRV.PING",
    "_INBOX.x",
    "%s%n%x",
    "' OR 1=1 --",
    '" OR ""="',
    "\t",
    "\n",
    "\u202e",
    "ünï",
    "\U0001f600",
    "NULL",
    "x" * 256,
    "x" * 257,
    "x" * 10_240,
    "",
    "\x00",
    "a\x00b",
]


def _valid_id(value: str) -> bool:
    return 1 <= len(value) <= 256 and "\x00" not in value


def _deleted_false(result: Any) -> bool:
    return bool(result == {"deleted": False})


def _no_events(result: Any) -> bool:
    return bool(result.get("events") == [])


def _no_relatives(result: Any) -> bool:
    return bool(result == {"ancestors": [], "descendants": [], "next": None})


def hostile_ids(ids: Seeded) -> list[Case]:
    """Ids with subject, path, SQL and control syntax, empty, NUL, 10 KB: for every verb that
    takes one. A well-formed id that does not exist is not found; a malformed one is a 400."""
    found = []
    for n, hostile in enumerate(HOSTILE_IDS):
        encoding = ENCODINGS[n % 2]
        valid = _valid_id(hostile)
        missing = {404} if valid else {400}
        plans: list[tuple[str, dict[str, Any], set[int], Check | None]] = [
            ("get", {"id": hostile}, missing, None),
            ("update", {"id": hostile, "changes": {"name": "n"}}, missing, None),
            ("delete", {"id": hostile}, {200} if valid else {400}, _deleted_false),
            ("restore", {"id": hostile, "dryRun": True}, missing, None),
            ("validate", {"id": hostile}, missing, None),
            # An id without a checkpoint has no relatives (or is not found).
            ("lineage", {"id": hostile}, {200, 404} if valid else {400}, _no_relatives),
            ("diff", {"from": hostile, "to": ids.a}, missing, None),
            ("diff", {"from": ids.a, "to": hostile}, missing, None),
            ("history", {"checkpointId": hostile}, {200} if valid else {400}, _no_events),
            ("list", {"sessionId": hostile}, {200} if valid else {400}, None),
            ("download", {"id": hostile, "index": 0}, {400, 404}, None),
        ]
        for verb, body, expect, check in plans:
            found.append(case("hostile-id", verb, body, encoding, expect=expect, check=check))
    return found


SEARCHES = [
    '"',
    '""',
    '"unterminated',
    "*",
    "a*",
    "**",
    "NEAR(",
    "NEAR(a b, 2)",
    "NEAR(a b, -1)",
    "AND OR NOT",
    "a AND",
    "OR",
    "NOT a",
    "^",
    "^alpha",
    ":",
    "name:alpha",
    "name : alpha",
    "{name author}: alpha",
    "-name:alpha",
    "+",
    "-",
    "(",
    ")",
    "(a OR b",
    "a\"b'c",
    "\\",
    "'; DROP TABLE checkpoints; --",
    "rank MATCH 'x'",
    "checkpoints_fts",
    "\x00",
    "a\x00b",
    "\U0001f600",
    "ünï cødé",
    "x" * 10_240,
    "alpha " * 1700,
    "",
    " ",
]


def _items(result: Any) -> bool:
    return isinstance(result.get("items"), list) and isinstance(result.get("total"), int)


def hostile_searches() -> list[Case]:
    """FTS5 syntax and odd text as the query and as filter values: a page or a 400."""
    found = []
    for n, text in enumerate(SEARCHES):
        encoding = ENCODINGS[n % 2]
        bodies: list[dict[str, Any]] = [
            {"query": text},
            {"query": text, "limit": 5},
            {"query": "alpha", "filters": {"author": text, "tags": [text]}},
            {"query": "a", "filters": {"feature": [text], "sessionId": text}},
            {"query": text, "sorting": {"field": text, "direction": text}},
            {"query": "a", "filters": {"dateRange": {"from": text, "to": text}}},
        ]
        for body in bodies:
            found.append(case("search", "search", body, encoding, expect={200, 400}, check=_items))
    return found


WHERES = [
    "1=1; DROP TABLE checkpoints",
    "name = 'x' --",
    "name = 'x' /* */",
    'name = "x"',
    "name = x",
    "sqlite_master = 1",
    "rowid > 0",
    "seq > 0",
    "(" * 100 + "name = 'x'" + ")" * 100,
    "(" * 10_000,
    "NOT " * 500 + "name = 'x'",
    "name = 'a' OR " * 300 + "name = 'b'",
    "id IN ()",
    "id IN (" + ",".join(["?"] * 1001) + ")",
    "metadata->>'feature' = ?",
    "metadata->'feature' = 'auth'",
    "metadata->>'",
    "metadata->>'a''b' = 'x'",
    "metadata->>'" + "k" * 5000 + "' = 1",
    "name LIKE ?",
    "name GLOB 'x'",
    "name = 'a' COLLATE nocase",
    "randomblob(1000000000) = 1",
    "load_extension('x') = 1",
    "name = ?  AND name = ?",
    "version > 9223372036854775808",
    "size = 1e999",
    "size = -",
    "timestamp < ?",
    "name IS NOT NULL",
    "name IS",
    "compressed = TRUE",
    "= = =",
    "'",
    "?",
    "\x00",
    "name = '\x00'",
    "x" * 10_240,
    "",
]
PARAMS: list[Any] = [
    [],
    ["auth"],
    ["a", "b", "c"],
    [None],
    [{"a": 1}],
    [[1]],
    [2**64 - 1],
    [-(2**63)],
    [1.5],
    [True],
    ["not a date"],
    ["2024-01-01T00:00:00Z"],
    "auth",
    {"0": "auth"},
    5,
    None,
]
ORDER_BYS: list[Any] = [
    [{"field": "password"}],
    [{"field": "name; DROP TABLE checkpoints"}],
    [{"field": "timestamp", "direction": "sideways"}],
    [{"field": "timestamp", "direction": "DESC; --"}],
    [{"field": "metadata->>'x'"}],
    [{"field": "name"}, {"field": "name"}],
    [{"field": "name"}] * 1000,
    [["timestamp", "desc"]],
    [{}],
    [None],
    "timestamp",
    {"field": "name"},
    [{"field": "name", "direction": "asc", "extra": 1}],
    [{"field": 5}],
]


def hostile_filters() -> list[Case]:
    """``where``, ``params`` and ``orderBy`` that try SQL, the grammar's limits and its types."""
    found = []
    rng = random.Random(9)
    for n, where in enumerate(WHERES):
        encoding = ENCODINGS[n % 2]
        for params in rng.sample(PARAMS, 4):
            body = {"sessionId": "fuzz-s", "where": where, "params": params}
            found.append(case("filter", "list", body, encoding, expect={200, 400}, check=_items))
        body = {"feature": "auth", "where": where}
        found.append(case("filter", "list", body, encoding, expect={200, 400}, check=_items))
    for n, order_by in enumerate(ORDER_BYS):
        body = {"sessionId": "fuzz-s", "orderBy": order_by}
        encoding = ENCODINGS[n % 2]
        found.append(case("filter", "list", body, encoding, expect={200, 400}, check=_items))
    return found


WRITING_VERBS = (
    "create",
    "create_batch",
    "update",
    "delete",
    "delete_expired",
    "restore",
    "put_writes",
    "copy_session",
    "prune_session",
    "delete_by_metadata",
)
MSG_IDS = ["", "x", " spaced ", "*", ">", "../x", "a.b", "ü", "\U0001f600", "x" * 256]
MSG_IDS_LONG = ["x" * 1024, "y" * 10_240, "z" * 40_000]


def message_ids(bodies: Mapping[str, Any]) -> list[Case]:
    """Odd and huge ``Nats-Msg-Id`` headers on every writing verb (a retry of one id with
    another body is a 409; a long one a 400)."""
    found = []
    for verb in WRITING_VERBS:
        for msg_id in [*MSG_IDS, *MSG_IDS_LONG]:
            headers = {MSG_ID: f"{verb}-{msg_id}" if msg_id else ""}
            found.append(case("msg-id", verb, bodies[verb], JSON, headers=headers))
    return found


def transfers() -> list[Case]:
    """The chunked-transfer endpoints with missing, malformed and unknown headers and ids."""
    found = []
    chunks = [
        "",
        "a/b",
        "0/0",
        "1/1",
        "-1/2",
        "0/100001",
        "0/",
        "/",
        "1/0",
        "0/1/2",
        "9" * 30 + "/1",
    ]
    for chunk in chunks:
        headers = {UPLOAD: "fz-upload", CHUNK: chunk}
        found.append(case("transfer", "upload", b"abc", JSON, expect={400}, headers=headers))
    for upload_id in ["", "u" * 65, "u" * 10_000]:
        headers = {UPLOAD: upload_id, CHUNK: "0/1"}
        found.append(case("transfer", "upload", b"abc", JSON, expect={400}, headers=headers))
    found.append(case("transfer", "upload", b"abc", JSON, expect={400}))
    found.append(case("transfer", "upload", b"abc", JSON, expect={400}, headers={UPLOAD: "u"}))
    for upload_id in ["never-uploaded", "*", "../x", "x" * 10_000]:
        headers = {UPLOAD: upload_id}
        found.append(case("transfer", "create", b"", JSON, expect={404}, headers=headers))
    for index in [-1, 2**64 - 1, 1.5, True, None, "0", [0]]:
        body = {"id": "no-such-download", "index": index}
        found.append(case("transfer", "download", body, MSGPACK, expect={400, 404}))
    found.append(case("transfer", "download", {}, JSON, expect={400}))
    return found


# -- odd bytes nats-py will not send: a raw NATS connection --------------------------------------


class RawNats:
    """The NATS client protocol over a socket, one request at a time, headers as raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._inbox = f"_RAW.{uuid.uuid4().hex}"

    @classmethod
    async def connect(cls, url: str) -> RawNats:
        parsed = urlparse(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        raw = cls(reader, writer)
        info = await raw._line()
        assert info.startswith(b"INFO "), info
        options = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(options).encode() + b"\r\n")
        writer.write(f"SUB {raw._inbox}.* 1\r\nPING\r\n".encode())
        while (line := await raw._line()) != b"PONG":
            assert not line.startswith(b"-ERR"), line
        return raw

    async def _line(self) -> bytes:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return (await self._reader.readuntil(b"\r\n"))[:-2]

    async def request(
        self, subject: str, header_block: bytes, payload: bytes
    ) -> tuple[bytes | None, dict[str, str], str]:
        """Send one HPUB; the reply's body and headers, or the server's ``-ERR`` text."""
        reply = f"{self._inbox}.1"
        total = len(header_block) + len(payload)
        command = f"HPUB {subject} {reply} {len(header_block)} {total}\r\n".encode()
        self._writer.write(command + header_block + payload + b"\r\n")
        while True:
            try:
                line = await self._line()
            except (asyncio.IncompleteReadError, ConnectionError):
                return None, {}, "connection closed"
            if line == b"PING":
                self._writer.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                return None, {}, line.decode("utf-8", "replace")
            elif line.startswith((b"HMSG ", b"MSG ")):
                return *await self._message(line), ""

    async def _message(self, line: bytes) -> tuple[bytes, dict[str, str]]:
        parts = line.split()
        header_length = int(parts[-2]) if parts[0] == b"HMSG" else 0
        data = await self._reader.readexactly(int(parts[-1]) + 2)
        block, body = data[:header_length], data[header_length:-2]
        headers = {}
        for entry in block.split(b"\r\n")[1:]:
            name, sep, value = entry.partition(b":")
            if sep:
                headers[name.decode().strip()] = value.decode().strip()
        return body, headers

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


RAW_HEADERS = [
    b"NATS/1.0\r\nNats-Msg-Id: \xff\xfe\x80 not utf-8\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: a\rb\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: one\r\nNats-Msg-Id: two\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id:\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id:\t\ttabbed\r\n\r\n",
    b"NATS/1.0\r\nnats-msg-id: lower\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: " + b"m" * 60_000 + b"\r\n\r\n",
    b"NATS/1.0\r\nN\xe4ts-Msg-Id: x\r\n\r\n",
    b"NATS/1.0\r\na line without a colon\r\n\r\n",
    b"NATS/1.0 503 No Responders\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Msg-Id: hb\r\n\r\n",
    b"NATS/1.0\r\nContent-Type: application/\xffjson\r\n\r\n",
    b"NATS/1.0\r\nContent-Type: application/msgpack\r\nContent-Type: application/json\r\n\r\n",
    b"NATS/1.0\r\nCheckpointd-Upload: \xff\xfe\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
]


async def raw_headers(url: str, prefix: str, body: bytes, ledger: Ledger) -> None:
    """Header blocks with bytes nats-py would not send, on a valid create: 4xx or a result."""
    for block in RAW_HEADERS:
        raw = await RawNats.connect(url)
        try:
            data, headers, error = await raw.request(f"{prefix}.create", block, body)
        finally:
            await raw.close()
        item = Case("raw-header", "create", body, {"raw": block[:80].decode("latin-1")})
        if error:
            ledger.sent[item.kind] += 1
            ledger.problem(f"the server refused it: {error}", item)
            continue
        ledger.judge(item, data, headers)


async def past_max_payload(url: str, prefix: str, ledger: Ledger) -> None:
    """A message one byte past max_payload never reaches the daemon: the server refuses it."""
    for header_block, payload in (
        (b"NATS/1.0\r\n\r\n", b"{" + b" " * (MAX_PAYLOAD - 12)),  # 12 + 1 + ... = MAX + 1
        (b"NATS/1.0\r\nNats-Msg-Id: " + b"m" * MAX_PAYLOAD + b"\r\n\r\n", b"{}"),
    ):
        assert len(header_block) + len(payload) > MAX_PAYLOAD
        raw = await RawNats.connect(url)
        try:
            data, _, error = await raw.request(f"{prefix}.create", header_block, payload)
        finally:
            await raw.close()
        ledger.sent["past-max-payload"] += 1
        ledger.codes["refused by nats-server"] += 1
        assert data is None, data[:200]
        assert "Maximum Payload" in error, error


# -- bodies at max_payload -----------------------------------------------------------------------


def fill_to(body_of: Callable[[int], dict[str, Any]], headers: Mapping[str, str]) -> bytes:
    """The JSON of ``body_of(n)`` for the ``n`` that makes the message exactly MAX_PAYLOAD."""
    room = MAX_PAYLOAD - header_size(headers)
    base = len(encode(body_of(0), JSON))
    data = encode(body_of(room - base), JSON)
    assert len(data) == room, (len(data), room)
    return data


def at_max_payload(big: list[str]) -> list[Case]:
    """Messages of exactly max_payload bytes, headers counted: a valid create (its id goes
    into ``big``), one whose snapshot passes max_checkpoint_size (413), and garbage (400)."""
    headers = {CONTENT_TYPE: JSON}
    room = MAX_PAYLOAD - header_size(headers)

    def padded(n: int) -> dict[str, Any]:
        # Most of it is snapshot (not echoed), the rest metadata: the create's reply fits in
        # a message, the get's does not.
        body = create_body("at-max", snapshot={"sessions": [], "state": {"blob": "s" * 40_000}})
        body["metadata"] = {**body["metadata"], "pad": "p" * n}
        return body

    def snapshot(n: int) -> dict[str, Any]:
        return create_body("too-big", snapshot={"sessions": [], "state": {"blob": "x" * n}})

    def remember(result: Any) -> bool:
        big.append(result["id"])
        return True

    rng = random.Random(99)
    garbage = bytes(rng.randrange(256) for _ in range(room))
    long_id = fill_to(lambda n: {"id": "i" * n}, headers)
    cases = [
        (fill_to(padded, headers), {200}, remember),
        (fill_to(snapshot, headers), {413}, None),
        (garbage, {400}, None),
        (b"[" * room, {400}, None),
        (b"{" + b" " * (room - 2) + b"}", {400}, None),
    ]
    found = [Case("max-payload", "create", data, headers, frozenset(e), c) for data, e, c in cases]
    found.append(Case("max-payload", "get", long_id, headers, frozenset({400})))
    found.append(Case("max-payload", "search", b" " * room, headers, None))
    deep = b"\x91" * (room - header_size({CONTENT_TYPE: MSGPACK}) + header_size(headers))
    found.append(
        Case("max-payload", "get", deep, {CONTENT_TYPE: MSGPACK}, frozenset({400}), None, MSGPACK)
    )
    return found


# -- the storm, start to end ---------------------------------------------------------------------


def every_case(
    ids: Seeded, rng: random.Random, big: list[str], *, cuts: int | None, per_body: int
) -> list[Case]:
    bodies = templates(ids)
    return [
        *truncations(bodies, rng, cuts),
        *flips(bodies, rng, per_body),
        *wrong_types(bodies),
        *bytes_keys(bodies),
        *deep_nesting(bodies),
        *oversized_lengths(bodies),
        *invalid_utf8(bodies, ids),
        *content_types(bodies),
        *hostile_ids(ids),
        *hostile_searches(),
        *hostile_filters(),
        *message_ids(bodies),
        *transfers(),
        *at_max_payload(big),
    ]


async def ordered_cases(nc: Client, prefix: str, big: list[str], ledger: Ledger) -> None:
    """Cases whose answer depends on one before them: a message id reused with another body,
    a request naming an upload that is missing a chunk, the get of a reply too big to send."""
    first = case("ordered", "create", create_body("once"), JSON, headers={MSG_ID: "fz-dup"})
    again = case("ordered", "create", create_body("twice"), JSON, headers={MSG_ID: "fz-dup"})
    chunk = case(
        "ordered", "upload", b'{"na', JSON, expect={200}, headers={UPLOAD: "fz-part", CHUNK: "0/2"}
    )
    partial = case("ordered", "create", b"", JSON, expect={400}, headers={UPLOAD: "fz-part"})
    for item, expect in ((first, {200}), (again, {409}), (chunk, {200}), (partial, {400})):
        item.expect = frozenset(expect)
        data, headers = await request(nc, prefix, item)
        ledger.judge(item, data, headers)
    if not big:
        ledger.problems.append("the create of exactly max_payload bytes did not succeed")
    for checkpoint_id in big:  # the at-max create: its get reply is offered for download
        item = case("ordered", "get", {"id": checkpoint_id}, JSON, expect={200})
        data, headers = await request(nc, prefix, item)
        ledger.judge(item, data, headers)
        if DOWNLOAD not in headers:
            ledger.problem(f"a reply too big to send came as is: {headers}", item)
            continue
        whole = json.loads(await download(nc, prefix, headers))
        if whole["snapshot"]["state"]["blob"] != "s" * 40_000:
            ledger.problem("the downloaded reply holds another snapshot", item)


async def download(nc: Client, prefix: str, offer: Mapping[str, str]) -> bytes:
    """The body of a reply offered for a chunked download, its sha256 checked."""
    chunks = []
    for index in range(int(offer[f"{DOWNLOAD}-Chunks"])):
        body = encode({"id": offer[DOWNLOAD], "index": index}, JSON)
        msg = await nc.request(f"{prefix}.download", body, timeout=REQUEST_TIMEOUT)
        assert ERROR_CODE not in (msg.headers or {}), msg.headers
        chunks.append(msg.data)
    whole = b"".join(chunks)
    assert hashlib.sha256(whole).hexdigest() == offer[f"{DOWNLOAD}-Sha256"]
    return whole


async def health(nc: Client, daemon: Daemon, ledger: Ledger) -> None:
    """The daemon after a storm: running, ``$SRV.PING`` answers, a valid create works."""
    assert daemon.process.poll() is None, daemon.diagnostics()
    pong = json.loads((await nc.request("$SRV.PING.checkpointd", b"", timeout=10)).data)
    assert pong["name"] == "checkpointd"
    cp = await call(nc, daemon.prefix, "create", create_body("after the storm"))
    ledger.acked[cp["id"]] = cp["checksum"]
    assert (await call(nc, daemon.prefix, "get", {"id": cp["id"]}))["name"] == "after the storm"


async def finish(daemon: Daemon, ledger: Ledger, figures: dict[str, Any], rss: int) -> None:
    """Stop the daemon and run the oracle; then assert no problem, bounded memory, a clean
    log (the oracle runs first: a store damaged by a bad request is the worst finding)."""
    now, peak = memory(daemon.pid)
    growth = max(now, peak) - rss
    figures.update(
        ledger.figures(),
        rss_before_mb=round(rss / 2**20, 1),
        rss_after_mb=round(now / 2**20, 1),
        max_rss_growth_mb=round(growth / 2**20, 1),
    )
    logged = log_problems(daemon)
    assert await asyncio.to_thread(daemon.stop) == 0, daemon.diagnostics()
    acked = ledger.oracle_acked()
    verdict = await check_store(
        daemon.db_path, acked=acked, deleted=ledger.deleted, encryption_key=TEST_KEY
    )
    figures.update(
        rounds=1,
        operations=sum(ledger.sent.values()),
        acknowledged=verdict.acknowledged,
        losses=0,
        events=verdict.events,
    )
    problems = sorted(set(ledger.problems))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
    assert growth < RSS_BOUND, f"the daemon grew by {growth / 2**20:.0f} MB"
    assert not logged, "the daemon logged exceptions:\n" + "\n".join(logged[:10])
