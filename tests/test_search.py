"""Search: full text over a checkpoint's descriptive fields, with filters, sorting and pages.

As documented (README, docs/protocol.md):
FTS5 over name, description, tags, feature, author, workflowId and stepId
(never the snapshot), ranked by bm25; user text is terms, the last one a prefix; the original API's
advanced mapping adds filters, sorting and pagination. Tests on ``store`` use only the public
API; tests that need the fake clock or hammer the query parser use ``manager``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from conftest import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpointd import Checkpoint, CheckpointManager, Page
from checkpointd.errors import InvalidRequestError

Store = Any  # CheckpointManager now; CheckpointClient in the contract suite


async def make(store: Store, name: str, session_id: str = "s-1", **fields: Any) -> Checkpoint:
    fields.setdefault("snapshot", {"state": {"step": name}})
    fields.setdefault("branches", ["main"])
    return await store.create(name=name, session_id=session_id, **fields)


def ids(page: Page) -> list[str]:
    return [cp.id for cp in page]


def names(page: Page) -> list[str]:
    return [cp.name for cp in page]


# -- what is searched --------------------------------------------------------------------------

FIELDS = [
    ("name", {"name": "milestone-v1.0"}),
    ("description", {"metadata": {"description": "reached the milestone today"}}),
    ("tags", {"metadata": {"tags": ["stable", "milestone"]}}),
    ("feature", {"metadata": {"feature": "milestone"}}),
    ("author", {"metadata": {"author": "milestone-bot"}}),
    ("workflowId", {"metadata": {"workflowId": "wf-milestone-7"}}),
    ("stepId", {"metadata": {"stepId": "milestone.step"}}),
]


@pytest.mark.parametrize(("field", "fields"), FIELDS, ids=[f for f, _ in FIELDS])
async def test_a_word_in_any_indexed_field_is_found(
    store: Store, field: str, fields: dict[str, Any]
) -> None:
    """A word in the name, description, tags, feature, author, workflowId or stepId finds it."""
    await make(store, "unrelated", metadata={"description": "nothing to see"})
    target = await store.create(
        {"name": "checkpoint", "sessionId": "s-1", "snapshot": {}, "branches": [], **fields}
    )
    page = await store.search_checkpoints("milestone", 10)
    assert ids(page) == [target.id]
    assert (page.total, page.page, page.page_size) == (1, 1, 10)
    assert len(page.scores) == 1
    assert isinstance(page.scores[0], float)


async def test_the_last_term_matches_as_a_prefix(store: Store) -> None:
    """Only the last term is a prefix ("mile" finds "milestone"), unless followed by a space."""
    target = await make(store, "milestone-v1", metadata={"feature": "auth"})
    await make(store, "nightly", metadata={"feature": "billing"})
    assert ids(await store.search_checkpoints("mile", 10)) == [target.id]
    assert ids(await store.search_checkpoints("auth mile", 10)) == [target.id]
    assert ids(await store.search_checkpoints("mile auth", 10)) == []
    assert ids(await store.search_checkpoints("mile ", 10)) == []


async def test_every_term_is_required(store: Store) -> None:
    """A search for two words finds only the checkpoints that have both, in any field."""
    both = await make(store, "milestone", metadata={"feature": "billing"})
    await make(store, "milestone", metadata={"feature": "auth"})
    await make(store, "nightly", metadata={"feature": "billing"})
    page = await store.search_checkpoints("billing milestone", 10)
    assert ids(page) == [both.id]
    assert page.total == 1


async def test_search_is_case_insensitive(store: Store) -> None:
    """ "MILESTONE" finds a checkpoint named "Milestone"."""
    target = await make(store, "Milestone")
    assert ids(await store.search_checkpoints("MILESTONE", 10)) == [target.id]


async def test_a_match_in_a_short_name_outranks_one_in_a_long_description(store: Store) -> None:
    """Results come most relevant first: a checkpoint named "milestone" beats a passing mention."""
    for n in range(4):  # non-matching checkpoints give the term a meaningful rarity
        await make(store, f"routine-{n}", metadata={"description": "an ordinary save point"})
    passing = await make(
        store,
        "nightly",
        metadata={
            "description": "a long account of the night: builds ran, tests passed, caches were"
            " warmed, logs rotated, and somewhere in between a milestone was mentioned"
        },
    )
    named = await make(store, "milestone")
    page = await store.search_checkpoints("milestone", 10)
    assert ids(page) == [named.id, passing.id]
    assert all(isinstance(score, float) for score in page.scores)
    assert page.scores[0] > page.scores[1]


async def test_scores_stay_with_their_items_whatever_the_sort(store: Store) -> None:
    """Sorted by name, each item still carries the relevance score it has when ranked."""
    await make(store, "c milestone", metadata={"description": "milestone milestone milestone"})
    await make(store, "a milestone", metadata={"description": "a long description " * 20})
    await make(store, "b milestone")
    await make(store, "other")
    ranked = await store.search_checkpoints("milestone", 10)
    assert list(ranked.scores) == sorted(ranked.scores, reverse=True)
    score_of = dict(zip(ids(ranked), ranked.scores, strict=True))
    by_name = await store.search_checkpoints(
        {"query": "milestone", "sorting": {"field": "name", "direction": "asc"}}
    )
    assert names(by_name) == ["a milestone", "b milestone", "c milestone"]
    assert list(by_name.scores) == [score_of[cp_id] for cp_id in ids(by_name)]


@pytest.mark.parametrize("encrypted", [False, True])
async def test_snapshot_content_is_never_searchable(store: Store, encrypted: bool) -> None:
    """A word that appears only in a snapshot finds nothing, whether the snapshot is encrypted."""
    snapshot = {"state": {"note": "quixotically"}, "quixotically": ["quixotically"]}
    cp = await make(store, "plain name", snapshot=snapshot, encrypted=encrypted, compressed=False)
    assert cp.encrypted is encrypted
    page = await store.search_checkpoints("quixotically", 10)
    assert (ids(page), page.total) == ([], 0)
    assert ids(await store.search_checkpoints("quixot", 10)) == []


async def test_deleted_checkpoints_disappear_from_search(store: Store) -> None:
    """Once deleted, a checkpoint is no longer found; the others still are."""
    gone = await make(store, "milestone one")
    kept = await make(store, "milestone two")
    assert await store.delete_checkpoint(gone.id)
    page = await store.search_checkpoints("milestone", 10)
    assert (ids(page), page.total) == ([kept.id], 1)


async def test_expired_checkpoints_disappear_from_search(
    manager: CheckpointManager, clock: FakeClock
) -> None:
    """Once expired by retention, a checkpoint is no longer found."""
    soon = clock.now() + timedelta(days=1)
    await make(manager, "milestone short-lived", retention_expires_at=soon)
    kept = await make(manager, "milestone kept")
    clock.advance(timedelta(days=2))
    assert await manager.delete_expired_checkpoints() == 1
    assert ids(await manager.search_checkpoints("milestone", 10)) == [kept.id]


async def test_updated_metadata_is_searchable_under_the_new_words_only(store: Store) -> None:
    """After an update, the new name and description are found and the old ones are not."""
    cp = await make(store, "alpha", metadata={"description": "first draft", "tags": ["draft"]})
    await store.update_checkpoint(
        cp.id, {"name": "omega", "metadata": {"description": "final cut", "tags": ["final"]}}
    )
    for old in ("alpha", "draft", "first"):
        assert ids(await store.search_checkpoints(old, 10)) == [], old
    for new in ("omega", "final", "cut"):
        assert ids(await store.search_checkpoints(new, 10)) == [cp.id], new
    (found,) = await store.search_checkpoints("omega", 10)
    assert found.metadata["tags"] == ["final"]


async def test_results_carry_no_snapshot(store: Store) -> None:
    """Search results are checkpoints without their snapshot (None)."""
    await make(store, "milestone")
    (found,) = await store.search_checkpoints("milestone", 10)
    assert found.snapshot is None


async def test_total_counts_every_match_beyond_the_page(store: Store) -> None:
    """total counts all matches, not just the page; limit bounds the page."""
    for n in range(5):
        await make(store, f"milestone {n}")
    await make(store, "other")
    page = await store.search_checkpoints("milestone", 2)
    assert (len(page), page.total, page.page_size) == (2, 5, 2)


async def test_total_is_kept_on_a_page_past_the_last(store: Store) -> None:
    """Asking for a page past the end gives no items but still the number of matches.

    (total was once read from the page's own rows, so an empty page reported 0.)
    """
    for n in range(3):
        await make(store, f"milestone {n}")
    for query in ("milestone", ""):
        page = await store.search_checkpoints(
            {"query": query, "pagination": {"page": 3, "pageSize": 2}}
        )
        assert (len(page), page.total, page.page) == (0, 3, 3), query


# -- the advanced mapping: filters, sorting, pagination ----------------------------------------

CATALOGUE: list[dict[str, Any]] = [
    {
        "name": "alpha release",
        "sessionId": "s-1",
        "timestamp": "2024-01-01T00:00:00Z",
        "metadata": {
            "feature": "auth",
            "priority": "high",
            "tags": ["stable", "release"],
            "author": "alice",
        },
        "pad": 10,
    },
    {
        "name": "beta release",
        "sessionId": "s-1",
        "timestamp": "2024-02-01T00:00:00Z",
        "metadata": {"feature": "auth", "priority": "low", "tags": ["beta"], "author": "bob"},
        "pad": 300,
    },
    {
        "name": "gamma build",
        "sessionId": "s-2",
        "timestamp": "2024-03-01T00:00:00Z",
        "metadata": {
            "feature": "billing",
            "priority": "high",
            "tags": ["stable"],
            "author": "alice",
        },
        "pad": 50,
    },
    {
        "name": "delta release",
        "sessionId": "s-2",
        "timestamp": "2024-04-01T00:00:00Z",
        "metadata": {
            "feature": "billing",
            "priority": "critical",
            "tags": ["stable", "release", "hotfix"],
            "author": "carol",
        },
        "pad": 200,
    },
    {
        "name": "epsilon notes",
        "sessionId": "s-3",
        "timestamp": "2024-05-01T00:00:00Z",
        "metadata": {"author": "bob"},
        "pad": 100,
    },
]


@pytest.fixture
async def catalogue(store: Store) -> dict[str, str]:
    """Five checkpoints with known fields; returns their ids by name."""
    created: dict[str, str] = {}
    for entry in CATALOGUE:
        request = {k: v for k, v in entry.items() if k != "pad"}
        # Incompressible padding (no compression), so sizes follow the pad lengths.
        request["snapshot"] = {"state": {"pad": "x" * entry["pad"]}}
        cp = await store.create({**request, "branches": [], "compressed": False})
        created[cp.name] = cp.id
    return created


ADVANCED: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "text and feature",
        {"query": "release", "filters": {"feature": ["auth"]}, "sorting": {"field": "name"}},
        ["beta release", "alpha release"],
    ),
    (
        "several features",
        {
            "filters": {"feature": ["auth", "billing"]},
            "sorting": {"field": "name", "direction": "asc"},
        },
        ["alpha release", "beta release", "delta release", "gamma build"],
    ),
    (
        "priorities",
        {
            "filters": {"priority": ["high", "critical"]},
            "sorting": {"field": "timestamp", "direction": "ASC"},
        },
        ["alpha release", "gamma build", "delta release"],
    ),
    (
        "all tags must match",
        {"filters": {"tags": ["stable", "release"]}, "sorting": {"field": "timestamp"}},
        ["delta release", "alpha release"],
    ),
    (
        "session",
        {"filters": {"sessionId": "s-2"}, "sorting": {"field": "name", "direction": "asc"}},
        ["delta release", "gamma build"],
    ),
    (
        "author",
        {"filters": {"author": "alice"}, "sorting": {"field": "name", "direction": "Asc"}},
        ["alpha release", "gamma build"],
    ),
    (
        "date range, both ends inclusive",
        {
            "filters": {
                "dateRange": {"from": "2024-02-01T00:00:00Z", "to": "2024-04-01T00:00:00Z"}
            },
            "sorting": {"field": "timestamp", "direction": "asc"},
        },
        ["beta release", "gamma build", "delta release"],
    ),
    (
        "open-ended date range",
        {"filters": {"dateRange": {"from": "2024-04-01T00:00:00Z"}}},
        ["epsilon notes", "delta release"],
    ),
    (
        "size, largest first",
        {"sorting": {"field": "size", "direction": "desc"}},
        ["beta release", "delta release", "epsilon notes", "gamma build", "alpha release"],
    ),
    (
        "size, smallest first",
        {"sorting": {"field": "size", "direction": "asc"}, "pagination": {"pageSize": 2}},
        ["alpha release", "gamma build"],
    ),
    (
        "second page by name",
        {
            "sorting": {"field": "name", "direction": "desc"},
            "pagination": {"page": 2, "pageSize": 2},
        },
        ["delta release", "beta release"],
    ),
    (
        "text, filters and sorting together",
        {
            "query": "rel",
            "filters": {"tags": ["stable"], "priority": ["critical", "high", "low"]},
            "sorting": {"field": "timestamp", "direction": "desc"},
        },
        ["delta release", "alpha release"],
    ),
    (
        "no text, no filters: newest first",
        {},
        ["epsilon notes", "delta release", "gamma build", "beta release", "alpha release"],
    ),
    (
        "filters that match nothing",
        {"query": "release", "filters": {"sessionId": "s-3"}},
        [],
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [a[1:] for a in ADVANCED], ids=[a[0] for a in ADVANCED]
)
async def test_the_advanced_mapping_form(
    store: Store, catalogue: dict[str, str], request_: dict[str, Any], expected: list[str]
) -> None:
    """The original API's {query, filters, sorting, pagination} finds and orders what it says."""
    page = await store.search_checkpoints(request_)
    assert ids(page) == [catalogue[name] for name in expected]
    assert names(page) == expected


async def test_total_and_page_of_the_advanced_form(store: Store, catalogue: dict[str, str]) -> None:
    """A filtered search reports the number of matches over all pages and the page asked for."""
    page = await store.search_checkpoints(
        {"filters": {"tags": ["stable"]}, "pagination": {"page": 2, "pageSize": 2}}
    )
    assert names(page) == ["alpha release"]
    assert (page.total, page.page, page.page_size) == (3, 2, 2)


async def test_without_text_results_have_no_score(store: Store, catalogue: dict[str, str]) -> None:
    """Listing by filters alone ranks newest first and gives each item a None score."""
    page = await store.search_checkpoints({"query": "", "filters": {"author": "bob"}})
    assert names(page) == ["epsilon notes", "beta release"]
    assert page.scores == (None, None)


async def test_keywords_work_like_the_mapping(store: Store, catalogue: dict[str, str]) -> None:
    """search_checkpoints(query=..., filters=..., sorting=...) equals the one-mapping form."""
    request = {
        "query": "release",
        "filters": {"feature": ["auth"]},
        "sorting": {"field": "name", "direction": "asc"},
    }
    by_keywords = await store.search_checkpoints(**request)
    assert ids(by_keywords) == ids(await store.search_checkpoints(request))
    assert names(by_keywords) == ["alpha release", "beta release"]


# -- refused requests --------------------------------------------------------------------------


async def test_page_size_over_1000_is_refused(store: Store) -> None:
    """pageSize 1001 is an InvalidRequestError; 1000 is allowed."""
    with pytest.raises(InvalidRequestError, match="pageSize"):
        await store.search_checkpoints({"query": "x", "pagination": {"pageSize": 1001}})
    with pytest.raises(InvalidRequestError, match=r"limit|pageSize"):
        await store.search_checkpoints("x", 1001)
    page = await store.search_checkpoints({"query": "x", "pagination": {"pageSize": 1000}})
    assert page.page_size == 1000


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"query": "x", "filters": {"color": "red"}}, "color"),
        ({"query": "x", "filters": {"dateRange": {"since": "2024-01-01"}}}, "since"),
        ({"query": "x", "sorting": {"field": "colour"}}, "sorting.field"),
        ({"query": "x", "sorting": {"field": "name", "direction": "up"}}, "direction"),
        ({"query": "x", "filters": {"priority": ["urgent"]}}, "priority"),
        ({"query": "x", "pagination": {"page": 0}}, "page"),
        ({"query": "x", "everything": True}, "everything"),
        ({"query": 42}, "query"),
    ],
)
async def test_malformed_advanced_requests_are_refused(
    store: Store, request_: dict[str, Any], match: str
) -> None:
    """An unknown filter, sort field, direction, priority or field is an InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match=match):
        await store.search_checkpoints(request_)


HOSTILE = [
    '"',
    '"""',
    "NEAR(",
    "NEAR(a b, 2)",
    "*",
    "mile*",
    "AND OR",
    "NOT",
    "-",
    "-milestone",
    "^milestone",
    "\x00",
    "milestone\x00",
    "col:val",
    "name:milestone",
    "{name description}: milestone",
    "a" * 100_000,
    "'; DROP TABLE checkpoints; --",
    "(",
    ")",
    "+",
    "\\",
    "\u0301",
    "\ud800",
    " ".join(f"t{n}" for n in range(40)),
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_text_gives_a_page_or_an_invalid_request(
    manager: CheckpointManager, query: str
) -> None:
    """FTS syntax, control characters and huge text give a Page or InvalidRequestError, never
    another exception."""
    await make(manager, "milestone", metadata={"description": "name description"})
    for request in (query, {"query": query, "filters": {"sessionId": "s-1"}}):
        try:
            page = await manager.search_checkpoints(request, 10)
        except InvalidRequestError:
            continue
        assert isinstance(page, Page)
        assert page.total == len(page)


async def test_an_overlong_query_is_refused(manager: CheckpointManager) -> None:
    """A 100,000-character query is an InvalidRequestError naming the query."""
    with pytest.raises(InvalidRequestError, match="query"):
        await manager.search_checkpoints("a" * 100_000, 10)


async def test_the_store_survives_hostile_text(manager: CheckpointManager) -> None:
    """After hostile searches the checkpoints are all still there and still found."""
    target = await make(manager, "milestone")
    for query in ("'; DROP TABLE checkpoints; --", 'milestone" OR "x', "NEAR(milestone"):
        await manager.search_checkpoints(query, 10)
    assert ids(await manager.search_checkpoints("milestone", 10)) == [target.id]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=st.text(max_size=40))
async def test_any_text_gives_a_page_or_an_invalid_request(
    manager: CheckpointManager, query: str
) -> None:
    """Arbitrary user text never makes search fail with anything but InvalidRequestError."""
    try:
        page = await manager.search_checkpoints(query, 10)
    except InvalidRequestError:
        return
    assert isinstance(page, Page)
