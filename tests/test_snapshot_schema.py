"""The snapshot schema check: errors for known keys of the wrong type, warnings for missing ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.snapshots.schema import SchemaReport, check_snapshot_schema

# The original API's full example snapshot (its "Create Checkpoint" example), with the reference
# schema's metadata fields added so every known key is present.
_FULL: dict[str, Any] = {
    "sessions": ["s-1"],
    "state": {
        "progress": 75,
        "completed": [1, 2, 3, 4, 5],
        "pending": [6, 7],
        "config": {"environment": "production", "version": "1.0.0"},
        "resources": {"memory": "2GB", "cpu": "4 cores", "disk": "50GB"},
    },
    "branches": ["main", "feature-xyz"],
    "metadata": {
        "feature": "user-authentication",
        "priority": "high",
        "author": "developer-1",
        "description": "Milestone checkpoint with user authentication feature",
        "workflowId": "wf-auth-flow",
        "stepId": "step-auth-implementation",
        "tags": ["stable", "milestone", "production-ready"],
        "version": "1.0.0",
        "environment": "production",
        "labels": ["stable"],
    },
}
_CLEAN = SchemaReport(valid=True, errors=(), warnings=())


def _with(path: str, value: object) -> dict[str, Any]:
    """The full snapshot with the value at a JSON Pointer replaced."""
    snapshot = copy.deepcopy(_FULL)
    *parents, last = path.strip("/").split("/")
    target = snapshot
    for key in parents:
        target = target[key]
    target[last] = value
    return snapshot


def test_seed_full_example_is_clean() -> None:
    """The original API's full example snapshot has no errors and no warnings."""
    assert check_snapshot_schema(_FULL) == _CLEAN


def test_seed_minimal_example_is_clean() -> None:
    """The original API's minimal snapshot, a session and an arbitrary state, is clean."""
    assert check_snapshot_schema({"sessions": ["s-1"], "state": {"quick": True}}) == _CLEAN


@pytest.mark.parametrize("progress", [0, 100, 37.5, 0.0, 100.0])
def test_progress_in_range_is_valid(progress: float) -> None:
    """Progress from 0 to 100 inclusive, integer or float, is valid."""
    assert check_snapshot_schema(_with("/state/progress", progress)) == _CLEAN


def test_unknown_keys_are_allowed_everywhere() -> None:
    """Keys the schema does not name produce neither errors nor warnings, at any level."""
    snapshot = {
        "sessions": [],
        "state": {"quick": True, "resources": {"gpu": 1}, "config": {"x": [None]}},
        "metadata": {"owner": {"team": 7}},
        "extra": 1.5,
    }
    assert check_snapshot_schema(snapshot) == _CLEAN


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("/sessions", "s-1", '/sessions: must be an array of strings, got string "s-1"'),
        ("/sessions", None, "/sessions: must be an array of strings, got null"),
        ("/sessions", ["s-1", 2], "/sessions/1: must be a string, got 2"),
        ("/sessions", ["s-1", 2, {}], "/sessions/1: must be a string, got 2 (and 1 more)"),
        ("/state", [], "/state: must be an object, got an array"),
        ("/state", "ok", '/state: must be an object, got string "ok"'),
        ("/state/progress", 150, "/state/progress: must be a number from 0 to 100, got 150"),
        ("/state/progress", -1, "/state/progress: must be a number from 0 to 100, got -1"),
        ("/state/progress", 100.5, "/state/progress: must be a number from 0 to 100, got 100.5"),
        (
            "/state/progress",
            "75",
            '/state/progress: must be a number from 0 to 100, got string "75"',
        ),
        (
            "/state/progress",
            True,
            "/state/progress: must be a number from 0 to 100, got boolean true",
        ),
        ("/state/progress", None, "/state/progress: must be a number from 0 to 100, got null"),
        (
            "/state/progress",
            float("nan"),
            "/state/progress: must be a number from 0 to 100, got nan",
        ),
        (
            "/state/progress",
            float("inf"),
            "/state/progress: must be a number from 0 to 100, got inf",
        ),
        ("/state/completed", "1,2", '/state/completed: must be an array, got string "1,2"'),
        ("/state/pending", {}, "/state/pending: must be an array, got an object"),
        ("/state/config", [], "/state/config: must be an object, got an array"),
        ("/state/resources", "2GB", '/state/resources: must be an object, got string "2GB"'),
        ("/state/resources/memory", 2048, "/state/resources/memory: must be a string, got 2048"),
        ("/state/resources/cpu", 4.0, "/state/resources/cpu: must be a string, got 4.0"),
        ("/state/resources/disk", None, "/state/resources/disk: must be a string, got null"),
        ("/metadata", "v1", '/metadata: must be an object, got string "v1"'),
        ("/metadata/version", 1, "/metadata/version: must be a string, got 1"),
        (
            "/metadata/environment",
            False,
            "/metadata/environment: must be a string, got boolean false",
        ),
        (
            "/metadata/labels",
            "stable",
            '/metadata/labels: must be an array of strings, got string "stable"',
        ),
        ("/metadata/labels", [None], "/metadata/labels/0: must be a string, got null"),
    ],
)
def test_wrong_value_gives_one_error_naming_its_path(
    path: str, value: object, message: str
) -> None:
    """A known key with a wrong type or range makes the snapshot invalid with exactly one error."""
    assert check_snapshot_schema(_with(path, value)) == SchemaReport(
        valid=False, errors=(message,), warnings=()
    )


def test_errors_are_reported_together() -> None:
    """Several wrong keys give one error each, in schema order."""
    snapshot = {"sessions": [1], "state": {"progress": 101, "pending": 3}}
    assert check_snapshot_schema(snapshot).errors == (
        "/sessions/0: must be a string, got 1",
        "/state/progress: must be a number from 0 to 100, got 101",
        "/state/pending: must be an array, got 3",
    )


@pytest.mark.parametrize(
    ("snapshot", "warnings"),
    [
        ({"sessions": ["s-1"]}, ("/state: missing (a snapshot usually has a state object)",)),
        ({"state": {}}, ("/sessions: missing (a snapshot usually lists its sessions)",)),
        (
            {},
            (
                "/sessions: missing (a snapshot usually lists its sessions)",
                "/state: missing (a snapshot usually has a state object)",
            ),
        ),
    ],
)
def test_missing_recommended_keys_are_warnings(
    snapshot: dict[str, Any], warnings: tuple[str, ...]
) -> None:
    """A missing ``sessions`` or ``state`` is a warning; the snapshot stays valid."""
    assert check_snapshot_schema(snapshot) == SchemaReport(valid=True, errors=(), warnings=warnings)


def test_a_root_that_is_not_an_object_is_an_error() -> None:
    """A snapshot that is not an object is one error at the root, with no warnings."""
    report = check_snapshot_schema([{"state": {}}])  # type: ignore[arg-type]
    assert report == SchemaReport(
        valid=False, errors=("(root): must be an object, got an array",), warnings=()
    )


def test_large_values_are_cut_in_messages() -> None:
    """A long string is shown cut to its first 40 characters, and a huge integer by its size."""
    long_text = check_snapshot_schema(_with("/state/progress", "x" * 100_000)).errors
    huge_int = check_snapshot_schema(_with("/state/progress", 10**10_000)).errors
    assert long_text == (
        f'/state/progress: must be a number from 0 to 100, got string "{"x" * 40}..."',
    )
    assert huge_int == (
        "/state/progress: must be a number from 0 to 100, got an integer of 33220 bits",
    )


def test_many_bad_items_give_one_error() -> None:
    """An array of strings with many bad items names the first and counts the rest."""
    report = check_snapshot_schema(_with("/sessions", ["s-1", *range(10_000)]))
    assert report.errors == ("/sessions/1: must be a string, got 0 (and 9999 more)",)


def test_lone_surrogate_in_a_value_gives_an_encodable_message() -> None:
    """A lone surrogate shown in a message is escaped, so the message encodes as UTF-8."""
    (error,) = check_snapshot_schema(_with("/metadata/labels", "\ud800")).errors
    assert error == '/metadata/labels: must be an array of strings, got string "\\ud800"'
    assert error.encode("utf-8")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = ("sessions", "state", "metadata", "progress", "completed", "pending", "config")
_KNOWN = st.sampled_from(
    (*_KEYS, "resources", "memory", "cpu", "disk", "version", "environment", "labels", "x")
)
_SNAPSHOTS = st.recursive(
    st.dictionaries(_KNOWN, _JSON, max_size=4),
    lambda inner: st.dictionaries(_KNOWN, inner | _JSON, max_size=4),
    max_leaves=10,
)


@given(_SNAPSHOTS)
def test_any_snapshot_gets_a_report(snapshot: dict[str, Any]) -> None:
    """Any JSON-like snapshot gets a report without raising; it is valid exactly without errors."""
    report = check_snapshot_schema(snapshot)
    assert report.valid == (not report.errors)
    assert all(error.startswith(("/", "(root)")) for error in report.errors)
