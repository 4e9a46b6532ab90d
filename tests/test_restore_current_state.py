"""A restore's ``currentState`` is refused whole and up front when no snapshot could hold it.

Whether a bad value in it used to be refused depended on the strategy and on ``dryRun``: a merge
that kept it failed, an overwrite that dropped it did not, and a dry run echoed it in its
conflicts. Now the same request is refused the same way whatever the strategy, dry run or not.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from conftest import blob_count, event_seqs
from contract import CONTENT_TYPE, ERROR, ERROR_CODE, MSGPACK
from nats.aio.client import Client
from natsserver import NatsServer

from checkpointd import CheckpointManager
from checkpointd.errors import InvalidRequestError

SAVED = {"sessions": ["s-1"], "state": {"x": 1, "kept": True}}
BAD: list[tuple[Any, str]] = [
    (math.nan, "nan is not a finite number"),
    (math.inf, "inf is not a finite number"),
    ({b"k": 1}, "object key b'k' is bytes"),
    ({1, 2}, "set is not JSON-like"),
]
STRATEGIES = ("overwrite", "merge", "keep-original")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
@pytest.mark.parametrize("bad", BAD, ids=["nan", "inf", "bytes-key", "set"])
async def test_a_current_state_no_snapshot_could_hold_is_refused(
    manager: CheckpointManager, db_path: Path, strategy: str, dry_run: bool, bad: tuple[Any, str]
) -> None:
    """The value at ``/state/x`` (conflicting) is an InvalidRequestError naming its path, and
    nothing is written, for every strategy, dry run or real."""
    value, reason = bad
    cp = await manager.create(name="saved", session_id="s-1", snapshot=SAVED, branches=[])
    seqs, blobs = event_seqs(db_path), blob_count(db_path)
    options = {
        "currentState": {"state": {"x": value}},
        "mergeStrategy": strategy,
        "dryRun": dry_run,
        "preserveCurrentState": False,
    }
    with pytest.raises(InvalidRequestError, match=rf"^currentState/state/x: {reason}"):
        await manager.restore_checkpoint(cp.id, options)
    assert (event_seqs(db_path), blob_count(db_path)) == (seqs, blobs)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
async def test_a_bad_value_the_strategy_would_drop_is_refused_too(
    manager: CheckpointManager, dry_run: bool
) -> None:
    """NaN under a key only the current state has, with overwrite (which drops it), is refused."""
    cp = await manager.create(name="saved", session_id="s-1", snapshot=SAVED, branches=[])
    with pytest.raises(InvalidRequestError, match=r"^currentState/state/only: nan"):
        await manager.restore_checkpoint(
            cp.id, current_state={"state": {"only": math.nan}}, dry_run=dry_run
        )


async def test_a_valid_current_state_still_restores(manager: CheckpointManager) -> None:
    """The up-front check accepts what a snapshot may hold: the dry run reports the conflict."""
    cp = await manager.create(name="saved", session_id="s-1", snapshot=SAVED, branches=[])
    current = {"state": {"x": 2.5, "list": [None, True, "t"], "nested": {"k": {}}}}
    result = await manager.restore_checkpoint(
        cp.id, current_state=current, merge_strategy="merge", dry_run=True
    )
    assert result.state["state"] == {**current["state"], "x": 1, "kept": True}
    assert [c["path"] for c in result.conflicts] == ["/state/x"]


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A raw nats-py connection to the session's nats-server."""
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
async def test_nan_in_current_state_over_msgpack_is_a_400(
    manager: CheckpointManager, nc: Client, served: str, dry_run: bool
) -> None:
    """msgpack carries NaN (JSON cannot): a restore holding it is a 400 naming the path."""
    cp = await manager.create(name="saved", session_id="s-1", snapshot=SAVED, branches=[])
    body = {"id": cp.id, "currentState": {"state": {"x": math.nan}}, "dryRun": dry_run}
    msg = await nc.request(
        f"{served}.restore",
        msgpack.packb(body),
        timeout=10,
        headers={CONTENT_TYPE: MSGPACK},
    )
    headers = msg.headers or {}
    assert headers.get(ERROR_CODE) == "400", msg.data
    assert headers[ERROR] == "currentState/state/x: nan is not a finite number"
