"""SIGKILL in the phases tests/test_threats_distribution.py and tests/test_edge_transactions.py do not
kill: a deploy, a start, an undistribute and a key being trusted on an edge; a bundle being
created and signed, and a push waiting for its verify step, on the Distribution service.

Each request is written whole to a real process's socket; the process is killed at several
moments after it, from before it reads the request to after it answers, and started again on
the same data. What an operator relies on: whatever the moment, what the request changes is
there whole or not at all, nothing committed before is lost, and the same request once more
finishes the job.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.services import DistributionProcess, EdgeProcess
from tests.edge_setup import distributor_token, download, served, trust
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_distribute_e2e import FAST_RETRIES, Service, public_key
from tests.test_edge_transactions import (
    BUNDLES,
    KEYS,
    REPO,
    TX,
    Remote,
    kill_and_restart,
    manifest_of,
    sha256,
    signed,
    tx_id,
)
from tests.test_threats_distribution import commits_logged, edge_bundles

UPLOADS = "artifactory-edge-uploads"
MiB = 1024 * 1024
# From before the process reads the request to after it answers: the middle ones land inside it.
DELAYS = (0.0, 0.005, 0.015, 0.03, 0.1)
SHARED = b"bytes every version holds\n"
RELEASE_BUNDLE = "/distribution/api/v1/release_bundle"
# A hang guard, not a speed check.
GIVE_UP = 60.0


def request_bytes(method: str, path: str, token: str, body: Any = None, *, declared: int | None = None) -> bytes:
    """A request with ``body`` as JSON; ``declared`` announces a body of that length to come instead."""
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(data) if declared is None else declared}\r\n\r\n"
    return head.encode() + data


def kill_during(process: EdgeProcess, request: bytes, delay: float) -> None:
    """Write ``request`` whole to the process's socket, SIGKILL it ``delay`` s later, start it again."""
    with socket.create_connection(("127.0.0.1", process.port or 0), timeout=10) as sock:
        sock.sendall(request)
        time.sleep(delay)
        kill_and_restart(process)


def version_files(version: str) -> dict[str, bytes]:
    """Sixty files per version, one of them with the bytes every version shares."""
    files = {f"f{i:02}.txt": f"{version} file {i}\n".encode() * 50 for i in range(59)}
    return files | {"shared.txt": SHARED}


@dataclass
class Node:
    edge: EdgeProcess
    remote: Remote
    kept: dict[str, bytes]  # version 1.0, committed before any kill

    def served(self, version: str, files: dict[str, bytes]) -> int:
        return served(self.edge, version, files)

    def push(self, body: dict[str, str], files: dict[str, bytes]) -> None:
        tid = tx_id(body)
        assert self.remote.call("POST", TX, json=body).status_code in (200, 201)
        for data in files.values():
            assert self.remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(data)}", data=data).status_code in (200, 201)
        assert self.remote.call("POST", f"{TX}/{tid}/commit").json()["state"] == "COMMITTED"

    def token(self) -> str:
        return str(self.remote.session.headers["Authorization"]).removeprefix("Bearer ")

    def trusted_keys(self) -> list[tuple[str, str]]:
        listed = self.remote.call("GET", KEYS, headers=self.remote.admin).json()["keys"]
        return [(k["alias"], k["fingerprint"]) for k in listed]


def running_node(
    base: Path, keys: KeySet, key_factory: KeyFactory, env: dict[str, str] | None = None
) -> Iterator[Node]:
    """A fixture body: an edge that trusts alice and serves version 1.0; it must stop cleanly at the end."""
    edge = EdgeProcess(base, env=env).start()
    try:
        remote = Remote(edge)
        body = {"alias": "alice", "public_key": keys.alice.public}
        assert remote.call("POST", KEYS, json=body, headers=remote.admin).ok
        node = Node(edge, remote, version_files("1.0"))
        node.push(signed(key_factory, keys.alice, manifest_of(node.kept, version="1.0")), node.kept)
        yield node
    finally:
        code = edge.stop()
    assert code == 0, edge.log_tail()


@pytest.fixture
def node(tmp_path: Path, keys: KeySet, key_factory: KeyFactory) -> Iterator[Node]:
    yield from running_node(tmp_path / "edge", keys, key_factory)


@pytest.fixture
def stepped_node(tmp_path: Path, keys: KeySet, key_factory: KeyFactory) -> Iterator[Node]:
    """The same, removing at most seven files of a bundle per request."""
    yield from running_node(tmp_path / "edge", keys, key_factory, {"EDGE_REMOVAL_FILES_PER_REQUEST": "7"})


def test_an_edge_killed_during_a_deploy_over_a_file_keeps_serving_the_old_bytes(node: Node) -> None:
    old = os.urandom(100_000)
    path = f"/artifactory/{UPLOADS}/tools/app.bin"
    assert node.remote.call("PUT", path, data=old, headers=node.remote.admin).status_code == 201
    new = os.urandom(4 * MiB)
    head = request_bytes("PUT", path, node.edge.admin_token, declared=len(new))
    kill_during(node.edge, head + new[: 3 * MiB], 0.1)  # three quarters of the body, then SIGKILL
    assert download(node.edge.url, f"{UPLOADS}/tools/app.bin") == (200, old)
    assert node.served("1.0", node.kept) == len(node.kept)
    assert node.remote.call("PUT", path, data=new, headers=node.remote.admin).status_code == 201
    assert download(node.edge.url, f"{UPLOADS}/tools/app.bin") == (200, new)


def test_an_edge_killed_during_a_start_has_the_transaction_open_or_absent_and_the_same_start_opens_it(
    node: Node, keys: KeySet, key_factory: KeyFactory
) -> None:
    found = []
    for i, delay in enumerate(DELAYS):
        files = version_files(f"2.{i}")
        body = signed(key_factory, keys.alice, manifest_of(files, version=f"2.{i}"))
        kill_during(node.edge, request_bytes("POST", TX, node.token(), body), delay)
        status = node.remote.call("GET", f"{TX}/{tx_id(body)}")
        assert status.status_code in (200, 404), status.text
        state = status.json()["state"] if status.status_code == 200 else "absent"
        assert state in ("OPEN", "absent"), state
        found.append(state)
        assert node.served(f"2.{i}", files) == 0
        assert node.served("1.0", node.kept) == len(node.kept)
        again = node.remote.call("POST", TX, json=body)
        assert again.status_code == (200 if state == "OPEN" else 201), again.text
        node.push(body, files)
        assert node.served(f"2.{i}", files) == len(files)
    print("transaction found after each kill:", found)


def test_an_edge_killed_during_an_undistribute_serves_that_version_whole_or_not_at_all(
    node: Node, keys: KeySet, key_factory: KeyFactory
) -> None:
    versions = {f"3.{i}": version_files(f"3.{i}") for i in range(len(DELAYS))}
    for version, files in versions.items():
        node.push(signed(key_factory, keys.alice, manifest_of(files, version=version)), files)
    found = []
    for (version, files), delay in zip(versions.items(), DELAYS, strict=True):
        kill_during(node.edge, request_bytes("DELETE", f"{BUNDLES}/app/{version}", node.token()), delay)
        served = node.served(version, files)
        assert served in (0, len(files)), f"{served} of {len(files)} files of {version} served"
        assert (
            ("app", version) in edge_bundles(node.edge) if served else ("app", version) not in edge_bundles(node.edge)
        )
        found.append(served)
        assert node.served("1.0", node.kept) == len(node.kept)  # shares a blob with every version
        again = node.remote.call("DELETE", f"{BUNDLES}/app/{version}")
        assert again.status_code == (204 if served else 404), again.text
        assert node.served(version, files) == 0
    assert edge_bundles(node.edge) == [("app", "1.0")]
    print("files served after each kill:", found)


def test_an_edge_killed_during_a_removal_step_finishes_the_removal_when_it_starts_again(
    stepped_node: Node, keys: KeySet, key_factory: KeyFactory
) -> None:
    node = stepped_node
    for i, delay in enumerate(DELAYS):
        version, files = f"4.{i}", version_files(f"4.{i}")
        node.push(signed(key_factory, keys.alice, manifest_of(files, version=version)), files)
        first = node.remote.call("DELETE", f"{BUNDLES}/app/{version}")
        assert (first.status_code, first.json()) == (202, {"status": "in_progress", "removed": 7, "total": 60})
        kill_during(node.edge, request_bytes("DELETE", f"{BUNDLES}/app/{version}", node.token()), delay)
        assert node.served(version, files) == 0
        assert ("app", version) not in edge_bundles(node.edge)
        assert node.served("1.0", node.kept) == len(node.kept)  # shares a blob with every version
        again = node.remote.call("DELETE", f"{BUNDLES}/app/{version}")
        assert again.status_code == 404, again.text  # the restart finished the removal
    assert edge_bundles(node.edge) == [("app", "1.0")]


def test_an_edge_killed_while_it_trusts_a_key_trusts_it_whole_or_not_and_the_same_request_trusts_it(
    node: Node, key_factory: KeyFactory
) -> None:
    before = node.trusted_keys()
    for i, delay in enumerate(DELAYS):
        key = key_factory.make_key(f"Rotated {i} <rotated-{i}@example.com>")
        body = {"alias": f"rotated-{i}", "public_key": key.public}
        kill_during(node.edge, request_bytes("POST", KEYS, node.edge.admin_token, body), delay)
        files = version_files(f"4.{i}")
        by_key = signed(key_factory, key, manifest_of(files, version=f"4.{i}"))
        trusted = (f"rotated-{i}", key.fingerprint) in node.trusted_keys()
        started = node.remote.call("POST", TX, json=by_key)
        assert started.status_code == (201 if trusted else 422), started.text  # trusted exactly when listed
        again = node.remote.call("POST", KEYS, json=body, headers=node.remote.admin)
        assert again.status_code == (200 if trusted else 201), again.text
        node.push(by_key, files)
        assert node.served(f"4.{i}", files) == len(files)
        before.append((f"rotated-{i}", key.fingerprint))
        assert node.trusted_keys() == before  # every key trusted before is still trusted
    assert node.served("1.0", node.kept) == len(node.kept)


# ---------------------------------------------------------------- the Distribution service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    process = DistributionProcess(tmp_path / "distribution", env=FAST_RETRIES).start()
    try:
        yield Service(process)
    finally:
        code = process.stop()
    assert code == 0, process.log_tail()


def test_a_service_killed_while_it_creates_and_signs_a_bundle_has_it_whole_or_absent_and_the_same_request_finishes(
    service: Service,
) -> None:
    service.signed_bundle("1.0", version_files("1.0"))
    kept = {part: service.call("GET", f"{RELEASE_BUNDLE}/app/1.0/{part}") for part in ("manifest", "signature")}
    found = []
    for i, delay in enumerate((*DELAYS, 0.3)):
        version = f"2.{i}"
        files = version_files(version)
        for path, data in files.items():
            service.put_file(f"app/{version}/{path}", data)
        spec = {"queries": [{"pattern": f"{REPO}/app/{version}/*"}]}
        body = {"name": "app", "version": version, "spec": spec, "sign_immediately": True}
        create = request_bytes("POST", RELEASE_BUNDLE, service.process.admin_token, body)
        kill_during(service.process, create, delay)
        status, bundle = service.call("GET", f"{RELEASE_BUNDLE}/app/{version}")
        if status == 200:
            assert bundle["artifacts_count"] == len(files), bundle  # never some of its artifacts
            manifest = service.call("GET", f"{RELEASE_BUNDLE}/app/{version}/manifest")
            assert (manifest[0] == 200) == (bundle["state"] == "SIGNED"), (bundle, manifest)
            found.append(bundle["state"])
        else:
            assert status == 404, bundle
            found.append("absent")
        status, again = service.call("POST", RELEASE_BUNDLE, body)
        assert status == 201 and again["state"] == "SIGNED" and again["artifacts_count"] == len(files), again
        assert service.call("GET", f"{RELEASE_BUNDLE}/app/{version}/manifest")[0] == 200
    for part, answer in kept.items():
        assert service.call("GET", f"{RELEASE_BUNDLE}/app/1.0/{part}") == answer
    print("bundle found after each kill:", found)


def test_a_service_killed_while_its_push_waits_for_the_verify_step_completes_it_after_a_restart(
    service: Service, edge_server: EdgeProcess
) -> None:
    faults = Faults(only="/api/distribution/transactions/", only_method="GET")  # only the verify step asks that
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        trust(edge_server, public_key(service))
        service.add_edge("us-east-1", proxy.url, distributor_token(edge_server))
        v1, v2 = version_files("1.0"), version_files("2.0")
        service.signed_bundle("1.0", v1)
        assert service.wait("1.0", service.distribute("1.0"))["status"] == "Completed"
        service.signed_bundle("2.0", v2)
        faults.hang = True
        dist_id = service.distribute("2.0")
        deadline = time.monotonic() + GIVE_UP
        while ("app", "2.0") not in edge_bundles(edge_server):
            if time.monotonic() >= deadline:
                pytest.fail(f"2.0 was never committed: {service.status('2.0', dist_id)}")
            time.sleep(0.05)
        assert service.status("2.0", dist_id)["status"] == "In progress"  # committed, not yet verified
        # no call follows the held one before the service's read time-out: it is killed first
        faults.hang = False
        kill_and_restart(service.process)
        done = service.wait("2.0", dist_id)
    finally:
        proxy.stop()
    assert done["status"] == "Completed", done
    assert commits_logged(edge_server, "app", "2.0") == 1
    for version, files in (("1.0", v1), ("2.0", v2)):
        for path, data in files.items():
            assert download(edge_server.url, f"{REPO}/app/{version}/{path}") == (200, data)
