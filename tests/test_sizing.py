"""``looks_big``: the guess that sends encoding and decoding to a worker thread."""

from __future__ import annotations

from typing import Any

import pytest

from checkpointd.sizing import BIG_COUNT, BIG_TEXT, looks_big


@pytest.mark.parametrize(
    "value",
    [
        {"log": "x" * (BIG_TEXT + 1)},
        {"a": {"b": {"c": "x" * (BIG_TEXT + 1)}}},  # bulk three levels deep
        {"a": [{"b": [[{"c": "x" * 1000}]]}] * 100},  # many small strings, deep in lists
        {"n": list(range(BIG_COUNT + 1))},
        {"a": {"b": {"c": {str(n): n for n in range(BIG_COUNT + 1)}}}},
        {"x" * (BIG_TEXT + 1): 1},  # a long key
        [{"state": {"log": "x" * (BIG_TEXT // 2 + 1)}}] * 2,  # a batch, big only together
    ],
)
def test_big_values_look_big_at_any_depth(value: Any) -> None:
    """Text or values past the bounds look big, wherever in the value they are."""
    assert looks_big(value)


@pytest.mark.parametrize(
    "value",
    [{}, {"state": {"progress": 40, "log": "x" * 1000}}, {"n": list(range(BIG_COUNT - 10))}],
)
def test_small_values_do_not_look_big(value: Any) -> None:
    """A value within both bounds does not look big."""
    assert not looks_big(value)
