"""An undistribute is a job like a push, with the service and an edge as real processes.

The edge removes at most ``removal_files_per_request`` files per request (two here) and says how
far it got; the service calls again until the edge answers done, and shows the job In progress
with the files removed so far. A proxy in front of the edge holds chosen answers, so each test
looks at the job between two steps, and kills the edge or the service there: the job still ends
Completed with every file of the version gone and nothing else removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import find_program, service_environment
from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.test_distribute_e2e import EVERYWHERE, V1, Service, public_key, running_service, sites_of
from wire.protocol import BUNDLES

STEP = 2
GIVE_UP = 60.0  # a hang guard, not a speed check
KEPT = {"shared.bin": b"bytes both versions hold\n", "kept.txt": b"only 1.0 has this\n"}
REMOVED = {f"f{i}.bin": os.urandom(500 + i) for i in range(6)} | {"shared.bin": KEPT["shared.bin"]}


class HeldRemovals:
    """Holds the proxy's passing on of chosen removal steps the edge answered 202 (the n-th
    counted from 1) until the test releases them; the service waits for the answer meanwhile."""

    def __init__(self) -> None:
        self.answered = 0
        self.holds: dict[int, tuple[threading.Event, threading.Event]] = {}

    def hold(self, *steps: int) -> None:
        for n in steps:
            self.holds[n] = (threading.Event(), threading.Event())

    def reached(self, n: int) -> None:
        assert self.holds[n][0].wait(GIVE_UP), f"removal step {n} never came ({self.answered} answered)"

    def release(self, n: int) -> None:
        self.holds[n][1].set()

    def __call__(self, method: str, path: str, status: int) -> None:
        if method == "DELETE" and path.startswith(BUNDLES) and status == 202:
            self.answered += 1
            if (hold := self.holds.get(self.answered)) is not None:
                hold[0].set()
                hold[1].wait(GIVE_UP)


class Setup:
    def __init__(self, service: Service, edge: EdgeProcess, held: HeldRemovals) -> None:
        self.service, self.edge, self.held = service, edge, held

    def undistribute(self, version: str) -> int:
        status, body = self.service.call(
            "POST", f"{V1}/distribution/app/{version}/delete", {"distribution_rules": EVERYWHERE}
        )
        assert status == 202, body
        return int(body["id"])

    def site(self, version: str, dist_id: int) -> dict[str, Any]:
        return sites_of(self.service.status(version, dist_id))["edge-1"]

    def served(self, version: str, files: dict[str, bytes]) -> list[int]:
        return [download(self.edge.url, f"{SOURCE_REPO}/app/{version}/{p}")[0] for p in files]

    def edge_bundles(self) -> list[str]:
        status, body = http("GET", self.edge.url + BUNDLES, distributor_token(self.edge))
        assert status == 200, body
        return sorted(f"{b['name']}/{b['version']}" for b in body)

    def assert_removed_and_nothing_else(self) -> None:
        assert self.served("2.0", REMOVED) == [404] * len(REMOVED)
        assert [download(self.edge.url, f"{SOURCE_REPO}/app/1.0/{p}") for p in KEPT] == [
            (200, d) for d in KEPT.values()
        ]
        assert self.edge_bundles() == ["app/1.0"]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """Quick retries; the default read time-out, far longer than any held answer is held."""
    yield from running_service(tmp_path / "distribution", {"DISTRIBUTION_RETRY_BACKOFF_CAP": "1"})


@pytest.fixture
def setup(service: Service, tmp_path: Path) -> Iterator[Setup]:
    """Versions 1.0 and 2.0 (sharing a blob) on an edge behind a proxy that can hold removal steps."""
    held = HeldRemovals()
    edge = EdgeProcess(tmp_path / "edge", env={"EDGE_REMOVAL_FILES_PER_REQUEST": str(STEP)}).start()
    proxy = ThreadedServer(proxy_app(edge.url, Faults(on_answer=held))).start()
    try:
        trust(edge, public_key(service))
        service.add_edge("edge-1", proxy.url, distributor_token(edge))
        for version, files in (("1.0", KEPT), ("2.0", REMOVED)):
            service.signed_bundle(version, files)
            assert service.wait(version, service.distribute(version))["status"] == "Completed"
        yield Setup(service, edge, held)
    finally:
        for hold in held.holds.values():
            hold[1].set()
        proxy.stop()
        code = edge.stop()
    assert code == 0, edge.log_tail()


def cli_status(service: Service, version: str) -> str:
    env = service_environment(
        {"DISTRIBUTION_URL": service.process.url, "DISTRIBUTION_TOKEN": service.process.admin_token}
    )
    done = subprocess.run(
        [find_program("distribution"), "status", "app", version], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_undistribute_shows_in_progress_with_a_growing_count_and_ends_with_the_files_gone(setup: Setup) -> None:
    setup.held.hold(2, 3)
    dist_id = setup.undistribute("2.0")
    setup.held.reached(2)  # the service has the first step's answer, the second is held
    status = setup.service.status("2.0", dist_id)
    assert status["type"] == "delete_release_bundle_version" and status["status"] == "In progress"
    site = sites_of(status)["edge-1"]
    assert (site["status"], site["distributed_files"], site["total_files"]) == ("In progress", STEP, len(REMOVED))
    assert setup.served("2.0", REMOVED) == [404] * len(REMOVED), "hidden whole from the first step"
    assert f"In progress  {STEP}/{len(REMOVED)} files removed" in cli_status(setup.service, "2.0")
    setup.held.release(2)
    setup.held.reached(3)
    assert setup.site("2.0", dist_id)["distributed_files"] == 2 * STEP
    setup.held.release(3)

    done = setup.service.wait("2.0", dist_id)
    assert done["status"] == "Completed", done
    site = sites_of(done)["edge-1"]
    assert (site["distributed_files"], site["total_files"]) == (len(REMOVED), len(REMOVED))
    assert f"Completed    {len(REMOVED)}/{len(REMOVED)} files removed" in cli_status(setup.service, "2.0")
    setup.assert_removed_and_nothing_else()
    # the same request once more, straight to the edge and through the service: harmless
    token = distributor_token(setup.edge)
    assert http("DELETE", f"{setup.edge.url}{BUNDLES}/app/2.0", token)[0] == 404
    again = setup.service.wait("2.0", setup.undistribute("2.0"))
    assert again["status"] == "Completed", again
    setup.assert_removed_and_nothing_else()


def test_bad_undistribute_requests_get_a_clear_4xx_and_change_nothing(setup: Setup) -> None:
    before = setup.service.call("GET", f"{V1}/release_bundle/app/2.0/distribution")
    for path, body, expected in [
        (f"{V1}/distribution/app/9.9/delete", {"distribution_rules": EVERYWHERE}, 404),
        (f"{V1}/distribution/nope/2.0/delete", {"distribution_rules": EVERYWHERE}, 404),
        (f"{V1}/distribution/app/2.0/delete", {"distribution_rules": EVERYWHERE, "on_success": "later"}, 400),
        (f"{V1}/distribution/app/2.0/delete", {"distribution_rules": "everywhere"}, 400),
        (f"{V1}/distribution/app/2.0/delete", {"distribution_rules": EVERYWHERE, "files": 3}, 400),
        (f"{V1}/distribution/app/2.0/delete", None, 400),
    ]:
        status, answer = setup.service.call("POST", path, body)
        assert status == expected, (path, body, answer)
        assert answer["status_code"] == expected and answer["message"], answer
    assert setup.service.call("GET", f"{V1}/release_bundle/app/2.0/distribution") == before
    assert setup.served("2.0", REMOVED) == [200] * len(REMOVED)
    assert setup.edge_bundles() == ["app/1.0", "app/2.0"]


def test_an_edge_killed_between_removal_steps_finishes_at_start_up_and_the_job_completes(setup: Setup) -> None:
    setup.held.hold(2)
    dist_id = setup.undistribute("2.0")
    setup.held.reached(2)
    os.kill(setup.edge.pid, signal.SIGKILL)
    assert setup.edge.wait(20) == -signal.SIGKILL
    assert setup.site("2.0", dist_id)["status"] == "In progress"
    setup.edge.start()  # finishes the removal a crash cut short before it serves
    setup.held.release(2)
    done = setup.service.wait("2.0", dist_id)
    assert done["status"] == "Completed", done
    assert sites_of(done)["edge-1"]["distributed_files"] == len(REMOVED)
    setup.assert_removed_and_nothing_else()


def test_a_service_killed_mid_undistribute_resumes_it_after_a_restart(setup: Setup) -> None:
    setup.held.hold(2)
    dist_id = setup.undistribute("2.0")
    setup.held.reached(2)
    process = setup.service.process
    os.kill(process.pid, signal.SIGKILL)
    process.wait(20)
    setup.held.release(2)  # that answer goes nowhere: the edge has removed four files, the job says two
    process.start()
    done = setup.service.wait("2.0", dist_id)
    assert done["status"] == "Completed", done
    site = sites_of(done)["edge-1"]
    assert (site["distributed_files"], site["total_files"]) == (len(REMOVED), len(REMOVED))
    setup.assert_removed_and_nothing_else()
