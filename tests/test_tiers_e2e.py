"""Edges feeding edges, end to end: the service, a parent edge and two child edges as real
processes. A distribution to the children crosses the service's link once, the parent relays
it, every child verifies it itself, status shows every tier, and a parent that dies mid-relay
either resumes its children when it returns or leaves them to the service after
``relay_timeout``."""

from __future__ import annotations

import functools
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
from devstack.services import SOURCE_REPO, EdgeProcess
from edge import relaying as relaying_module
from tests.edge_setup import distributor_token, download, http, trust
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.test_distribute_e2e import FAST_RETRIES, V1, Service, public_key, running_service, sites_of
from wire import protocol

LEAVES = [{"site_name": "leaf", "city_name": "*", "country_codes": ["*"]}]
# Files over 1 MiB each go up by PUT alone, so a counting proxy sees every blob byte.
FILES = {
    "app-2.0.0.tar.gz": os.urandom(3 * 1024 * 1024),
    "app-2.0.0.sig": os.urandom(1_200_000),
    "tools.zip": os.urandom(2 * 1024 * 1024),
}
BUNDLE_BYTES = sum(map(len, FILES.values()))


class Tiers:
    """A parent edge behind a counting proxy and two children, ``leaf-1`` and ``leaf-2``, each
    behind a proxy of its own (through which the parent relays to it)."""

    def __init__(self, base: Path) -> None:
        self.parent = EdgeProcess(base / "parent")
        self.children = [EdgeProcess(base / "leaf-1"), EdgeProcess(base / "leaf-2")]
        self.parent_faults = Faults()
        self.child_faults = [Faults(), Faults()]
        self.proxies: list[ThreadedServer] = []

    def start(self) -> Tiers:
        for edge in (self.parent, *self.children):
            edge.start()
        for edge, faults in zip((self.parent, *self.children), (self.parent_faults, *self.child_faults), strict=True):
            self.proxies.append(ThreadedServer(proxy_app(edge.url, faults)).start())
        return self

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        for edge in (self.parent, *self.children):
            edge.stop()

    def register(self, service: Service, *, trusting: tuple[bool, bool] = (True, True)) -> None:
        """The parent with ``edge add``, each child with ``edge add --via parent`` (the CLI)."""
        key = public_key(service)
        trust(self.parent, key)
        service.add_edge("parent", self.proxies[0].url, distributor_token(self.parent), ("region", "c", "US"))
        for i, (child, trusted) in enumerate(zip(self.children, trusting, strict=True), start=1):
            if trusted:
                trust(child, key)
            cli(service, "edge", "add", "--url", self.proxies[i].url, "--site", "leaf", "--city", "c",
                "--country", "US", "--token", distributor_token(child), "--via", "parent", f"leaf-{i}")  # fmt: skip


def cli(service: Service, *args: str) -> str:
    env = service_environment({"DISTRIBUTION_URL": service.process.url})
    env["DISTRIBUTION_TOKEN"] = service.process.admin_token
    done = subprocess.run([find_program("distribution"), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[Tiers]:
    started = Tiers(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()


def serves_everything(edge: EdgeProcess, version: str) -> None:
    for path, data in FILES.items():
        status, body = download(edge.url, f"{SOURCE_REPO}/app/{version}/{path}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest(), path


def distribute_to_leaves(service: Service, version: str) -> int:
    service.signed_bundle(version, FILES)
    status, body = service.call("POST", f"{V1}/distribution/app/{version}", {"distribution_rules": LEAVES})
    assert status == 202, body
    assert sorted(s["name"] for s in body["sites"]) == ["leaf-1", "leaf-2", "parent"]  # the parent keeps it too
    return int(body["id"])


def relaying(status: dict[str, Any]) -> bool:
    """The parent committed and its relays have begun, without finishing."""
    sites = sites_of(status)
    return (
        sites["parent"]["status"] == "Completed"
        and sites["leaf-1"]["status"] == sites["leaf-2"]["status"] == "In progress"
    )


def test_a_distribution_to_children_crosses_the_services_link_once_and_status_shows_every_tier(
    tmp_path: Path, tiers: Tiers
) -> None:
    for service in running_service(tmp_path / "distribution", FAST_RETRIES):
        tiers.register(service)
        listed = cli(service, "edge", "list")
        assert "via parent" in listed and listed.count("via parent") == 2
        dist_id = distribute_to_leaves(service, "2.0.0")
        final = service.wait("2.0.0", dist_id)
        sites = sites_of(final)
        assert final["status"] == "Completed", final
        for name in ("parent", "leaf-1", "leaf-2"):
            site = sites[name]
            assert site["status"] == "Completed", site
            assert (site["distributed_files"], site["distributed_bytes"]) == (len(FILES), BUNDLE_BYTES)
        for child in tiers.children:
            serves_everything(child, "2.0.0")
        serves_everything(tiers.parent, "2.0.0")
        # the service's link carried every blob once, to the parent; the children got them from it
        assert tiers.parent_faults.upload_bytes == BUNDLE_BYTES
        assert [f.upload_bytes for f in tiers.child_faults] == [BUNDLE_BYTES, BUNDLE_BYTES]
        text = cli(service, "status", "app", "2.0.0")
        assert all(name in text for name in ("parent", "leaf-1", "leaf-2"))


def test_a_child_that_does_not_trust_the_key_fails_alone_with_its_own_words(tmp_path: Path, tiers: Tiers) -> None:
    for service in running_service(tmp_path / "distribution", FAST_RETRIES):
        tiers.register(service, trusting=(True, False))
        final = service.wait("2.0.0", distribute_to_leaves(service, "2.0.0"))
        sites = sites_of(final)
        assert final["status"] == "Failed"
        assert (sites["parent"]["status"], sites["leaf-1"]["status"]) == ("Completed", "Completed")
        assert sites["leaf-2"]["status"] == "Failed"
        error = sites["leaf-2"]["general_error"]
        assert "relayed by parent" in error and "leaf-2" in error and "refused with 422" in error, error
        serves_everything(tiers.children[0], "2.0.0")
        assert download(tiers.children[1].url, f"{SOURCE_REPO}/app/2.0.0/tools.zip")[0] == 404


def kill_the_parent_mid_relay(service: Service, tiers: Tiers) -> int:
    """Distribute to the children, through proxies slowed so the relays take some ten seconds,
    and kill the parent with SIGKILL once both relays are under way; answers the distribution."""
    for faults in tiers.child_faults:
        faults.upload_rate = 512 * 1024
    tiers.register(service)
    dist_id = distribute_to_leaves(service, "2.0.0")
    service.wait("2.0.0", dist_id, relaying)
    os.kill(tiers.parent.pid, signal.SIGKILL)
    tiers.parent.wait(30)
    return dist_id


def test_a_parent_killed_mid_relay_resumes_its_childrens_jobs_when_it_returns(tmp_path: Path, tiers: Tiers) -> None:
    for service in running_service(tmp_path / "distribution", FAST_RETRIES):
        dist_id = kill_the_parent_mid_relay(service, tiers)
        tiers.parent.start()
        final = service.wait("2.0.0", dist_id)
        assert final["status"] == "Completed", final
        for child in tiers.children:
            serves_everything(child, "2.0.0")
        assert tiers.parent_faults.upload_bytes == BUNDLE_BYTES  # nothing pushed to the parent again
        assert "pushing directly" not in service.process.log_tail(400)
        restarted = tiers.parent.log_tail(400).rpartition("--- ")[2]  # the log since the restart
        assert restarted.count("committed and verified") == 2, restarted


def test_a_parent_killed_and_kept_dead_leaves_its_children_to_the_service_after_relay_timeout(
    tmp_path: Path, tiers: Tiers
) -> None:
    for service in running_service(tmp_path / "distribution", FAST_RETRIES | {"DISTRIBUTION_RELAY_TIMEOUT": "3"}):
        dist_id = kill_the_parent_mid_relay(service, tiers)
        for faults in tiers.child_faults:
            faults.upload_rate = None
        final = service.wait("2.0.0", dist_id)
        sites = sites_of(final)
        assert final["status"] == "Completed", final
        assert sites["leaf-1"]["status"] == sites["leaf-2"]["status"] == "Completed"
        for child in tiers.children:
            serves_everything(child, "2.0.0")
        assert "pushing directly: parent edge parent has not answered" in service.process.log_tail(400)


def transaction_ended(edge: EdgeProcess, tx: str) -> bool:
    """The edge holds nothing of transaction ``tx`` open: aborted, or never started."""
    status, answer = http("GET", edge.url + protocol.transaction_path(tx), distributor_token(edge))
    return status == 404 or answer["state"] == "ABORTED"


def wait_until(check: Any, what: str, tries: int = 300) -> Any:
    """``check()`` once it answers something true, looked at every 0.1 s a bounded number of times."""
    for _ in range(tries):
        if found := check():
            return found
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def test_a_relay_aborted_on_the_parent_starts_nothing_again_and_aborts_the_childs_transaction(
    tmp_path: Path, tiers: Tiers
) -> None:
    """With the service gone, only the parent can end the child's transaction: a relay that is
    retrying uploads the child refuses stops at its next look at its row, and aborts it."""
    faults = tiers.child_faults[0]
    faults.only, faults.server_errors = "/blobs/", 10**6  # every upload to leaf-1 fails: its relay retries
    tiers.child_faults[1].upload_rate = 256 * 1024
    for service in running_service(tmp_path / "distribution", FAST_RETRIES):
        tiers.register(service)
        dist_id = distribute_to_leaves(service, "2.0.0")
        service.wait("2.0.0", dist_id, relaying)
        assert service.process.stop() == 0
    token = distributor_token(tiers.parent)
    tx = http("GET", tiers.parent.url + protocol.BUNDLES, token)[1][0]["manifest_sha256"]
    path = tiers.parent.url + protocol.relay_path(tx, "leaf-1")
    wait_until(lambda: "retrying" in http("GET", path, token)[1]["error"], "the relay to leaf-1 retrying")
    status, relay = http("POST", tiers.parent.url + protocol.relay_abort_path(tx, "leaf-1"), token)
    assert status == 200 and relay["state"] == "ABORTED", relay
    child = tiers.children[0]
    wait_until(lambda: transaction_ended(child, tx), "the transaction on leaf-1 aborted by the parent")
    starts = [call for call in faults.seen if call[:2] == ("POST", protocol.TRANSACTIONS)]
    time.sleep(2 * relaying_module.FLUSH_SECONDS + relaying_module.BACKOFF_CAP)  # a retry would have begun by now
    assert [call for call in faults.seen if call[:2] == ("POST", protocol.TRANSACTIONS)] == starts
    assert transaction_ended(child, tx) and download(child.url, f"{SOURCE_REPO}/app/2.0.0/tools.zip")[0] == 404
    # the abort was the relay to leaf-1's alone
    assert http("GET", tiers.parent.url + protocol.relay_path(tx, "leaf-2"), token)[1]["state"] != "ABORTED"


def test_an_abort_mid_relay_stops_the_parents_relays_and_an_undistribute_reaches_the_children(
    tmp_path: Path, tiers: Tiers
) -> None:
    for faults in tiers.child_faults:
        faults.upload_rate = 256 * 1024
    for service in running_service(tmp_path / "distribution", FAST_RETRIES):
        tiers.register(service)
        dist_id = distribute_to_leaves(service, "2.0.0")
        service.wait("2.0.0", dist_id, relaying)
        assert service.call("PUT", f"{V1}/distribution/app/2.0.0/abort")[0] == 202
        sites = sites_of(service.wait("2.0.0", dist_id))
        assert sites["parent"]["status"] == "Completed"
        assert sites["leaf-1"]["status"] == sites["leaf-2"]["status"] == "Failed"
        token = distributor_token(tiers.parent)
        _, bundles = http("GET", tiers.parent.url + protocol.BUNDLES, token)
        tx = bundles[0]["manifest_sha256"]
        for name in ("leaf-1", "leaf-2"):
            path = tiers.parent.url + protocol.relay_path(tx, name)
            wait_until(lambda p=path, t=token: http("GET", p, t)[1]["state"] == "ABORTED", f"the relay to {name}")
        for name, child in zip(("leaf-1", "leaf-2"), tiers.children, strict=True):
            # The child's own transaction ends aborted, with nothing of the bundle there. The service
            # aborts it beside stopping the relay; the relay aborts it again once it stops (at its
            # next flush), in case one of its calls had opened it again meanwhile.
            wait_until(functools.partial(transaction_ended, child, tx), f"the transaction on {name} aborted")
            assert download(child.url, f"{SOURCE_REPO}/app/2.0.0/tools.zip")[0] == 404

        for faults in tiers.child_faults:
            faults.upload_rate = None
        again = service.distribute("2.0.0")
        assert service.wait("2.0.0", again)["status"] == "Completed"
        for child in tiers.children:
            serves_everything(child, "2.0.0")
        status, body = service.call("POST", f"{V1}/distribution/app/2.0.0/delete", {"distribution_rules": LEAVES})
        assert status == 202 and sorted(s["name"] for s in body["sites"]) == ["leaf-1", "leaf-2"]
        assert service.wait("2.0.0", int(body["id"]))["status"] == "Completed"
        for child in tiers.children:
            assert download(child.url, f"{SOURCE_REPO}/app/2.0.0/tools.zip")[0] == 404
        serves_everything(tiers.parent, "2.0.0")  # the parent was not asked to remove it
