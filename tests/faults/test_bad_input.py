"""Scenario 9: bad input, fuzzed, against a running daemon.

A real ``checkpointd serve`` process is sent thousands of malformed requests with raw nats-py
(the client library validates, so it cannot send most of them) and, for what nats-py refuses
to put on the wire (odd header bytes, a message past ``max_payload``), with a raw socket that
speaks the NATS protocol. The cases are made up front from a valid body for every endpoint:
truncated at every byte, bytes flipped, every field given every wrong type, 10,000 levels of
nesting, msgpack headers declaring 2^32-1 bytes or items, invalid UTF-8, odd Content-Types and
``Nats-Msg-Id`` headers, bodies at ``max_payload``, hostile filters, search strings and ids; a
Hypothesis test (``test_bad_input_hypothesis.py``) adds bodies of its own. They go out
concurrently.

What a user would notice, asserted for every request: it gets a reply within its timeout; the
reply is either a valid result (some mutations happen to be valid) or an error with a 4xx
``Nats-Service-Error-Code`` and a ``{"error": {"code", "message"}}`` body in the request's
encoding whose message shows no internals. Afterwards the daemon still runs, ``$SRV.PING``
answers, a valid create works, its log holds no exception, its memory grew within a bound, and
once it stopped the oracle finds every acknowledged create.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from daemon.serving import Daemon, Daemons
from natsserver import NatsServer, start_nats_server

from .bad_input import (
    JSON,
    MAX_PAYLOAD,
    SETTINGS,
    Case,
    Ledger,
    Raw,
    case,
    create_body,
    deep_json,
    encode,
    every_case,
    finish,
    health,
    log_problems,
    memory,
    ordered_cases,
    past_max_payload,
    raw_headers,
    request,
    seed,
    storm,
)


@pytest.fixture
def small_server() -> Iterator[NatsServer]:
    """A nats-server of its own with a 64 KB max_payload."""
    server = start_nats_server(max_payload=MAX_PAYLOAD)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("cuts", "per_body"),
    [
        pytest.param(48, 24, id="quick"),
        pytest.param(None, 200, id="every-byte", marks=pytest.mark.slow),
    ],
)
async def test_a_storm_of_bad_input_gets_4xx_replies_and_the_daemon_carries_on(
    daemons: Daemons,
    small_server: NatsServer,
    figures: dict[str, Any],
    cuts: int | None,
    per_body: int,
) -> None:
    """Thousands of malformed, hostile and oversized requests, sent concurrently to a daemon
    on a 64 KB nats-server: each answered, with a 4xx or a valid result; the daemon still
    serves, logged no exception, stayed within its memory bound and lost nothing."""
    daemon = daemons.start(SETTINGS, nats_url=small_server.url)
    ledger = Ledger()
    nc = await nats.connect(daemon.url, max_reconnect_attempts=0)
    assert nc.max_payload == MAX_PAYLOAD
    try:
        ids = await seed(nc, daemon.prefix, ledger)
        rng = random.Random(20240609)
        big: list[str] = []
        cases = every_case(ids, rng, big, cuts=cuts, per_body=per_body)
        rss, _ = memory(daemon.pid)
        await storm(nc, daemon.prefix, cases, ledger)
        await ordered_cases(nc, daemon.prefix, big, ledger)
        body = encode(create_body("raw"), JSON)
        await raw_headers(daemon.url, daemon.prefix, body, ledger)
        await past_max_payload(daemon.url, daemon.prefix, ledger)
        await health(nc, daemon, ledger)
    finally:
        await nc.close()
    await finish(daemon, ledger, figures, rss)


# -- the findings, one by one --------------------------------------------------------------------


async def judged(daemon: Daemon, cases: list[Case]) -> Ledger:
    """``cases`` sent one at a time to ``daemon``, judged; the daemon's log checked too."""
    ledger = Ledger()
    nc = await nats.connect(daemon.url, max_reconnect_attempts=0)
    try:
        for item in cases:
            data, headers = await request(nc, daemon.prefix, item)
            ledger.judge(item, data, headers)
    finally:
        await nc.close()
    ledger.problems += [f"daemon log: {line}" for line in log_problems(daemon)]
    return ledger


async def test_surrogates_encoded_in_json_bytes_are_refused_with_a_400(daemons: Daemons) -> None:
    """JSON text holding a UTF-16 surrogate encoded as UTF-8 bytes (ED A0 80: not UTF-8) is
    a 400 like any other invalid UTF-8, wherever it stands: never a 500, never no reply."""
    daemon = daemons.start(SETTINGS)
    surrogate = b"a\xed\xa0\x80b"
    bodies = [
        ("stats", b'{"' + surrogate + b'": 1}'),  # echoed in "unknown field(s) ..."
        ("get", b'{"id": "' + surrogate + b'"}'),
        ("history", b'{"checkpointId": "' + surrogate + b'"}'),
        ("search", b'{"query": "' + surrogate + b'"}'),
        ("list", b'{"sessionId": "' + surrogate + b'"}'),
    ]
    cases = [case("utf8", verb, body, JSON, expect={400}) for verb, body in bodies]
    ledger = await judged(daemon, cases)
    assert not ledger.problems, "\n".join(ledger.problems)


async def test_a_dry_run_restore_refuses_a_state_the_restore_would_refuse(
    daemons: Daemons,
) -> None:
    """A ``currentState`` nested deeper than a snapshot may be, or holding a number JSON
    cannot carry (``1e400`` parses as infinity), is a 400 for a restore; a dry run of the same
    restore must not answer otherwise (it answered 200, with ``Infinity`` in its JSON)."""
    daemon = daemons.start(SETTINGS)
    nc = await nats.connect(daemon.url, max_reconnect_attempts=0)
    try:
        ids = await seed(nc, daemon.prefix, Ledger())
    finally:
        await nc.close()
    # "sessions" is in the checkpoint too: the infinite value ends up among the conflicts.
    states = [Raw(deep_json(100, "map")), {"sessions": Raw("1e400")}, {"x": {"y": Raw("-1e400")}}]
    cases = [
        case(
            "restore",
            "restore",
            {"id": ids.b, "currentState": state, "mergeStrategy": "merge", "dryRun": dry},
            JSON,
            expect={400},
        )
        for state in states
        for dry in (False, True)
    ]
    ledger = await judged(daemon, cases)
    assert not ledger.problems, "\n".join(ledger.problems)
