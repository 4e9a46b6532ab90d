"""LangGraph's own conformance suite (``langgraph-checkpoint-conformance``), every capability.

The suite detects what a saver implements and runs each capability's tests on a fresh saver;
``CheckpointdSaver`` implements all eight (the five base ones and ``delete_for_runs``,
``copy_thread``, ``prune``), in-process and over NATS to a ``checkpointd serve`` process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from checkpointd.langgraph import CheckpointdSaver

from .conftest import OpenSaver


async def test_every_capability_is_detected_and_passes(open_saver: OpenSaver) -> None:
    @checkpointer_test(name="CheckpointdSaver")
    async def fresh_saver() -> AsyncIterator[CheckpointdSaver]:
        async with open_saver() as saver:
            yield saver

    report = await validate(fresh_saver, progress=ProgressCallbacks.quiet())

    report.print_report()  # shown when the test fails
    results = report.results
    assert set(results) == {capability.value for capability in ALL_CAPABILITIES}
    failures = {name: result.failures for name, result in results.items() if result.failures}
    assert not failures, failures
    assert {name for name, result in results.items() if result.detected} == set(results)
    assert all(result.passed is True for result in results.values()), report.to_dict()
    assert report.conformance_level() == "FULL"
    assert sum(result.tests_passed for result in results.values()) >= 80
