"""A real LangGraph application on ``CheckpointdSaver``: what its user does and sees.

Interrupt and resume across savers (as a restarted process would), a subgraph's namespace,
the state history, a fork from an earlier checkpoint, two threads kept apart; and checkpointd's
own verbs on the same run: lineage, the log's verification, lists by LangGraph metadata.
"""

from __future__ import annotations

import itertools
from typing import Any

from langgraph.types import Command, StateSnapshot

from checkpointd.langgraph import FEATURE, session_for

from .conftest import OpenSaver
from .graphs import article_graph


def thread(thread_id: str, **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, **configurable}}


async def history(graph: Any, config: dict[str, Any]) -> list[StateSnapshot]:
    return [snapshot async for snapshot in graph.aget_state_history(config)]


async def test_interrupt_then_resume_from_another_saver(open_saver: OpenSaver) -> None:
    config = thread("article-1", user="ada")
    async with open_saver() as saver:
        graph = article_graph(saver)
        paused = await graph.ainvoke({"topic": "risky claims", "steps": []}, config)
        assert paused["steps"] == ["plan"]
        (question,) = paused["__interrupt__"]
        assert question.value == {"question": "publish 'risky claims'?"}

        state = await graph.aget_state(config, subgraphs=True)
        assert state.next == ("review",)
        (task,) = state.tasks
        assert task.interrupts[0].value == question.value
        subgraph_state = task.state
        assert isinstance(subgraph_state, StateSnapshot)
        assert subgraph_state.next == ("ask",)
        namespace = subgraph_state.config["configurable"]["checkpoint_ns"]
        assert namespace.startswith("review:")

    # A new saver on the same store (a restarted process) picks the thread up where it paused.
    async with open_saver() as saver:
        graph = article_graph(saver)
        done = await graph.ainvoke(Command(resume="yes"), config)
        assert done["steps"] == ["plan", "review", "publish"]
        assert done["approved"] is True
        assert done["verdict"] == "approved"
        assert (await graph.aget_state(config)).next == ()

        # The subgraph's checkpoints are in its own namespace of the thread.
        listed = [item async for item in saver.alist(thread("article-1"))]
        namespaces = {item.config["configurable"]["checkpoint_ns"] for item in listed}
        assert namespaces == {"", namespace}
        root = [item async for item in saver.alist(thread("article-1", checkpoint_ns=""))]
        assert len(root) < len(listed)


async def test_history_and_a_fork_from_an_earlier_checkpoint(open_saver: OpenSaver) -> None:
    config = thread("article-2")
    async with open_saver() as saver:
        graph = article_graph(saver)
        await graph.ainvoke({"topic": "risky numbers", "steps": []}, config)
        await graph.ainvoke(Command(resume="no"), config)
        final = await graph.aget_state(config)
        assert final.values["verdict"] == "rejected"

        past = await history(graph, config)
        assert past[0].config == final.config  # newest first
        ids = [snapshot.config["configurable"]["checkpoint_id"] for snapshot in past]
        assert ids == sorted(ids, reverse=True)
        assert [snapshot.metadata["step"] for snapshot in past][-1] == -1  # the input
        for newer, older in itertools.pairwise(past):
            assert newer.parent_config == older.config  # one chain back to the input

        # Time travel: from the checkpoint before the review, change the topic and go on.
        (before_review,) = [snapshot for snapshot in past if snapshot.next == ("review",)]
        assert before_review.values["steps"] == ["plan"]
        forked = await graph.aupdate_state(before_review.config, {"topic": "plain news"})
        resumed = await graph.ainvoke(None, forked)
        assert resumed["topic"] == "plain news"
        assert resumed["steps"] == ["plan", "publish"]  # the other branch of the edge
        assert "verdict" not in resumed

        after = await history(graph, config)
        assert len(after) == len(past) + 2  # the fork's update, then publish
        latest = await graph.aget_state(config)
        assert latest.values["steps"] == ["plan", "publish"]
        fork_point = after[1]
        assert fork_point.parent_config == before_review.config
        # The first run's checkpoints are still there, and still say what they said.
        again = await graph.aget_state(final.config)
        assert again.values["verdict"] == "rejected"


async def test_two_threads_are_isolated(open_saver: OpenSaver) -> None:
    async with open_saver() as saver:
        graph = article_graph(saver)
        first, second = thread("writer-a"), thread("writer-b")
        await graph.ainvoke({"topic": "risky rumours", "steps": []}, first)
        plain = await graph.ainvoke({"topic": "weather", "steps": []}, second)
        assert plain["steps"] == ["plan", "publish"]

        paused = await graph.aget_state(first)
        assert paused.next == ("review",)
        assert paused.values["steps"] == ["plan"]
        assert (await graph.aget_state(second)).next == ()

        await saver.adelete_thread("writer-b")
        assert (await graph.aget_state(second)).values == {}
        assert (await graph.aget_state(first)).next == ("review",)


async def test_checkpointd_verbs_see_the_run(open_saver: OpenSaver) -> None:
    async with open_saver() as saver:
        graph = article_graph(saver)
        config = thread("audited", user="ada")
        await graph.ainvoke({"topic": "risky facts", "steps": []}, config)
        await graph.ainvoke(Command(resume="yes"), config)
        await graph.ainvoke({"topic": "weather", "steps": []}, thread("other", user="bob"))
        past = await history(graph, config)
        store = saver.store
        session = session_for("audited")

        # One checkpoint per LangGraph checkpoint, named by its id, timed by its ts.
        page = await store.get_checkpoints_by_session(session, page_size=1000)
        assert sorted(cp.name for cp in page) == sorted(
            snapshot.config["configurable"]["checkpoint_id"] for snapshot in past
        )
        assert all(cp.metadata["feature"] == FEATURE for cp in page)

        # Lineage: the last checkpoint's ancestors walk back to the first.
        newest = max(page, key=lambda cp: cp.name)
        lineage = await store.get_lineage(newest.id)
        assert [cp.name for cp in lineage.ancestors] == [
            snapshot.config["configurable"]["checkpoint_id"] for snapshot in past[1:]
        ]
        assert lineage.ancestors[-1].metadata["source"] == "input"

        # LangGraph's metadata is the checkpoints' metadata: lists and search find it.
        adas = await store.get_checkpoints_by_feature(
            FEATURE, where="metadata->>'user' = ?", params=["ada"], page_size=1000
        )
        assert {cp.session_id for cp in adas} >= {session}
        assert "other" not in {cp.session_id for cp in adas}
        inputs = await store.get_checkpoints_by_session(
            session, where="metadata->>'source' = ?", params=["input"]
        )
        assert [cp.metadata["step"] for cp in inputs] == [-1]
        found = await store.search_checkpoints(
            {"query": "", "filters": {"feature": [FEATURE], "sessionId": session}}
        )
        assert found.total == len(page)

        # LangGraph's own search across every thread finds the same.
        listed = [item async for item in saver.alist(None, filter={"user": "ada"})]
        assert {item.config["configurable"]["thread_id"] for item in listed} == {"audited"}
        assert len(
            [item for item in listed if item.config["configurable"]["checkpoint_ns"] == ""]
        ) == len(page)
        newest_two = [item async for item in saver.alist(None, limit=2)]
        assert [item.config for item in newest_two] == [
            item.config async for item in saver.alist(None, limit=3)
        ][:2]

        # The snapshot is readable for people (and for diff) beside LangGraph's bytes.
        first, last = min(page, key=lambda cp: cp.name), newest
        diff = await store.diff_checkpoints(first.id, last.id)
        paths = {change["path"] for change in diff.changes}
        assert "/state/channels/verdict" in paths
        assert any(path.startswith("/state/channels/steps") for path in paths)

        # Stats count the thread; its history has the checkpoints and the tasks' writes.
        stats = await store.get_checkpoint_stats()
        assert stats.by_feature[FEATURE] >= len(page)
        assert stats.by_session[session] == len(page)
        events = [event async for event in store.iter_history(session_id=session)]
        assert {"checkpoint.created", "checkpoint.writes"} <= {event.type for event in events}

        # And the log holds together.
        verified = await store.verify_log()
        assert verified.ok
        assert verified.events > len(page)


async def test_a_restore_forks_the_thread_at_an_earlier_checkpoint(
    open_saver: OpenSaver,
) -> None:
    """``checkpointd restore <id>`` (here its API call) puts a thread back at a checkpoint:
    the thread's head becomes a fork of it, as LangGraph's own fork makes one, and the next
    run goes on from there."""
    config = thread("rewound")
    async with open_saver() as saver:
        graph = article_graph(saver)
        await graph.ainvoke({"topic": "sports", "steps": []}, config)
        (after_plan,) = [s for s in await history(graph, config) if s.next == ("publish",)]
        name = after_plan.config["configurable"]["checkpoint_id"]
        (stored,) = await saver.store.get_checkpoints_by_session(
            session_for("rewound"), where="name = ?", params=[name]
        )

        restored = await saver.store.restore_checkpoint(stored.id)
        assert restored.success

        state = await graph.aget_state(config)
        assert state.values == after_plan.values
        assert state.values["steps"] == ["plan"]
        assert state.next == ("publish",)
        assert state.metadata["source"] == "fork"
        assert state.parent_config == after_plan.parent_config  # a sibling, as LangGraph forks
        fork_name = state.config["configurable"]["checkpoint_id"]
        assert fork_name > name
        assert (await graph.aget_state(config)).config == state.config  # forked once

        again = await graph.ainvoke(None, config)
        assert again["steps"] == ["plan", "publish"]
        head = await graph.aget_state(config)
        assert head.parent_config == state.config

        (fork,) = await saver.store.get_checkpoints_by_session(
            session_for("rewound"), where="name = ?", params=[fork_name]
        )
        assert fork.restored_from == stored.id
        lineage = await saver.store.get_lineage(fork.id)
        assert stored.id in {cp.id for cp in lineage.ancestors}


async def test_a_restored_thread_can_pause_again_and_resume(open_saver: OpenSaver) -> None:
    """Restored to the checkpoint before a subgraph's interrupt, the thread asks again; the
    answer given then is the one that counts."""
    config = thread("second-thoughts")
    async with open_saver() as saver:
        graph = article_graph(saver)
        await graph.ainvoke({"topic": "risky plan", "steps": []}, config)
        await graph.ainvoke(Command(resume="yes"), config)
        assert (await graph.aget_state(config)).values["verdict"] == "approved"
        (before,) = [s for s in await history(graph, config) if s.next == ("review",)]
        (stored,) = await saver.store.get_checkpoints_by_session(
            session_for("second-thoughts"),
            where="name = ?",
            params=[before.config["configurable"]["checkpoint_id"]],
        )
        await saver.store.restore_checkpoint(stored.id)

        paused = await graph.ainvoke(None, config)
        assert paused["__interrupt__"][0].value == {"question": "publish 'risky plan'?"}
        state = await graph.aget_state(config)
        assert state.next == ("review",)
        done = await graph.ainvoke(Command(resume="no"), config)
        assert done["verdict"] == "rejected"
        assert done["steps"] == ["plan", "review", "publish"]
