"""Deep merge and diff of snapshot states: what restore and ``diff_checkpoints`` compute.

A state has the shape of a snapshot: objects (mappings with string keys), arrays (lists or tuples)
and scalars. Both operations recurse into objects only; an array or a scalar is one value,
compared and taken whole.

Equality is JSON equality that keeps types apart (``json_equal``): ``True`` is not ``1``, and
``1`` is not ``1.0`` nor ``0.0`` ``-0.0``. The canonical encoding stores those differently, so
calling them equal would let a diff report no change between snapshots whose checksums differ.
A list equals a tuple with equal items, and NaN equals NaN, so a state never differs from itself.

Paths are JSON Pointers (RFC 6901): ``/state/config/version``, with ``~`` written ``~0`` and ``/``
written ``~1``; the root is ``""``. Conflicts and changes are sorted by path taken as its sequence
of keys, each compared by code point: depth-first with sibling keys sorted, the order of the
canonical encoding. So ``/a/b`` comes before ``/a!`` even though ``!`` sorts before ``/``.

Guarantees: pure (no I/O); inputs are never mutated, not even by a custom resolver, which gets
copies; results share no mutable object with the inputs or with each other (objects come back as
dicts, arrays as lists); the walks use explicit stacks, so nesting depth is bounded by memory,
never by the Python stack.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final

from checkpointd.errors import InvalidRequestError

_Resolve = Callable[[str, Any, Any], Any]
_RESOLVER_FORMS = "(current, checkpoint) or (path, current, checkpoint)"
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class Strategy(StrEnum):
    """How restore combines a session's current state with a checkpoint's (``mergeStrategy``)."""

    OVERWRITE = "overwrite"  # the checkpoint's state as it is
    MERGE = "merge"  # deep merge, the checkpoint wins a conflict
    KEEP_ORIGINAL = "keep-original"  # deep merge, the current state wins a conflict

    @classmethod
    def parse(cls, value: object) -> Strategy:
        """The strategy ``value`` names: a ``Strategy`` or its exact string value.

        Raises:
            InvalidRequestError: ``value`` names no strategy; the message lists the allowed ones.
        """
        for strategy in cls:
            if isinstance(value, str) and value == strategy.value:
                return strategy
        allowed = ", ".join(strategy.value for strategy in cls)
        raise InvalidRequestError(f"merge strategy {repr(value)[:80]} is not one of: {allowed}")


class Resolution(StrEnum):
    """Where the merged state's value at a conflict's path came from."""

    CHECKPOINT = "checkpoint"
    CURRENT = "current"
    CUSTOM = "custom"


class ChangeOp(StrEnum):
    """What a diff change does at its path."""

    ADD = "add"  # only in ``after``
    REMOVE = "remove"  # only in ``before``
    REPLACE = "replace"  # in both, different


class _Missing(Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""The side a change does not have: the ``before`` of an add, the ``after`` of a remove."""

# op -> (has before, has after)
_SIDES: Final[dict[str, tuple[bool, bool]]] = {
    ChangeOp.ADD: (False, True),
    ChangeOp.REMOVE: (True, False),
    ChangeOp.REPLACE: (True, True),
}


@dataclass(frozen=True, slots=True)
class Conflict:
    """A path both states hold with different values, at least one of them not an object."""

    path: str
    current: Any
    checkpoint: Any
    resolution: str

    def to_wire(self) -> dict[str, Any]:
        """``{path, current, checkpoint, resolution}``; the values are this conflict's own."""
        return {
            "path": self.path,
            "current": self.current,
            "checkpoint": self.checkpoint,
            "resolution": str(self.resolution),
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Conflict:
        """The conflict a ``to_wire()`` dict describes (a reply from the daemon)."""
        return cls(
            wire["path"], wire["current"], wire["checkpoint"], Resolution(wire["resolution"])
        )


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged state and every conflict met, sorted by path."""

    state: dict[str, Any]
    conflicts: tuple[Conflict, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two states; ``MISSING`` marks the side an add or remove lacks.

    Raises:
        InvalidRequestError: ``op`` is not add, remove or replace, or the sides do not fit it.
    """

    path: str
    op: str
    before: Any = MISSING
    after: Any = MISSING

    def __post_init__(self) -> None:
        expected = _SIDES.get(self.op)
        if expected is None:
            raise InvalidRequestError(f"change op {self.op!r} is not add, remove or replace")
        if (self.before is not MISSING, self.after is not MISSING) != expected:
            raise InvalidRequestError(f"a {self.op} change at {self.path!r} has the wrong sides")

    def to_wire(self) -> dict[str, Any]:
        """``{path, op, before, after}``: an add has no ``before``, a remove no ``after``."""
        wire: dict[str, Any] = {"path": self.path, "op": str(self.op)}
        if self.before is not MISSING:
            wire["before"] = self.before
        if self.after is not MISSING:
            wire["after"] = self.after
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Change:
        """The change a ``to_wire()`` dict describes; an absent side becomes ``MISSING``."""
        before, after = wire.get("before", MISSING), wire.get("after", MISSING)
        return cls(wire["path"], ChangeOp(wire["op"]), before, after)


def merge_states(
    current: Mapping[str, Any],
    checkpoint: Mapping[str, Any],
    strategy: Strategy,
    resolver: Callable[..., Any] | None = None,
) -> MergeResult:
    """Combine a session's current state with a checkpoint's state.

    Args:
        current: the target session's current state.
        checkpoint: the checkpoint's state.
        strategy: ``OVERWRITE`` gives the checkpoint's state; ``MERGE`` and ``KEEP_ORIGINAL``
            deep-merge, taking a key present on one side only as it is, and settle a conflict
            for the checkpoint or the current state respectively. A string is parsed.
        resolver: settles every conflict in place of the strategy (resolution ``custom``); the
            strategy still decides keys on one side only. It is called as
            ``resolver(current_value, checkpoint_value)`` when it requires exactly two positional
            arguments and ``resolver(path, current_value, checkpoint_value)`` when three (``path``
            is the JSON Pointer). It gets copies; what it returns is copied into the state.

    Returns:
        A new state, and every conflict sorted by path. Conflicts are reported whatever the
        strategy, so ``OVERWRITE`` lists every path where the two states differ.

    Raises:
        InvalidRequestError: unknown strategy; a resolver that is not callable or takes neither
            form; a resolver that raised (``custom resolver failed at <path>: <ExceptionType>``,
            without the exception's text, which is kept as ``__cause__``).
    """
    strategy = Strategy.parse(strategy)
    merge = _Merge(strategy, _bind(resolver))
    if merge.checkpoint_wins:
        return merge.run(checkpoint, current)
    return merge.run(current, checkpoint)


async def merge_states_async(
    current: Mapping[str, Any],
    checkpoint: Mapping[str, Any],
    strategy: Strategy,
    resolver: Callable[..., Any] | None = None,
) -> MergeResult:
    """``merge_states``, with a resolver that may be a coroutine function (or return an
    awaitable): each conflict's answer is awaited, one at a time, in path order.

    The merge itself stays synchronous: a first walk collects the resolver's answer for every
    conflict (the set of conflicts does not depend on how they are settled, since a settled
    path is never walked below), the answers are awaited, and a second walk builds the state
    from them. A plain resolver is called once per conflict, as by ``merge_states``.

    Raises:
        InvalidRequestError: as ``merge_states``; a resolver whose awaitable raised is
            ``custom resolver failed at <path>: <ExceptionType>`` as well.
    """
    resolve = _bind(resolver)
    if resolve is None:
        return merge_states(current, checkpoint, strategy)
    asked: dict[str, tuple[Any, Any]] = {}

    def ask(path: str, current_value: Any, checkpoint_value: Any) -> Any:
        asked[path] = (current_value, checkpoint_value)  # copies, made by the merge
        return None

    merge_states(current, checkpoint, strategy, ask)
    answers: dict[str, Any] = {}
    for path in sorted(asked, key=_path_order):
        answer = resolve(path, *asked[path])
        answers[path] = await _answer(path, answer) if inspect.isawaitable(answer) else answer

    def answered(path: str, current_value: Any, checkpoint_value: Any) -> Any:
        return answers[path]

    return merge_states(current, checkpoint, strategy, answered)


async def _answer(path: str, awaitable: Any) -> Any:
    try:
        return await awaitable
    except Exception as exc:
        failure = f"custom resolver failed at {path}: {type(exc).__name__}"
        raise InvalidRequestError(failure) from exc


class _Merge:
    """One merge: walks the winning and the losing state together, building the result."""

    __slots__ = ("checkpoint_wins", "conflicts", "keep_one_sided", "resolve")

    def __init__(self, strategy: Strategy, resolve: _Resolve | None) -> None:
        self.checkpoint_wins = strategy is not Strategy.KEEP_ORIGINAL
        self.keep_one_sided = strategy is not Strategy.OVERWRITE
        self.resolve = resolve
        self.conflicts: list[Conflict] = []

    def run(self, winner: Mapping[str, Any], loser: Mapping[str, Any]) -> MergeResult:
        state: dict[str, Any] = {}
        stack: list[tuple[str, Mapping[str, Any], Mapping[str, Any], dict[str, Any]]]
        stack = [("", winner, loser, state)]
        while stack:
            stack.extend(self._merge_object(*stack.pop()))
        conflicts = sorted(self.conflicts, key=lambda conflict: _path_order(conflict.path))
        return MergeResult(state, tuple(conflicts))

    def _merge_object(
        self, pointer: str, win: Mapping[str, Any], lose: Mapping[str, Any], target: dict[str, Any]
    ) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any], dict[str, Any]]]:
        """Fill ``target``; returns the pairs of objects still to merge, with their targets."""
        nested = []
        for key, win_value in win.items():
            if key not in lose:
                target[key] = _copy(win_value)
                continue
            path, lose_value = f"{pointer}/{_escape(key)}", lose[key]
            if isinstance(win_value, Mapping) and isinstance(lose_value, Mapping):
                target[key] = {}
                nested.append((path, win_value, lose_value, target[key]))
            elif json_equal(win_value, lose_value):
                target[key] = _copy(win_value)
            else:
                target[key] = self._settle(path, win_value, lose_value)
        if self.keep_one_sided:
            target.update((key, _copy(value)) for key, value in lose.items() if key not in win)
        return nested

    def _settle(self, path: str, win_value: Any, lose_value: Any) -> Any:
        """Record the conflict at ``path``; returns the value the merged state holds there."""
        if self.checkpoint_wins:
            current, checkpoint, resolution = lose_value, win_value, Resolution.CHECKPOINT
        else:
            current, checkpoint, resolution = win_value, lose_value, Resolution.CURRENT
        value = win_value
        if self.resolve is not None:
            value = self.resolve(path, _copy(current), _copy(checkpoint))
            resolution = Resolution.CUSTOM
        self.conflicts.append(Conflict(path, _copy(current), _copy(checkpoint), resolution))
        return _copy(value)


def _bind(resolver: Callable[..., Any] | None) -> _Resolve | None:
    """The resolver as ``(path, current, checkpoint) -> value``, its failures made errors."""
    if resolver is None:
        return None
    if not callable(resolver):
        kind = type(resolver).__name__
        raise InvalidRequestError(f"custom resolver must be callable, got {kind}")
    arity = _required_positional(resolver)
    if arity not in (2, 3):
        raise InvalidRequestError(f"custom resolver must take {_RESOLVER_FORMS}")

    def resolve(path: str, current: Any, checkpoint: Any) -> Any:
        args = (path, current, checkpoint) if arity == 3 else (current, checkpoint)
        try:
            return resolver(*args)
        except Exception as exc:
            # The type only: the exception's text may hold state values or internals.
            failure = f"custom resolver failed at {path}: {type(exc).__name__}"
            raise InvalidRequestError(failure) from exc

    return resolve


def _required_positional(resolver: Callable[..., Any]) -> int:
    """How many positional arguments ``resolver`` requires; -1 if it cannot be called so."""
    try:
        parameters = inspect.signature(resolver).parameters.values()
    except (TypeError, ValueError):
        unreadable = f"custom resolver's signature cannot be read; it must take {_RESOLVER_FORMS}"
        raise InvalidRequestError(unreadable) from None
    required = [p for p in parameters if p.default is p.empty]
    if any(p.kind is inspect.Parameter.KEYWORD_ONLY for p in required):
        return -1
    return sum(1 for p in required if p.kind in _POSITIONAL)


def diff_states(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[Change, ...]:
    """The changes that turn ``before`` into ``after``, sorted by path.

    Objects are recursed into; an array or a scalar that differs, or an object on one side and
    anything else on the other, is one ``replace`` at its path. A key only in ``after`` is an
    ``add``, only in ``before`` a ``remove``. Applying the changes in order to ``before`` gives
    ``after``; ``diff_states(a, a)`` is empty. The changes' values are copies.
    """
    changes: list[Change] = []
    stack: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [("", before, after)]
    while stack:
        stack.extend(_diff_object(*stack.pop(), changes))
    return tuple(sorted(changes, key=lambda change: _path_order(change.path)))


def _diff_object(
    pointer: str, old: Mapping[str, Any], new: Mapping[str, Any], changes: list[Change]
) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """Append the changes between two objects; returns the pairs of objects still to compare."""
    nested = []
    for key, old_value in old.items():
        path = f"{pointer}/{_escape(key)}"
        if key not in new:
            changes.append(Change(path, ChangeOp.REMOVE, before=_copy(old_value)))
        elif isinstance(old_value, Mapping) and isinstance(new[key], Mapping):
            nested.append((path, old_value, new[key]))
        elif not json_equal(old_value, new[key]):
            changes.append(Change(path, ChangeOp.REPLACE, _copy(old_value), _copy(new[key])))
    for key, new_value in new.items():
        if key not in old:
            changes.append(
                Change(f"{pointer}/{_escape(key)}", ChangeOp.ADD, after=_copy(new_value))
            )
    return nested


def json_equal(a: Any, b: Any) -> bool:
    """Whether two JSON-like values are equal as JSON, types kept apart (see the module docstring).

    Objects are equal when they have the same keys and equal values, whatever their key order;
    arrays when their items are equal in order.
    """
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if x is y:
            continue
        kind = _kind(x)
        if kind is not _kind(y):
            return False
        if kind is Mapping:
            if x.keys() != y.keys():
                return False
            pending.extend((x[key], y[key]) for key in x)
        elif kind is list:
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif kind is float:
            if not _same_float(x, y):
                return False
        elif x != y:
            return False
    return True


def _kind(value: object) -> type:
    # bool before int: bool is a subclass of int. Subclasses (a StrEnum) count as their base.
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind
    if isinstance(value, Mapping):
        return Mapping
    if isinstance(value, list | tuple):
        return list
    return type(value)


def _same_float(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def _copy(value: Any) -> Any:
    """A deep copy of a JSON-like value, objects as dicts and arrays as lists; no recursion."""
    if not isinstance(value, Mapping | list | tuple):
        return value
    root = _empty_like(value)
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, Mapping) else enumerate(source)
        for key, child in items:
            if isinstance(child, Mapping | list | tuple):
                target[key] = _empty_like(child)
                stack.append((child, target[key]))
            else:
                target[key] = child
    return root


def _empty_like(value: Mapping[str, Any] | list[Any] | tuple[Any, ...]) -> Any:
    # Arrays are preallocated so objects and arrays are both filled by ``target[key] = ...``.
    return {} if isinstance(value, Mapping) else [None] * len(value)


def _escape(key: str) -> str:
    """A key as a JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _path_order(pointer: str) -> list[str]:
    """The sort key of a JSON Pointer: its keys, unescaped (``~1`` first, as RFC 6901 says)."""
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]
