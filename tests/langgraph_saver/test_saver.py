"""``CheckpointdSaver`` beyond the conformance suite: what LangGraph relies on in practice.

Exact round trips of the serializer's output, writes that arrive before their checkpoint
(LangGraph saves in the background), re-putting a checkpoint, copies that keep their lineage,
and the sync methods LangGraph's sync API calls (from another thread only).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.types import Command

from checkpointd.langgraph import CheckpointdSaver, checkpoint_id_for, session_for, thread_of

from .conftest import OpenSaver
from .graphs import article_graph


def test_sessions_keep_threads_and_namespaces_apart() -> None:
    assert session_for("t-1") == "t-1"
    assert session_for("t-1", "review:42") == "t-1|review:42"
    cases = [("a|b", ""), ("a", "b"), ("50%|x", "p:1|q:2"), ("%7C", ""), ("|", "")]
    sessions = [session_for(thread_id, namespace) for thread_id, namespace in cases]
    assert len(set(sessions)) == len(cases)
    assert [thread_of(session) for session in sessions] == cases
    lg_id = str(uuid.uuid4())
    assert checkpoint_id_for("t-1", lg_id) != checkpoint_id_for("t-2", lg_id)
    assert checkpoint_id_for("t-1", lg_id).startswith(f"lg.{lg_id}.")


async def test_values_and_bytes_round_trip_exactly(open_saver: OpenSaver) -> None:
    values: dict[str, Any] = {
        "when": datetime(2026, 12, 4, 16, 30, tzinfo=UTC),
        "raw": b"\x00\xff binary",
        "pair": (1, 2),
        "labels": {"a", "b"},
        "message": HumanMessage(content="hello", id="m-1"),
        "big": 2**63 - 1,
        "text": "caf\u00e9 \U0001f600",
    }
    config = generate_config("exact")
    checkpoint = generate_checkpoint(channel_values=values)
    checkpoint["channel_versions"] = dict.fromkeys(values, 1)
    async with open_saver() as saver:
        stored = await saver.aput(config, checkpoint, generate_metadata(run_id="r-1"), {})
        await saver.aput_writes(stored, [("raw", b"\x01\x02"), ("when", values["when"])], "t-1")
        got = await saver.aget_tuple(stored)
        assert got is not None
        # What LangGraph's serializer gives back (a tuple comes back a list, with any saver).
        assert got.checkpoint == saver.serde.loads_typed(saver.serde.dumps_typed(checkpoint))
        assert got.checkpoint["channel_values"]["labels"] == {"a", "b"}
        assert got.checkpoint["channel_values"]["message"] == values["message"]
        assert got.metadata == {"source": "loop", "step": 0, "parents": {}, "run_id": "r-1"}
        assert got.pending_writes == [("t-1", "raw", b"\x01\x02"), ("t-1", "when", values["when"])]

        # The snapshot holds the serializer's bytes as they were, and a readable copy.
        (cp,) = await saver.store.get_checkpoints_by_session(
            session_for("exact"), include_snapshot=True
        )
        assert cp.snapshot is not None
        kind, data = cp.snapshot["langgraph"]["checkpoint"]
        assert (kind, base64.b64decode(data)) == saver.serde.dumps_typed(checkpoint)
        readable = cp.snapshot["state"]["channels"]
        assert readable["text"] == values["text"]
        assert readable["pair"] == [1, 2]
        assert readable["message"]["content"] == "hello"
        assert readable["raw"] == {"$type": "builtins.bytes"}
        assert cp.snapshot["sessions"] == [session_for("exact")]
        report = await saver.store.validate_checkpoint(cp.id)
        assert report.is_valid, report
        assert not report.warnings
        assert cp.timestamp == datetime.fromisoformat(checkpoint["ts"])


async def test_writes_that_arrive_before_their_checkpoint_wait_for_it(
    open_saver: OpenSaver,
) -> None:
    """LangGraph stores checkpoints in the background: a step's writes may come first."""
    config = generate_config("early")
    checkpoint = generate_checkpoint()
    early = {
        **config,
        "configurable": {**config["configurable"], "checkpoint_id": checkpoint["id"]},
    }
    async with open_saver() as saver:
        writes = asyncio.create_task(saver.aput_writes(early, [("ch", "first")], "task-1"))
        # The writes go out first, find no checkpoint and wait for it.
        waiting = (session_for("early"), checkpoint["id"])
        async with asyncio.timeout(30):
            while waiting not in saver._stored:
                assert not writes.done(), writes
                await asyncio.sleep(0.01)
        stored = await saver.aput(config, checkpoint, generate_metadata(), {})
        await writes
        got = await saver.aget_tuple(stored)
        assert got is not None
        assert got.pending_writes == [("task-1", "ch", "first")]


async def test_putting_a_checkpoint_again_replaces_it(open_saver: OpenSaver) -> None:
    config = generate_config("again")
    first = generate_checkpoint(channel_values={"v": 1})
    async with open_saver() as saver:
        stored = await saver.aput(config, first, generate_metadata(step=1), {})
        second = {**first, "channel_values": {"v": 2}}
        assert await saver.aput(config, second, generate_metadata(step=2), {}) == stored
        got = await saver.aget_tuple(stored)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"v": 2}
        assert got.metadata["step"] == 2
        listed = [item async for item in saver.alist(generate_config("again"))]
        assert [item.checkpoint["channel_values"] for item in listed] == [{"v": 2}]
        # Deleted, then put once more: back again.
        await saver.adelete_thread("again")
        await saver.aput(config, first, generate_metadata(step=3), {})
        got = await saver.aget_tuple(stored)
        assert got is not None
        assert got.metadata["step"] == 3


async def test_a_copied_thread_runs_on_and_shows_where_it_came_from(
    open_saver: OpenSaver,
) -> None:
    async with open_saver() as saver:
        graph = article_graph(saver)
        await graph.ainvoke({"topic": "risky plans", "steps": []}, generate_config("original"))
        await saver.acopy_thread("original", "copy")

        copy = {"configurable": {"thread_id": "copy"}}
        paused = await graph.aget_state(copy)
        assert paused.next == ("review",)
        done = await graph.ainvoke(Command(resume="yes"), copy)
        assert done["verdict"] == "approved"
        original = await graph.aget_state({"configurable": {"thread_id": "original"}})
        assert original.next == ("review",)  # untouched

        store = saver.store
        copies = await store.get_checkpoints_by_session(session_for("copy"), page_size=1000)
        sources = await store.get_checkpoints_by_session(session_for("original"), page_size=1000)
        by_name = {cp.name: cp for cp in sources}
        copied = [cp for cp in copies if cp.restored_from is not None]
        assert len(copied) == len(sources)
        for cp in copied:
            assert cp.restored_from == by_name[cp.name].id
            assert cp.id == checkpoint_id_for(session_for("copy"), cp.name)


async def test_sync_methods_run_from_another_thread_only(open_saver: OpenSaver) -> None:
    async with open_saver() as saver:
        graph = article_graph(saver)
        config = {"configurable": {"thread_id": "sync"}}
        result = await asyncio.to_thread(graph.invoke, {"topic": "tides", "steps": []}, config)
        assert result["steps"] == ["plan", "publish"]
        state = await asyncio.to_thread(graph.get_state, config)
        assert state.values["steps"] == ["plan", "publish"]
        listed = await asyncio.to_thread(lambda: list(saver.list(config)))
        assert [item.config for item in listed] == [
            item.config async for item in saver.alist(config)
        ]
        assert [item.metadata["step"] for item in listed] == [2, 1, 0, -1]
        assert await asyncio.to_thread(saver.get_tuple, config) == await saver.aget_tuple(config)
        await asyncio.to_thread(saver.delete_thread, "sync")
        assert await saver.aget_tuple(config) is None

        with pytest.raises(asyncio.InvalidStateError, match="aget_tuple"):
            saver.get_tuple(config)
        with pytest.raises(asyncio.InvalidStateError):
            list(saver.list(config))


async def test_an_encrypted_store_keeps_the_graphs_state_unreadable_on_disk(
    tmp_path: Path,
) -> None:
    """Uncompressed, so only the encryption hides the values (the FTS sees no channel value)."""
    path = tmp_path / "secret.db"
    secret = "the-launch-code-" + uuid.uuid4().hex
    async with CheckpointdSaver.from_path(
        str(path), enable_encryption=True, encryption_key=TEST_KEY, enable_compression=False
    ) as saver:
        graph = article_graph(saver)
        config = {"configurable": {"thread_id": "vault"}}
        await graph.ainvoke({"topic": f"risky {secret}", "steps": []}, config)
        await saver.aput_writes(
            (await graph.aget_state(config)).config, [("note", secret)], "task-secret"
        )
        state = await graph.aget_state(config)
        assert state.values["topic"] == f"risky {secret}"
    async with CheckpointdSaver.from_path(
        str(path), enable_encryption=True, encryption_key=TEST_KEY, enable_compression=False
    ) as saver:
        again = await saver.aget_tuple(config)
        assert again is not None
        assert again.checkpoint["channel_values"]["topic"] == f"risky {secret}"
        assert ("task-secret", "note", secret) in again.pending_writes
    on_disk = b"".join(file.read_bytes() for file in tmp_path.iterdir() if file.is_file())  # noqa: ASYNC240 - the store is closed
    for form in (secret.encode(), base64.b64encode(secret.encode())):
        assert form not in on_disk


async def test_two_savers_on_one_thread_see_each_others_latest_and_writes(
    open_saver: OpenSaver,
) -> None:
    """A saver remembers what it put last; a thread another saver moved on is still read
    from the store, writes included."""
    config = generate_config("shared")
    async with open_saver() as first:
        second = CheckpointdSaver(first.store)  # another saver on the same store
        mine = await first.aput(config, generate_checkpoint(), generate_metadata(step=0), {})
        await first.aput_writes(mine, [("ch", "mine")], "task-a")
        later = {**config, "configurable": {**config["configurable"], **mine["configurable"]}}
        theirs = await second.aput(later, generate_checkpoint(), generate_metadata(step=1), {})
        await second.aput_writes(theirs, [("ch", "theirs")], "task-b")

        for saver in (first, second):
            head = await saver.aget_tuple(generate_config("shared"))
            assert head is not None
            assert head.config == theirs
            assert head.pending_writes == [("task-b", "ch", "theirs")]
            assert head.parent_config is not None
            assert (
                head.parent_config["configurable"]["checkpoint_id"]
                == (mine["configurable"]["checkpoint_id"])
            )
