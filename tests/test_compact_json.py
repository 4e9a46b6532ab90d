"""The compact JSON encoder built once gives exactly json.dumps's text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.compact_json import compact_dumps

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@pytest.mark.parametrize("sort_keys", [True, False])
@given(value=values)
def test_text_equals_json_dumps(sort_keys: bool, value: Any) -> None:
    """For any JSON-like value the text equals json.dumps with the same options."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    assert compact_dumps(sort_keys=sort_keys)(value) == expected


def test_a_value_json_cannot_hold_is_a_type_error() -> None:
    """A datetime (or any non-JSON value) raises TypeError, as json.dumps does."""
    dumps = compact_dumps(sort_keys=True)
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"at": datetime.now(UTC)})
