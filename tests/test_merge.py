"""Deep merge and diff of snapshot states: strategies, conflicts, resolvers, JSON Pointers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.errors import InvalidRequestError
from checkpointd.merge import (
    MISSING,
    Change,
    Conflict,
    MergeResult,
    Strategy,
    diff_states,
    json_equal,
    merge_states,
)
from checkpointd.snapshots import canonical_encode

# Few keys and few values, so generated states overlap and conflict often; the keys include
# the characters JSON Pointers escape, and the values the ones Python's == confuses.
keys = st.sampled_from(["a", "b", "c", "a/b", "m~n", ""])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-2, max_value=2)
    | st.sampled_from([0.0, -0.0, 1.0, 1.5])
    | st.sampled_from(["", "x", "1"])
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
states = st.dictionaries(keys, values, max_size=4)
strategies = st.sampled_from(list(Strategy))


def current_state() -> dict[str, Any]:
    return {
        "sessions": ["s-1"],
        "state": {
            "progress": 40,
            "completed": ["login"],
            "pending": ["profile", "billing"],
            "config": {"version": "1.1", "debug": True},
            "resources": {"memory": 512},
            "draft": "unsaved note",
        },
    }


def checkpoint_state() -> dict[str, Any]:
    return {
        "sessions": ["s-1"],
        "state": {
            "progress": 75,
            "completed": ["login", "profile"],
            "pending": ["billing"],
            "config": {"version": "1.0", "debug": True, "region": "eu"},
            "resources": {"memory": 1024, "cpu": 2},
        },
    }


SEED_CONFLICTS = [
    "/state/completed",
    "/state/config/version",
    "/state/pending",
    "/state/progress",
    "/state/resources/memory",
]


# --- test-side oracles: recursive and simple, independent of the code under test ----------------


def same(a: Any, b: Any) -> bool:
    """Strict JSON equality, by the canonical encoding (which keeps 1, 1.0, True and -0.0 apart)."""
    return canonical_encode({"v": a}) == canonical_encode({"v": b})


def escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def tokens(pointer: str) -> list[str]:
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]


def nodes(value: Any, pointer: str = "") -> dict[str, Any]:
    """Every value below the root, objects included, by JSON Pointer."""
    found: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, child in value.items():
            found[f"{pointer}/{escape(key)}"] = child
            found.update(nodes(child, f"{pointer}/{escape(key)}"))
    return found


def leaves(value: Any) -> dict[str, Any]:
    return {path: item for path, item in nodes(value).items() if not isinstance(item, dict)}


def expected_conflicts(current: Any, checkpoint: Any) -> set[str]:
    """Paths on both sides with unequal values, at least one side not an object."""
    ours, theirs = nodes(current), nodes(checkpoint)
    return {
        path
        for path in ours.keys() & theirs.keys()
        if not same(ours[path], theirs[path])
        and not (isinstance(ours[path], dict) and isinstance(theirs[path], dict))
    }


def apply(state: dict[str, Any], changes: tuple[Change, ...]) -> dict[str, Any]:
    """Apply diff changes to a copy of ``state``, checking each change's ``before``."""
    result = copy.deepcopy(state)
    for change in changes:
        *parents, last = tokens(change.path)
        target = result
        for key in parents:
            target = target[key]
        if change.op == "add":
            assert last not in target
            target[last] = copy.deepcopy(change.after)
        elif change.op == "remove":
            assert same(target.pop(last), change.before)
        else:
            assert same(target[last], change.before)
            target[last] = copy.deepcopy(change.after)
    return result


def reordered(value: Any) -> Any:
    """The same value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(value)}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def container_ids(value: Any) -> list[int]:
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            found.append(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def deep_dict(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def deep_list(depth: int) -> Any:
    value: Any = ["bottom"]
    for _ in range(depth):
        value = [value]
    return value


def conflict_paths(result: MergeResult) -> list[str]:
    return [conflict.path for conflict in result.conflicts]


# --- strategies on the original API's snapshot shape ----------------------------------------------


def test_overwrite_takes_the_checkpoint_state_and_reports_every_difference() -> None:
    """Overwrite returns the checkpoint's state and lists every differing path as `checkpoint`."""
    result = merge_states(current_state(), checkpoint_state(), Strategy.OVERWRITE)
    assert result.state == checkpoint_state()
    assert conflict_paths(result) == SEED_CONFLICTS
    assert {conflict.resolution for conflict in result.conflicts} == {"checkpoint"}
    assert result.conflicts[3] == Conflict("/state/progress", 40, 75, "checkpoint")


def test_merge_lets_the_checkpoint_win_and_keeps_one_sided_keys() -> None:
    """Merge takes the checkpoint's value at each conflict and every key found on one side only."""
    result = merge_states(current_state(), checkpoint_state(), Strategy.MERGE)
    expected = checkpoint_state()
    expected["state"]["draft"] = "unsaved note"
    assert result.state == expected
    assert conflict_paths(result) == SEED_CONFLICTS
    assert {conflict.resolution for conflict in result.conflicts} == {"checkpoint"}


def test_keep_original_lets_the_current_state_win_and_keeps_one_sided_keys() -> None:
    """Keep-original takes the current value at each conflict and every one-sided key."""
    result = merge_states(current_state(), checkpoint_state(), Strategy.KEEP_ORIGINAL)
    expected = current_state()
    expected["state"]["config"]["region"] = "eu"
    expected["state"]["resources"]["cpu"] = 2
    assert result.state == expected
    assert conflict_paths(result) == SEED_CONFLICTS
    assert result.conflicts[1] == Conflict("/state/config/version", "1.1", "1.0", "current")


@pytest.mark.parametrize("strategy", list(Strategy))
def test_keys_on_one_side_only_are_never_conflicts(strategy: Strategy) -> None:
    """A key present on one side only is taken (or dropped, by overwrite) without a conflict."""
    current = {"state": {"draft": "x", "config": {"debug": True}}}
    checkpoint = {"state": {"progress": 10, "config": {"region": "eu"}}}
    result = merge_states(current, checkpoint, strategy)
    assert result.conflicts == ()
    if strategy is Strategy.OVERWRITE:
        assert result.state == checkpoint
    else:
        expected = {"draft": "x", "config": {"debug": True, "region": "eu"}, "progress": 10}
        assert result.state == {"state": expected}


def test_an_object_against_a_scalar_is_one_conflict_and_parents_are_never_listed() -> None:
    """An object meeting a non-object is one conflict at that path, and no parent is listed."""
    current = {"state": {"config": {"version": "1.1", "debug": True}, "resources": {"cpu": 1}}}
    checkpoint = {"state": {"config": "legacy", "resources": {"cpu": 2}}}
    result = merge_states(current, checkpoint, Strategy.KEEP_ORIGINAL)
    assert conflict_paths(result) == ["/state/config", "/state/resources/cpu"]
    assert result.conflicts[0].current == {"version": "1.1", "debug": True}
    assert result.conflicts[0].checkpoint == "legacy"
    assert result.state == current


def test_conflict_paths_are_escaped_json_pointers() -> None:
    """Conflict paths escape `~` as `~0` and `/` as `~1`, and an empty key is an empty token."""
    current = {"": 1, "state": {"a/b": 1, "m~n": 1, "": {"~/": 1}}}
    checkpoint = {"": 2, "state": {"a/b": 2, "m~n": 2, "": {"~/": 2}}}
    result = merge_states(current, checkpoint, Strategy.MERGE)
    assert conflict_paths(result) == ["/", "/state//~0~1", "/state/a~1b", "/state/m~0n"]


def test_conflicts_are_sorted_by_their_sequence_of_keys() -> None:
    """Conflicts are ordered key by key, so `/a/b` precedes `/a!` although `!` sorts before `/`."""
    current = {"a!": 1, "a": {"b": 1}, "a~": 1, "a}": 1}
    checkpoint = {"a!": 2, "a": {"b": 2}, "a~": 2, "a}": 2}
    result = merge_states(current, checkpoint, Strategy.MERGE)
    assert conflict_paths(result) == ["/a/b", "/a!", "/a}", "/a~0"]


@pytest.mark.parametrize(
    ("current", "checkpoint"),
    [(True, 1), (False, 0), (1, 1.0), (0.0, -0.0), ("1", 1), (None, False), ([1], [True])],
)
def test_values_of_different_json_types_conflict(current: Any, checkpoint: Any) -> None:
    """Values Python calls equal but JSON types or encodes differently are a conflict."""
    result = merge_states({"v": current}, {"v": checkpoint}, Strategy.MERGE)
    assert conflict_paths(result) == ["/v"]
    assert same(result.state["v"], checkpoint)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ([1, "x"], (1, "x"), True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        (float("nan"), float("nan"), True),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ({"a": 1}, {"a": 1, "b": 1}, False),
        ([1, 2], [2, 1], False),
        (1, True, False),
        (1, 1.0, False),
        (-0.0, 0.0, False),
    ],
)
def test_json_equal_keeps_json_types_apart(a: Any, b: Any, equal: bool) -> None:
    """json_equal ignores key order and list/tuple but not bool/int/float or the sign of zero."""
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


# --- custom resolvers ----------------------------------------------------------------------------


def test_two_argument_resolver_gets_current_then_checkpoint() -> None:
    """A resolver requiring two arguments is called (current, checkpoint) for each conflict."""
    calls: list[tuple[Any, Any]] = []

    def higher(current: Any, checkpoint: Any) -> Any:
        calls.append((current, checkpoint))
        return max(current, checkpoint)

    current = {"state": {"progress": 80, "resources": {"memory": 512}, "draft": "x"}}
    checkpoint = {"state": {"progress": 75, "resources": {"memory": 1024}}}
    result = merge_states(current, checkpoint, Strategy.MERGE, higher)
    assert result.state == {"state": {"progress": 80, "resources": {"memory": 1024}, "draft": "x"}}
    assert sorted(calls) == [(80, 75), (512, 1024)]
    assert [conflict.resolution for conflict in result.conflicts] == ["custom", "custom"]


def test_three_argument_resolver_gets_the_path_first() -> None:
    """A resolver requiring three arguments is called (path, current, checkpoint)."""

    def by_path(path: str, current: Any, checkpoint: Any) -> Any:
        return current if path == "/state/config/version" else checkpoint

    current, checkpoint = current_state(), checkpoint_state()
    result = merge_states(current, checkpoint, Strategy.OVERWRITE, by_path)
    expected = checkpoint_state()
    expected["state"]["config"]["version"] = "1.1"
    assert result.state == expected
    assert result.conflicts[1] == Conflict("/state/config/version", "1.1", "1.0", "custom")


def test_resolver_with_an_optional_third_parameter_takes_the_two_argument_form() -> None:
    """Only required positional parameters count: (current, checkpoint, note=None) gets two."""

    def pick(current: Any, checkpoint: Any, note: str | None = None) -> Any:
        return [current, checkpoint, note]

    result = merge_states({"v": 1}, {"v": 2}, Strategy.MERGE, pick)
    assert result.state == {"v": [1, 2, None]}


@pytest.mark.parametrize(
    "resolver",
    [
        lambda current: current,
        lambda *values: values[0],
        lambda a, b, c, d: a,
        lambda current, checkpoint, *, mode: current,
        "checkpoint",
    ],
    ids=["one", "varargs", "four", "required-keyword", "not-callable"],
)
def test_resolver_of_neither_form_is_refused(resolver: Any) -> None:
    """A resolver that is not callable as (current, checkpoint) or (path, ...) is refused."""
    with pytest.raises(InvalidRequestError, match="custom resolver must"):
        merge_states({"v": 1}, {"v": 2}, Strategy.MERGE, resolver)


def test_failing_resolver_raises_invalid_request_with_path_and_type_only() -> None:
    """A resolver that raises becomes InvalidRequestError naming the path and exception type."""

    def broken(current: Any, checkpoint: Any) -> Any:
        raise ValueError("secret internals")

    current = {"state": {"config": {"version": "1.1"}}}
    checkpoint = {"state": {"config": {"version": "1.0"}}}
    failure = r"^custom resolver failed at /state/config/version: ValueError$"
    with pytest.raises(InvalidRequestError, match=failure) as caught:
        merge_states(current, checkpoint, Strategy.MERGE, broken)
    assert "secret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)


def test_resolver_cannot_mutate_the_inputs_or_share_its_result() -> None:
    """A resolver gets copies, and the value it returns is copied into the state."""
    current, checkpoint = {"v": {"list": [1]}, "w": [1]}, {"v": 2, "w": [2]}

    def meddling(current_value: Any, checkpoint_value: Any) -> Any:
        if isinstance(current_value, dict):
            current_value["list"].append("mutated")
        return current_value

    result = merge_states(current, checkpoint, Strategy.MERGE, meddling)
    assert current == {"v": {"list": [1]}, "w": [1]}
    assert result.state == {"v": {"list": [1, "mutated"]}, "w": [1]}
    assert result.conflicts[0].current == {"list": [1]}
    assert result.state["w"] is not current["w"]


def test_strategy_parse_accepts_the_three_names() -> None:
    """Strategy.parse maps each wire name, and a Strategy, to its member."""
    assert Strategy.parse("overwrite") is Strategy.OVERWRITE
    assert Strategy.parse("merge") is Strategy.MERGE
    assert Strategy.parse("keep-original") is Strategy.KEEP_ORIGINAL
    assert Strategy.parse(Strategy.MERGE) is Strategy.MERGE


@pytest.mark.parametrize("value", ["replace", "Merge", "keep_original", None, 1])
def test_strategy_parse_refuses_other_values_listing_the_allowed_ones(value: object) -> None:
    """An unknown strategy raises InvalidRequestError listing the allowed names."""
    with pytest.raises(InvalidRequestError, match="not one of: overwrite, merge, keep-original"):
        Strategy.parse(value)


# --- diff ----------------------------------------------------------------------------------------


def test_diff_of_the_seed_snapshots_lists_adds_removes_and_replaces_in_path_order() -> None:
    """The diff of two snapshots lists add, remove and replace changes sorted by path."""
    changes = diff_states(current_state(), checkpoint_state())
    assert [change.to_wire() for change in changes] == [
        {
            "path": "/state/completed",
            "op": "replace",
            "before": ["login"],
            "after": ["login", "profile"],
        },
        {"path": "/state/config/region", "op": "add", "after": "eu"},
        {"path": "/state/config/version", "op": "replace", "before": "1.1", "after": "1.0"},
        {"path": "/state/draft", "op": "remove", "before": "unsaved note"},
        {
            "path": "/state/pending",
            "op": "replace",
            "before": ["profile", "billing"],
            "after": ["billing"],
        },
        {"path": "/state/progress", "op": "replace", "before": 40, "after": 75},
        {"path": "/state/resources/cpu", "op": "add", "after": 2},
        {"path": "/state/resources/memory", "op": "replace", "before": 512, "after": 1024},
    ]


def test_diff_replaces_an_object_by_a_scalar_in_one_change() -> None:
    """An object replaced by a non-object is one replace at its path, nothing below it."""
    changes = diff_states({"state": {"config": {"version": "1.0"}}}, {"state": {"config": None}})
    assert changes == (Change("/state/config", "replace", {"version": "1.0"}, None),)


def test_diff_paths_are_escaped_json_pointers() -> None:
    """Diff paths escape `~` and `/` in keys as RFC 6901 says."""
    changes = diff_states({"a/b": 1}, {"m~n": 1})
    assert [(change.path, change.op) for change in changes] == [
        ("/a~1b", "remove"),
        ("/m~0n", "add"),
    ]


def test_change_wire_shape_leaves_out_the_missing_side() -> None:
    """An add has no `before` on the wire, a remove no `after`, and both round-trip."""
    add = Change("/x", "add", after=None)
    remove = Change("/x", "remove", before=[1])
    assert add.to_wire() == {"path": "/x", "op": "add", "after": None}
    assert remove.to_wire() == {"path": "/x", "op": "remove", "before": [1]}
    assert Change.from_wire(add.to_wire()) == add
    assert Change.from_wire(remove.to_wire()).after is MISSING


@pytest.mark.parametrize(
    ("op", "sides"),
    [("add", {"before": 1, "after": 2}), ("remove", {}), ("replace", {"before": 1}), ("move", {})],
)
def test_change_with_sides_that_do_not_fit_its_op_is_refused(op: str, sides: Any) -> None:
    """A change whose op is unknown or whose before/after do not fit the op is refused."""
    with pytest.raises(InvalidRequestError, match="change"):
        Change("/x", op, **sides)


def test_conflict_wire_shape_round_trips() -> None:
    """A conflict is `{path, current, checkpoint, resolution}` on the wire and reads back equal."""
    conflict = Conflict("/state/progress", 40, 75, "checkpoint")
    wire = {"path": "/state/progress", "current": 40, "checkpoint": 75, "resolution": "checkpoint"}
    assert conflict.to_wire() == wire
    assert Conflict.from_wire(wire) == conflict


# --- depth ---------------------------------------------------------------------------------------


def test_ten_thousand_levels_of_nesting_merge_and_diff_without_recursion() -> None:
    """Merge and diff walk 10,000 nested objects and arrays without exhausting the stack."""
    depth = 10_000
    current = {"tree": deep_dict(depth, 1), "list": deep_list(depth)}
    checkpoint = {"tree": deep_dict(depth, 2), "list": deep_list(depth)}
    result = merge_states(current, checkpoint, Strategy.MERGE)
    changes = diff_states(current, checkpoint)
    assert conflict_paths(result) == ["/tree" + "/k" * depth]
    assert [(change.path, change.before, change.after) for change in changes] == [
        ("/tree" + "/k" * depth, 1, 2)
    ]
    leaf = result.state["tree"]
    for _ in range(depth):
        leaf = leaf["k"]
    assert leaf == 2
    assert result.state["list"] is not checkpoint["list"]
    assert json_equal(result.state["list"], current["list"])


# --- properties ----------------------------------------------------------------------------------


@given(current=states, checkpoint=states)
def test_overwrite_yields_exactly_the_checkpoint_state(
    current: dict[str, Any], checkpoint: dict[str, Any]
) -> None:
    """Overwrite's state is the checkpoint's state, value for value and type for type."""
    result = merge_states(current, checkpoint, Strategy.OVERWRITE)
    assert same(result.state, checkpoint)
    assert list(result.state) == list(checkpoint)


@given(current=states, checkpoint=states)
def test_keep_original_never_changes_a_current_leaf(
    current: dict[str, Any], checkpoint: dict[str, Any]
) -> None:
    """Every non-object value in the current state is in keep-original's result unchanged."""
    merged = nodes(merge_states(current, checkpoint, Strategy.KEEP_ORIGINAL).state)
    for path, value in leaves(current).items():
        assert same(merged[path], value)


@given(current=states, checkpoint=states)
def test_merge_never_changes_a_checkpoint_leaf(
    current: dict[str, Any], checkpoint: dict[str, Any]
) -> None:
    """Every non-object value in the checkpoint's state is in merge's result unchanged."""
    merged = nodes(merge_states(current, checkpoint, Strategy.MERGE).state)
    for path, value in leaves(checkpoint).items():
        assert same(merged[path], value)


@given(current=states, checkpoint=states, strategy=strategies)
def test_merge_is_deterministic_whatever_the_key_order(
    current: dict[str, Any], checkpoint: dict[str, Any], strategy: Strategy
) -> None:
    """Equal inputs give equal results, with conflicts in the same order, whatever the key order."""
    first = merge_states(current, checkpoint, strategy)
    again = merge_states(current, checkpoint, strategy)
    shuffled = merge_states(reordered(current), reordered(checkpoint), strategy)
    assert again == first
    assert same(shuffled.state, first.state)
    assert conflict_paths(shuffled) == conflict_paths(first)


@given(current=states, checkpoint=states, strategy=strategies)
def test_conflicts_are_exactly_the_paths_with_unequal_leaves(
    current: dict[str, Any], checkpoint: dict[str, Any], strategy: Strategy
) -> None:
    """Conflicts are the paths on both sides with unequal values, one side not an object, sorted."""
    result = merge_states(current, checkpoint, strategy)
    paths = conflict_paths(result)
    assert set(paths) == expected_conflicts(current, checkpoint)
    assert paths == sorted(paths, key=tokens)
    ours, theirs = nodes(current), nodes(checkpoint)
    for conflict in result.conflicts:
        assert same(conflict.current, ours[conflict.path])
        assert same(conflict.checkpoint, theirs[conflict.path])


@given(before=states, after=states)
def test_applying_the_diff_to_before_yields_after(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Applying diff_states(a, b) to a gives b, and the changes are sorted by path."""
    changes = diff_states(before, after)
    assert same(apply(before, changes), after)
    paths = [change.path for change in changes]
    assert paths == sorted(paths, key=tokens)


@given(state=states)
def test_diff_of_a_state_with_itself_is_empty(state: dict[str, Any]) -> None:
    """A state has no changes against itself or against a copy of itself."""
    assert diff_states(state, state) == ()
    assert diff_states(state, copy.deepcopy(state)) == ()


def _keep_current(current: Any, checkpoint: Any) -> Any:
    return current


@given(
    current=states,
    checkpoint=states,
    strategy=strategies,
    resolver=st.sampled_from([None, _keep_current]),
)
def test_inputs_are_not_mutated_and_results_share_nothing_with_them(
    current: dict[str, Any],
    checkpoint: dict[str, Any],
    strategy: Strategy,
    resolver: Callable[..., Any] | None,
) -> None:
    """Merge and diff leave their inputs as they were and return only new dicts and lists."""
    originals = copy.deepcopy((current, checkpoint))
    result = merge_states(current, checkpoint, strategy, resolver)
    changes = diff_states(current, checkpoint)
    assert (current, checkpoint) == originals
    assert same(current, originals[0])
    assert same(checkpoint, originals[1])
    parts = [result.state]
    parts += [
        side for conflict in result.conflicts for side in (conflict.current, conflict.checkpoint)
    ]
    parts += [side for change in changes for side in (change.before, change.after)]
    made = [ident for part in parts for ident in container_ids(part)]
    assert len(made) == len(set(made))
    assert set(made).isdisjoint(container_ids(current) + container_ids(checkpoint))
