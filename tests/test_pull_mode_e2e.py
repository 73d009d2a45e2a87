"""Pull-mode edges with real processes: the service is never told the edge's address.

The edge polls the service (or a proxy in front of it) every second, runs each distribution
through its own transaction receiver, and reports; the service shows the job like any other.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import SOURCE_REPO, EdgeProcess
from tests.edge_setup import distributor_token, download, http
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.pull_setup import pull_edge, register, started
from tests.test_distribute_e2e import FAST_RETRIES, V1, Service, running_service, sites_of
from wire import pull
from wire.protocol import transaction_path

AUDIT = "/artifactory/api/audit"
FILES = {
    "app.tar.gz": os.urandom(3 * 1024 * 1024 + 17),
    "README.txt": b"pulled, not pushed\n",
    "core.so": os.urandom(70_000),
}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_RETRIES)


@pytest.fixture
def proxy(service: Service) -> Iterator[tuple[ThreadedServer, Faults]]:
    """A proxy in front of the service, through which the edge polls."""
    faults = Faults(only="/pull/")
    server = ThreadedServer(proxy_app(service.process.url, faults)).start()
    try:
        yield server, faults
    finally:
        server.stop()


@pytest.fixture
def edge(tmp_path: Path, service: Service, proxy: tuple[ThreadedServer, Faults]) -> Iterator[EdgeProcess]:
    process = pull_edge(tmp_path / "pull-edge", proxy[0].url, register(service))
    try:
        yield started(process, service)
    finally:
        process.stop()
        print(f"edge log, last lines:\n{process.log_tail()}")


def site(service: Service, version: str, dist_id: int) -> dict[str, object]:
    return sites_of(service.status(version, dist_id))["pull-1"]


def served_right(edge: EdgeProcess, version: str, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        status, body = download(edge.url, f"{SOURCE_REPO}/app/{version}/{path}")
        assert status == 200, (path, status)
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest(), path


def none_served(edge: EdgeProcess, version: str, files: dict[str, bytes]) -> None:
    assert [download(edge.url, f"{SOURCE_REPO}/app/{version}/{p}")[0] for p in files] == [404] * len(files)


def test_a_pull_mode_edge_gets_a_distribution_completed_while_the_service_never_calls_it(
    service: Service, edge: EdgeProcess
) -> None:
    status, edges = service.call("GET", f"{V1}/edges")
    assert status == 200
    assert [(e["name"], e["url"], e["mode"]) for e in edges] == [("pull-1", None, "pull")]
    service.signed_bundle("1.0", FILES)
    dist_id = service.distribute("1.0")
    final = service.wait("1.0", dist_id)
    assert final["status"] == "Completed", final
    done = site(service, "1.0", dist_id)
    assert (done["distributed_files"], done["distributed_bytes"]) == (3, sum(map(len, FILES.values())))
    served_right(edge, "1.0", FILES)
    # nothing ever called the edge's transaction API: the bundle came by the edge's own calls
    status, body = http("GET", f"{edge.url}{AUDIT}?action=distribute", edge.admin_token)
    assert status == 200 and body["records"] == [], body


def test_an_edge_that_was_offline_catches_up_with_two_distributions_and_an_undistribute(
    service: Service, edge: EdgeProcess
) -> None:
    edge.stop()
    other = {"app.tar.gz": os.urandom(200_000), "README.txt": b"version two\n"}
    service.signed_bundle("1.0", FILES)
    service.signed_bundle("2.0", other)
    first, second = service.distribute("1.0"), service.distribute("2.0")
    status, body = service.call("POST", f"{V1}/distribution/app/1.0/delete", {"distribution_rules": [
        {"site_name": "*", "city_name": "*", "country_codes": ["*"]}]})  # fmt: skip
    assert status == 202, body
    removal = int(body["id"])
    # the service does not push to a pull-mode edge: its jobs wait for the edge's poll
    assert site(service, "1.0", first)["status"] == "In queue"
    edge.start()
    for version, dist_id in (("1.0", first), ("2.0", second), ("1.0", removal)):
        final = service.wait(version, dist_id)
        assert final["status"] == "Completed", final
    served_right(edge, "2.0", other)
    none_served(edge, "1.0", FILES)


def test_a_blob_download_cut_mid_way_resumes_from_the_bytes_already_staged(
    service: Service, edge: EdgeProcess, proxy: tuple[ThreadedServer, Faults]
) -> None:
    faults = proxy[1]
    blob = f"/blobs/{hashlib.sha256(FILES['app.tar.gz']).hexdigest()}"  # the file's, not the bundle's SBOM
    faults.only, faults.cut_answers = blob, 1
    service.signed_bundle("1.0", {"app.tar.gz": FILES["app.tar.gz"]})
    final = service.wait("1.0", service.distribute("1.0"))
    assert final["status"] == "Completed", final
    served_right(edge, "1.0", {"app.tar.gz": FILES["app.tar.gz"]})
    blob_calls = [status for method, path, status in faults.seen if path.endswith(blob)]
    assert blob_calls == [200, 206], faults.seen  # the cut whole answer, then the rest as a range


@pytest.mark.parametrize("target", ["/manifests/", "/blobs/"])
def test_a_manifest_or_blob_damaged_on_the_way_is_refused_and_nothing_is_served(
    service: Service, edge: EdgeProcess, proxy: tuple[ThreadedServer, Faults], target: str
) -> None:
    faults = proxy[1]
    faults.only, faults.damage_answers = target, 100
    service.signed_bundle("1.0", FILES)
    final = service.wait("1.0", service.distribute("1.0"))
    assert final["status"] == "Failed", final
    error = str(final["sites"][0]["general_error"])
    assert error.startswith("edge pull-1: "), error
    assert ("signature" in error.lower()) if target == "/manifests/" else ("could not be fetched" in error), error
    none_served(edge, "1.0", FILES)


def held_blobs(faults: Faults) -> threading.Event:
    """Hold every blob call at the proxy until the event returned is set."""
    release = threading.Event()
    faults.only, faults.lost, faults.release = "/blobs/", 1, release
    return release


def manifest_sha256(service: Service, version: str) -> str:
    """The signed manifest's sha256: the id of its transaction on every edge."""
    status, bundle = service.call("GET", f"{V1}/release_bundle/app/{version}")
    assert status == 200, bundle
    return str(bundle["manifest_sha256"])


def test_an_abort_reaches_the_edge_at_its_next_report_and_its_transaction_is_aborted(
    service: Service, edge: EdgeProcess, proxy: tuple[ThreadedServer, Faults]
) -> None:
    release = held_blobs(proxy[1])
    service.signed_bundle("1.0", FILES)
    dist_id = service.distribute("1.0")
    service.wait("1.0", dist_id, until=lambda s: s["sites"][0]["status"] == "In progress")
    status, body = service.call("PUT", f"{V1}/distribution/app/1.0/abort")
    assert status == 202, body
    release.set()
    tx_url = f"{edge.url}{transaction_path(manifest_sha256(service, '1.0'))}"
    token = distributor_token(edge)
    for _ in range(300):  # a hang guard by polls, not a clock: the edge aborts at its next report
        if (state := http("GET", tx_url, token)[1]["state"]) == "ABORTED":
            break
        time.sleep(0.2)
    assert state == "ABORTED", f"the edge's transaction is still {state}"
    final = service.status("1.0", dist_id)
    assert (final["status"], final["sites"][0]["general_error"]) == ("Failed", "aborted")
    none_served(edge, "1.0", FILES)


def test_an_edge_restarted_mid_download_goes_on_with_the_transaction_it_had_open(
    service: Service, edge: EdgeProcess, proxy: tuple[ThreadedServer, Faults]
) -> None:
    faults = proxy[1]
    release = held_blobs(faults)
    service.signed_bundle("1.0", FILES)
    dist_id = service.distribute("1.0")
    service.wait("1.0", dist_id, until=lambda s: s["sites"][0]["status"] == "In progress")
    assert edge.stop() == 0
    release.set()
    edge.start()
    final = service.wait("1.0", dist_id)
    assert final["status"] == "Completed", final
    served_right(edge, "1.0", FILES)
    assert [path for _, path, _ in faults.seen if "/manifests/" in path] == [pull.manifest_path("pull-1", "app", "1.0")]


def test_the_cli_registers_a_pull_mode_edge_whose_credential_file_lets_it_poll(
    service: Service, tmp_path: Path
) -> None:
    cli = service.cli
    refused = cli("edge", "add", "pull-1", "--mode", "pull", "--url", "http://edge:8082", "--site", "s",
                  "--city", "c", "--country", "DE")  # fmt: skip
    assert refused.returncode != 0 and "400" in refused.stderr
    added = cli("edge", "add", "pull-1", "--mode", "pull", "--site", "s", "--city", "c", "--country", "DE")
    assert added.returncode == 0, added.stderr
    credential = added.stdout.strip().splitlines()[-1]
    assert pull.credential_edge(credential) == "pull-1"
    rotated = cli("edge", "credential", "pull-1")
    assert rotated.returncode == 0, rotated.stderr
    path = tmp_path / "credential"
    path.write_text(rotated.stdout.strip() + "\n")
    assert "pull-1  pull mode" in cli("edge", "list").stdout
    edge = EdgeProcess(tmp_path / "pull-edge", env={"EDGE_PULL_SERVICE_URL": service.process.url,
                       "EDGE_PULL_CREDENTIAL_FILE": str(path), "EDGE_PULL_INTERVAL": "1"})  # fmt: skip
    try:
        started(edge, service)
        service.signed_bundle("1.0", FILES)
        done = cli("distribute", "app", "1.0", "--wait")
        assert done.returncode == 0, done.stderr
        assert "Completed" in done.stderr and "3/3 files" in done.stderr
        served_right(edge, "1.0", FILES)
    finally:
        edge.stop()


def test_an_edge_of_two_workers_polls_from_one_of_them_at_a_time(
    service: Service, proxy: tuple[ThreadedServer, Faults], tmp_path: Path
) -> None:
    edge = pull_edge(tmp_path / "two-workers", proxy[0].url, register(service))
    edge.workers = 2
    try:
        started(edge, service)
        assert len(edge.worker_pids()) == 2
        for version in ("1.0", "2.0"):
            service.signed_bundle(version, FILES)
            final = service.wait(version, service.distribute(version))
            assert final["status"] == "Completed", final
            served_right(edge, version, FILES)
    finally:
        edge.stop()
    fetched = [path for _, path, _ in proxy[1].seen if "/manifests/" in path]
    assert sorted(fetched) == [pull.manifest_path("pull-1", "app", v) for v in ("1.0", "2.0")]
