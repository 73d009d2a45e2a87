"""Edges that hang or fail beside edges that work: the service and two edges as real processes.

What a release manager relies on: an edge that accepts connections and never answers, or
one that answers 500 to everything, never holds up the edges that work. Each call to the
silent edge ends after ``edge_read_timeout`` and is retried; the failing edge is given up
after ``max_server_errors`` answers; the status names both, and an abort ends the wait.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, download, trust
from tests.fault_servers import Faults, SilentServer, ThreadedServer, proxy_app
from tests.test_distribute_e2e import FILES, SITES, V1, Service, public_key, running_service, sites_of

READ_TIMEOUT = 2
MAX_SERVER_ERRORS = 3
LIMITS = {
    "DISTRIBUTION_EDGE_READ_TIMEOUT": str(READ_TIMEOUT),
    "DISTRIBUTION_MAX_SERVER_ERRORS": str(MAX_SERVER_ERRORS),
    "DISTRIBUTION_RETRY_BACKOFF_CAP": "1",
}
REAL = [name for name, *_ in SITES[:2]]
RUNNING = ("In queue", "In progress")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """Must stop cleanly even with a call to the silent edge still open."""
    yield from running_service(tmp_path / "distribution", LIMITS)


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[list[EdgeProcess]]:
    started: list[EdgeProcess] = []
    try:
        for name in REAL:
            started.append(EdgeProcess(tmp_path / name).start())
        yield started
    finally:
        for edge in started:
            edge.stop()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def failing() -> Iterator[tuple[ThreadedServer, Faults]]:
    faults = Faults(server_errors=1_000_000)  # every call answered 500, nothing forwarded
    server = ThreadedServer(proxy_app("http://127.0.0.1:9", faults)).start()
    try:
        yield server, faults
    finally:
        server.stop()


def attempts(site: dict[str, Any]) -> int:
    """The retry count the status reports for an edge ("retrying (attempt 3): ..."), 0 for none."""
    found = re.search(r"retrying \(attempt (\d+)\)", site["general_error"])
    return int(found.group(1)) if found else 0


def test_a_silent_edge_is_retried_by_name_and_a_failing_one_given_up_while_two_real_edges_complete(
    service: Service,
    edges: list[EdgeProcess],
    silent: SilentServer,
    failing: tuple[ThreadedServer, Faults],
) -> None:
    key = public_key(service)
    for edge, (name, site, city, country) in zip(edges, SITES[:2], strict=True):
        trust(edge, key)
        service.add_edge(name, edge.url, distributor_token(edge), (site, city, country))
    service.add_edge("silent-1", silent.url, "some-token", ("ap", "tyo", "JP"))
    service.add_edge("failing-1", failing[0].url, "some-token", ("ap", "osa", "JP"))
    service.signed_bundle("1.4.0", FILES)
    dist_id = service.distribute("1.4.0")

    def settled(status: dict[str, Any]) -> bool:
        sites = sites_of(status)
        return (
            all(sites[name]["status"] == "Completed" for name in REAL)
            and sites["failing-1"]["status"] == "Failed"
            and attempts(sites["silent-1"]) >= 2  # each call to it ended, and was tried again
        )

    # a hang guard: without bounded calls the silent edge would never get past its first attempt
    status = service.wait("1.4.0", dist_id, settled, timeout=90)
    sites = sites_of(status)
    assert status["status"] == "Failed", status
    for edge in edges:
        for path, data in FILES.items():
            code, got = download(edge.url, f"{SOURCE_REPO}/app/1.4.0/{path}")
            assert code == 200 and hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), (edge.url, path)
    for name in REAL:
        assert sites[name]["general_error"] == "" and sites[name]["distributed_files"] == len(FILES)

    failed = sites["failing-1"]["general_error"]
    assert "failing-1" in failed and "500" in failed and f"gave up after {MAX_SERVER_ERRORS} attempts" in failed
    assert [code for _, _, code in failing[1].seen] == [500] * MAX_SERVER_ERRORS

    waiting = sites["silent-1"]
    assert waiting["status"] in RUNNING, waiting
    assert "silent-1" in waiting["general_error"] and "timeout" in waiting["general_error"].lower(), waiting
    assert silent.connections >= 2

    status_code, aborted = service.call("PUT", f"{V1}/distribution/app/1.4.0/abort")
    assert status_code == 202 and [s["name"] for s in aborted["sites"]] == ["silent-1"], aborted
    done = sites_of(service.status("1.4.0", dist_id))
    assert {name: site["status"] for name, site in done.items()} == {
        "us-east-1": "Completed",
        "eu-central-1": "Completed",
        "silent-1": "Failed",
        "failing-1": "Failed",
    }
    assert done["silent-1"]["general_error"] == "aborted"
