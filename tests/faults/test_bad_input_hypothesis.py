"""Scenario 9, fuzzed by Hypothesis: bodies built from the valid ones, sent to a running daemon.

Each example is a batch of requests made from a valid body of a random endpoint (fields replaced
by any JSON-like or msgpack value, removed or added; then maybe truncated or a byte flipped; or
random bytes), sent concurrently through an event loop the test owns. The verdicts are those of
``test_bad_input``: a 4xx or a valid result for every request, and afterwards a daemon that
serves, logged no exception, stayed within its memory bound and lost nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import nats
import pytest
from contract import CONTENT_TYPE, MSG_ID, MSGPACK
from daemon.serving import Daemons
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .bad_input import (
    ENCODINGS,
    SETTINGS,
    Case,
    Ledger,
    Seeded,
    encode,
    finish,
    health,
    memory,
    paths,
    replaced,
    seed,
    storm,
    templates,
)

TEXTS = [
    "",
    "x",
    "main",
    "auth",
    "high",
    "low",
    "merge",
    "overwrite",
    "keep-original",
    "desc",
    "ASC",
    "timestamp",
    "name",
    "relevance",
    "2024-01-01T00:00:00Z",
    "2999-01-01T00:00:00+00:00",
    "sha256:" + "0" * 64,
    "metadata->>'feature' = ?",
    "name = ? OR size > ?",
    '"',
    "*",
    "NEAR(",
    "\x00",
    "../x",
    ">",
]


def values(encoding: str, ids: Seeded) -> st.SearchStrategy[Any]:
    """JSON-like values (bytes, ext types, NaN and 64-bit bounds in msgpack), near-valid
    strings and the seeded ids mixed in so that requests get past the first checks."""
    known = st.sampled_from([*TEXTS, ids.a, ids.b, ids.c])
    floats = st.floats(allow_nan=encoding == MSGPACK, allow_infinity=encoding == MSGPACK)
    lo, hi = (-(2**63), 2**64 - 1) if encoding == MSGPACK else (-(2**80), 2**80)
    leaves: st.SearchStrategy[Any] = (
        st.none()
        | st.booleans()
        | st.integers(lo, hi)
        | st.integers(-2, 300)
        | floats
        | st.text(max_size=12)
        | known
    )
    keys: st.SearchStrategy[Any] = st.text(max_size=8) | known
    if encoding == MSGPACK:
        leaves |= st.binary(max_size=8) | st.builds(
            msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)
        )
        keys |= st.binary(max_size=4)
    return st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
        max_leaves=12,
    )


@st.composite
def fuzzed(draw: st.DrawFn, ids: Seeded) -> Case:
    """A valid body of a random verb, with up to three fields replaced, removed or added;
    then maybe truncated or with a byte flipped; or random bytes altogether."""
    bodies = templates(ids)
    verb = draw(st.sampled_from(sorted(bodies)))
    encoding = draw(st.sampled_from(ENCODINGS))
    headers: dict[str, str] = {CONTENT_TYPE: encoding}
    if verb in {"create", "create_batch", "update", "delete", "restore", "delete_expired"}:
        msg_id = draw(st.none() | st.text(st.characters(codec="utf-8"), max_size=20))
        if msg_id:
            headers[MSG_ID] = msg_id
    if draw(st.integers(0, 9)) == 0:
        return Case("hypothesis", verb, draw(st.binary(max_size=200)), headers, encoding=encoding)
    body: Any = bodies[verb]
    anything = values(encoding, ids)
    for _ in range(draw(st.integers(0, 3))):
        where = list(paths(body)) if isinstance(body, dict) else []
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "add" or not where:
            key = draw(st.text(max_size=8) | st.sampled_from(sorted(bodies)))
            body = {**body, key: draw(anything)}
            continue
        path = draw(st.sampled_from(where))
        body = replaced(body, path, draw(anything)) if action == "replace" else _removed(body, path)
    data = encode(body, encoding)
    expect = None
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate" and data:
        cut = draw(st.integers(1, len(data))) - 1
        data, expect = data[:cut], (frozenset({400}) if cut else None)
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return Case("hypothesis", verb, data, headers, expect, encoding=encoding)


def _removed(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    copy = dict(body)
    if len(path) == 1:
        copy.pop(path[0], None)
    elif isinstance(copy.get(path[0]), dict):
        copy[path[0]] = _removed(copy[path[0]], path[1:])
    return copy


@pytest.mark.parametrize(
    "examples",
    [pytest.param(200, id="quick"), pytest.param(2000, id="long", marks=pytest.mark.slow)],
)
def test_hypothesis_bodies_get_4xx_or_a_result(
    daemons: Daemons, figures: dict[str, Any], examples: int
) -> None:
    """Batches of bodies Hypothesis builds from the valid ones (fields replaced by any value,
    removed, added; truncated; flipped; random bytes), each batch sent concurrently: every
    reply a 4xx or a valid result; afterwards the daemon serves and the oracle passes."""
    daemon = daemons.start(SETTINGS)
    ledger = Ledger()
    with asyncio.Runner() as runner:
        nc = runner.run(nats.connect(daemon.url, max_reconnect_attempts=0))
        ledger.max_payload = nc.max_payload
        try:
            ids = runner.run(seed(nc, daemon.prefix, ledger))
            rss, _ = memory(daemon.pid)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(batch=st.lists(fuzzed(ids), min_size=1, max_size=12))
            def batches(batch: list[Case]) -> None:
                before = len(ledger.problems)
                runner.run(storm(nc, daemon.prefix, batch, ledger))
                assert len(ledger.problems) == before, ledger.problems[before:]

            batches()
            runner.run(health(nc, daemon, ledger))
        finally:
            runner.run(nc.close())
        runner.run(finish(daemon, ledger, figures, rss))
