"""The contract suite against a three-daemon cluster: the same test bodies, through one client.

The contract tests (``store``: the embedded manager or a client over NATS) are collected here
again with ``store`` a ``CheckpointClient`` on the cluster's three servers and the daemons'
shared subject prefix; each request is answered by whichever daemon NATS picks (writes by the
leader), so a test's read may land on another daemon than its write (``minSeq`` makes the read
see it).

Which tests: every test of the modules below that asks for nothing but ``store`` (one that also
asks for the fake ``clock`` or the ``manager`` looks into one process, which a cluster has
not), except those in ``SHARED_STORE`` (below): the cluster is started once for this module
(three daemons cost seconds; one per test would take the suite minutes), so its tests share
one store, and those few read something global a test before them changed.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from types import ModuleType

import pytest
import test_concurrency
import test_health
import test_manager
import test_porting
import test_restore
import test_search
import test_stats_validate

from checkpointd import CheckpointClient

from .checkpointcluster import CheckpointCluster

MODULES: tuple[ModuleType, ...] = (
    test_manager,
    test_restore,
    test_porting,
    test_search,
    test_stats_validate,
    test_concurrency,
    test_health,
)

# Tests that assume a store of their own: they read totals, or "every checkpoint", which the
# other tests here add to. module name -> test names.
SHARED_STORE: dict[str, set[str]] = {
    "test_concurrency": {
        "test_batch_invalid_before_write",
    },
    "test_manager": {
        "test_create_keeps_the_instant_of_an_offset_timestamp",
        "test_history_last_page_exactly_full",
        "test_history_of_a_session",
        "test_history_pages_with_after_seq_and_next",
        "test_hostile_where_is_rejected",
        "test_injection_through_a_parameter_is_a_value",
        "test_list_by_feature",
        "test_list_filters_by_timestamp_with_a_datetime",
        "test_list_order",
        "test_list_page_size_1000_is_allowed",
        "test_list_pagination",
        "test_list_with_snapshots",
        "test_list_with_the_seeds_options_mapping",
        "test_malformed_checksum",
        "test_pages_are_stable_when_timestamps_tie",
        "test_parent_that_never_existed",
        "test_restore_is_recorded_in_the_history",
        "test_the_seeds_complete_example",
        "test_verify_log_of_a_healthy_store",
        "test_wrong_checksum_is_an_integrity_error",
        "test_wrong_size_is_an_integrity_error",
        "test_wrong_types",
    },
    "test_porting": {
        "test_a_batch_giving_an_id_twice_writes_nothing",
        "test_an_empty_query_lists_by_filters",
        "test_an_id_that_exists_or_existed_is_a_conflict",
        "test_iter_checkpoints_by_feature_walks_every_page",
        "test_iter_checkpoints_by_session_walks_every_page",
        "test_iter_history_follows_next_to_the_end",
        "test_metadata_inside_the_snapshot_is_lifted",
        "test_search_filters_by_branches",
        "test_where_tests_branch_membership",
    },
    "test_restore": {
        "test_a_checkpoint_taken_right_after_a_restore_descends_from_it",
        "test_a_checkpoint_in_a_branched_session_descends_from_the_restored_one",
        "test_a_restored_event_is_in_the_sessions_history",
        "test_dry_run_writes_nothing",
    },
    "test_search": {
        "test_a_match_in_a_short_name_outranks_one_in_a_long_description",
        "test_a_word_in_any_indexed_field_is_found",
        "test_deleted_checkpoints_disappear_from_search",
        "test_results_carry_no_snapshot",
        "test_scores_stay_with_their_items_whatever_the_sort",
        "test_search_is_case_insensitive",
        "test_the_last_term_matches_as_a_prefix",
        "test_total_counts_every_match_beyond_the_page",
        "test_total_is_kept_on_a_page_past_the_last",
    },
    "test_stats_validate": {
        "test_oldest_and_newest_move_when_they_are_deleted",
        "test_stats_after_known_creates_and_deletes",
        "test_stats_follow_updates",
        "test_stats_of_an_empty_store",
    },
}


@pytest.fixture
async def store(cluster: CheckpointCluster) -> AsyncIterator[CheckpointClient]:
    """A CheckpointClient on every server of the cluster, on the daemons' shared prefix."""
    async with CheckpointClient(cluster.url, prefix=cluster.prefix, request_timeout=30) as client:
        yield client


def contract_tests() -> dict[str, object]:
    """The chosen tests, by a name that says where each comes from."""
    chosen = {}
    for module in MODULES:
        short = module.__name__.removeprefix("test_")
        for name, test in vars(module).items():
            if not name.startswith("test_") or not callable(test):
                continue
            if name in SHARED_STORE.get(module.__name__, ()):
                continue
            if set(inspect.signature(test).parameters) != {"store", *parametrized(test)}:
                continue
            chosen[f"test_{short}__{name.removeprefix('test_')}"] = test
    return chosen


def parametrized(test: object) -> set[str]:
    """The arguments ``test``'s ``parametrize`` marks give."""
    names: set[str] = set()
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize":
            argnames = mark.args[0]
            if isinstance(argnames, str):
                argnames = [a.strip() for a in argnames.split(",")]
            names.update(argnames)
    return names


globals().update(contract_tests())
