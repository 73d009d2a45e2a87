"""The order test files are handed to pytest-xdist's workers: the longest first.

``make test`` runs the files in three workers, each file whole in one (``--dist loadfile``),
handed out in collection order (``--no-loadscope-reorder``; xdist's own order puts the files
with the most tests first, which left the long end-to-end files, with few tests each, for the
end, where one of them ran on while the other workers had nothing left). Handing the longest
out first leaves the short ones to fill in at the end.

``SLOWEST`` holds the files whose tests took 20 s or more in all, longest first, as a run with
``--junitxml`` measured them (its per-test times summed per file). A file missing from it, or
one whose time changed, only costs some idle time at the end of a run, never a result.
"""

from __future__ import annotations

import pytest

SLOWEST = (
    "test_pull_mode_e2e.py",
    "test_ha.py",
    "test_distribution_memory.py",
    "test_faults_kill.py",
    "test_devstack.py",
    "test_distribute_e2e.py",
    "test_tiers_e2e.py",
    "test_agent_install.py",
    "test_distribution_cli.py",
    "test_edge_transactions.py",
    "test_distribution_jobs.py",
    "test_shared_staging.py",
    "test_pull_mode_api.py",
    "test_fleet_e2e_crash.py",
    "test_remote_repos.py",
    "test_audit.py",
    "test_agent_crash.py",
    "test_download.py",
    "test_edge_workers.py",
    "test_agent_drift_flow.py",
    "test_console_browser.py",
    "test_fleet_e2e_canary.py",
    "test_threats_distribution.py",
    "test_remote_repos_bad_input.py",
    "test_s3_delete_many.py",
    "test_faults_in_flight.py",
    "test_catalog.py",
    "test_s3_faults.py",
    "test_properties_api.py",
    "test_runtime_e2e.py",
    "test_fleet_e2e_failover.py",
    "test_fleet_e2e_devices.py",
    "test_fleet_e2e_rollout.py",
    "test_edge_batches.py",
    "test_access_roles.py",
    "test_scrub_e2e.py",
    "test_edge_clients.py",
    "test_edge_store.py",
    "test_agent_downloads.py",
    "test_edge_start_stream.py",
    "test_distribution_api.py",
    "test_undistribute_e2e.py",
    "test_strict_bodies.py",
    "test_s3_parallel_writes.py",
    "test_bulk_index.py",
)
_RANK = {name: rank for rank, name in enumerate(SLOWEST)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, the rest after them as collected; a file's tests keep their order."""
    items.sort(key=lambda item: _RANK.get(item.path.name, len(SLOWEST)))
