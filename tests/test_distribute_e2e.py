"""Distribution end to end: the service and three edges as real processes, talked to only over HTTP.

What a release manager relies on: a bundle reaches every edge verified, a new version
sends only what changed, an edge that was down catches up by itself, one broken edge
fails the distribution by name while the others complete, and a service killed mid-push
resumes after a restart.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import find_program, service_environment
from devstack.services import SOURCE_REPO, DistributionProcess, EdgeProcess
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, garbage_app, proxy_app

V1 = "/distribution/api/v1"
EVERYWHERE = [{"site_name": "*", "city_name": "*", "country_codes": ["*"]}]
SITES = [
    ("us-east-1", "us-east", "nyc", "US"),
    ("eu-central-1", "eu-central", "fra", "DE"),
    ("ap-1", "ap", "tyo", "JP"),
]
FAST_RETRIES = {"DISTRIBUTION_RETRY_BACKOFF_CAP": "1", "DISTRIBUTION_EDGE_READ_TIMEOUT": "5"}


class Service:
    """The distribution process plus the calls a release manager makes to it."""

    def __init__(self, process: DistributionProcess) -> None:
        self.process = process

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http(method, self.process.url + path, self.process.admin_token, body)

    def cli_environment(self) -> dict[str, str]:
        return service_environment(
            {"DISTRIBUTION_URL": self.process.url, "DISTRIBUTION_TOKEN": self.process.admin_token}
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``distribution ARGS...`` run against this service, as a release manager runs it."""
        command = [find_program("distribution"), *args]
        return subprocess.run(command, env=self.cli_environment(), capture_output=True, text=True, timeout=120)

    def put_file(self, path: str, data: bytes) -> None:
        import urllib.request

        request = urllib.request.Request(
            f"{self.process.url}/artifactory/{SOURCE_REPO}/{path}", data=data, method="PUT"
        )
        request.add_header("Authorization", f"Bearer {self.process.admin_token}")
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as resp:
            assert resp.status == 201

    def signed_bundle(self, version: str, files: dict[str, bytes]) -> None:
        for path, data in files.items():
            self.put_file(f"app/{version}/{path}", data)
        spec = {"queries": [{"pattern": f"{SOURCE_REPO}/app/{version}/*"}]}
        status, body = self.call(
            "POST", f"{V1}/release_bundle", {"name": "app", "version": version, "spec": spec, "sign_immediately": True}
        )
        assert status == 201, body

    def add_edge(self, name: str, url: str, token: str, site: tuple[str, str, str] = ("s", "c", "US")) -> None:
        body = {"name": name, "url": url, "site_name": site[0], "city_name": site[1], "country_code": site[2]}
        status, answer = self.call("POST", f"{V1}/edges", body | {"token": token})
        assert status == 201, answer

    def distribute(self, version: str) -> int:
        status, body = self.call("POST", f"{V1}/distribution/app/{version}", {"distribution_rules": EVERYWHERE})
        assert status == 202, body
        return int(body["id"])

    def status(self, version: str, dist_id: int) -> dict[str, Any]:
        status, body = self.call("GET", f"{V1}/release_bundle/app/{version}/distribution/{dist_id}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def wait(self, version: str, dist_id: int, until: Any = None, timeout: float = 90) -> dict[str, Any]:
        until = until or (lambda s: s["status"] in ("Completed", "Failed"))
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(version, dist_id)
            if until(status):
                return status
            if time.monotonic() >= deadline:  # a hang guard, not a speed check
                pytest.fail(f"gave up waiting: {status}")
            time.sleep(0.2)


def sites_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["target_artifactory"]["name"]: s for s in status["sites"]}


def running_service(base: Path, env: dict[str, str]) -> Iterator[Service]:
    """A fixture body: the service as a process, which must stop cleanly (exit 0) at the end."""
    process = DistributionProcess(base, env=env)
    process.start()
    try:
        yield Service(process)
    finally:
        code = process.stop()
        print(f"distribution log, last lines:\n{process.log_tail()}")
    assert code == 0, f"the service did not stop cleanly\n{process.log_tail()}"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from running_service(tmp_path / "distribution", FAST_RETRIES)


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[list[EdgeProcess]]:
    started: list[EdgeProcess] = []
    try:
        for name, *_ in SITES:
            started.append(EdgeProcess(tmp_path / name).start())
        yield started
    finally:
        for edge in started:
            edge.stop()


def public_key(service: Service) -> str:
    status, key = service.call("GET", f"{V1}/keys/gpg/public")
    assert status == 200
    return str(key)


def trusted(service: Service, edges: list[EdgeProcess]) -> None:
    """On each edge: trust the service's key, issue a distributor token; then register the edge."""
    key = public_key(service)
    for edge, (name, site, city, country) in zip(edges, SITES, strict=True):
        trust(edge, key)
        service.add_edge(name, edge.url, distributor_token(edge), (site, city, country))


FILES = {
    "app-1.4.0.tar.gz": os.urandom(3 * 1024 * 1024),
    "app-1.4.0.tar.gz.sha256": b"checksum file\n",
    "RELEASE-NOTES.md": b"# app\n\n- faster\n",
}


def test_a_bundle_reaches_three_edges_verified_and_the_next_version_sends_only_the_changed_file(
    service: Service, edges: list[EdgeProcess]
) -> None:
    trusted(service, edges)
    service.signed_bundle("1.4.0", FILES)
    done = service.wait("1.4.0", service.distribute("1.4.0"))
    assert done["status"] == "Completed", done
    for edge in edges:
        for path, data in FILES.items():
            status, got = download(edge.url, f"{SOURCE_REPO}/app/1.4.0/{path}")
            assert status == 200 and hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    changed = {**FILES, "RELEASE-NOTES.md": b"# app 1.4.1\n\n- fixed\n"}
    service.signed_bundle("1.4.1", changed)
    done = service.wait("1.4.1", service.distribute("1.4.1"))
    assert done["status"] == "Completed", done
    for site in done["sites"]:
        sbom = service.call("GET", f"{V1}/release_bundle/app/1.4.1/manifest")[1]["sbom"]  # sent with the file
        assert (site["sent_files"], site["sent_bytes"]) == (1, len(changed["RELEASE-NOTES.md"]) + sbom["size"]), site
        assert site["distributed_bytes"] == site["total_bytes"] == sum(len(v) for v in changed.values())


def test_an_edge_that_was_down_gets_the_bundle_when_it_comes_back(service: Service, edges: list[EdgeProcess]) -> None:
    trusted(service, edges)
    service.signed_bundle("1.4.0", FILES)
    down = edges[1]
    assert down.stop() == 0
    dist_id = service.distribute("1.4.0")
    waiting = service.wait(
        "1.4.0", dist_id, lambda s: "retrying" in sites_of(s)["eu-central-1"]["general_error"], timeout=30
    )
    assert waiting["status"] in ("In queue", "In progress")
    down.start()
    done = service.wait("1.4.0", dist_id)
    assert done["status"] == "Completed", done
    assert download(down.url, f"{SOURCE_REPO}/app/1.4.0/RELEASE-NOTES.md") == (200, FILES["RELEASE-NOTES.md"])


def test_an_edge_answering_garbage_fails_by_name_while_the_others_complete(
    service: Service, edges: list[EdgeProcess]
) -> None:
    garbage = ThreadedServer(garbage_app).start()
    try:
        trusted(service, edges)
        service.add_edge("broken-1", garbage.url, "some-token")
        service.signed_bundle("1.4.0", FILES)
        done = service.wait(
            "1.4.0",
            service.distribute("1.4.0"),
            lambda s: all(x["status"] in ("Completed", "Failed") for x in s["sites"]),
        )
    finally:
        garbage.stop()
    assert done["status"] == "Failed"
    sites = sites_of(done)
    assert {n: s["status"] for n, s in sites.items()} == {
        "us-east-1": "Completed",
        "eu-central-1": "Completed",
        "ap-1": "Completed",
        "broken-1": "Failed",
    }
    assert "broken-1" in sites["broken-1"]["general_error"] and "not JSON" in sites["broken-1"]["general_error"]


def test_a_service_killed_mid_push_resumes_after_a_restart(service: Service, edges: list[EdgeProcess]) -> None:
    big = os.urandom(12 * 1024 * 1024)
    faults = Faults(upload_rate=3 * 1024 * 1024, only="/blobs")
    proxy = ThreadedServer(proxy_app(edges[0].url, faults)).start()
    try:
        trust(edges[0], public_key(service))
        service.add_edge("slow-1", proxy.url, distributor_token(edges[0]))
        service.signed_bundle("2.0.0", {"big.bin": big, "small.txt": b"small\n"})
        dist_id = service.distribute("2.0.0")
        deadline = time.monotonic() + 30
        while faults.upload_bytes < 4 * 1024 * 1024:
            if time.monotonic() >= deadline:  # a hang guard, not a speed check
                pytest.fail(faults)
            time.sleep(0.05)
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(10)
        sent_before = faults.upload_bytes
        faults.upload_rate = None
        service.process.start()
        done = service.wait("2.0.0", dist_id)
    finally:
        proxy.stop()
    assert done["status"] == "Completed", done
    assert download(edges[0].url, f"{SOURCE_REPO}/app/2.0.0/big.bin") == (200, big)
    # the restart resumed the big blob where the edge's staging ended instead of sending it again
    assert faults.upload_bytes < len(big) + sent_before // 2, (faults.upload_bytes, sent_before)
    heads = [p for m, p, _ in faults.seen if m == "HEAD"]
    assert heads, faults.seen


def test_the_cli_registers_edges_distributes_with_wait_and_exits_non_zero_on_failure(
    service: Service, edges: list[EdgeProcess]
) -> None:
    env, cli = service.cli_environment(), service.cli
    key = public_key(service)
    edge = edges[0]
    trust(edge, key)
    added = cli("edge", "add", "us-east-1", "--url", edge.url, "--site", "us-east", "--city", "nyc",
                "--country", "US", "--token", distributor_token(edge))  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = cli("edge", "list")
    assert "us-east-1" in listed.stdout and "healthy" in listed.stdout
    bad = cli(
        "edge", "add", "x-y", "--url", "ftp://no", "--site", "s", "--city", "c", "--country", "US", "--token", "t"
    )
    assert bad.returncode != 0 and "400" in bad.stderr
    service.signed_bundle("1.4.0", FILES)
    dry = cli("distribute", "app", "1.4.0", "--country", "US", "--dry-run")
    assert dry.returncode == 0 and "us-east-1" in dry.stdout
    nomatch = cli("distribute", "app", "1.4.0", "--country", "FR")
    assert nomatch.returncode != 0 and "No registered edge matches" in nomatch.stderr
    done = cli("distribute", "app", "1.4.0", "--country", "US", "--wait")
    assert done.returncode == 0, done.stderr
    assert "Completed" in done.stderr and "3/3 files" in done.stderr
    status = cli("status", "app", "1.4.0")
    assert "Completed" in status.stdout and "us-east-1" in status.stdout
    assert cli("abort", "app", "1.4.0").returncode == 0
    service.add_edge("broken-1", "http://127.0.0.1:1", "t", ("broken", "nowhere", "US"))
    # an unreachable edge keeps retrying; abort ends it and --wait reports the failure with exit 1
    waiting = subprocess.Popen(
        [find_program("distribution"), "distribute", "app", "1.4.0", "--site", "broken", "--wait"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2)
    assert "aborted on broken-1" in cli("abort", "app", "1.4.0").stdout
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and "aborted" in err
    removed = cli("undistribute", "app", "1.4.0", "--site", "us-east", "--delete")
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 30
    while service.call("GET", f"{V1}/release_bundle/app/1.4.0")[0] != 404:
        if time.monotonic() >= deadline:  # a hang guard, not a speed check
            pytest.fail("gave up waiting")
        time.sleep(0.2)
    assert download(edge.url, f"{SOURCE_REPO}/app/1.4.0/RELEASE-NOTES.md")[0] == 404


def test_a_bundle_of_fifteen_hundred_tiny_files_reaches_an_edge_and_every_file_downloads(
    service: Service, tmp_path: Path
) -> None:
    """So many small files that the service sends a batch of the most blobs one may carry."""
    files = {f"f-{i:04d}.bin": os.urandom(1024 + i % 1025) for i in range(1500)}
    with EdgeProcess(tmp_path / "tiny-edge") as edge:
        trust(edge, public_key(service))
        service.add_edge("tiny-1", edge.url, distributor_token(edge))
        service.signed_bundle("3.0.0", files)
        done = service.wait("3.0.0", service.distribute("3.0.0"), timeout=180)
        assert done["status"] == "Completed", done
        (site,) = done["sites"]
        assert (site["distributed_files"], site["total_files"]) == (1500, 1500), site
        for path, data in files.items():
            assert download(edge.url, f"{SOURCE_REPO}/app/3.0.0/{path}") == (200, data), path
