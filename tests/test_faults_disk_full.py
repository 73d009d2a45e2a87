"""A full disk (ENOSPC) in every phase that writes: each refusal is a 507, nothing changes.

The edge's (or the service's) data directory sits on a small tmpfs and the test fills the
rest of it with a file of its own, so the kernel itself answers ENOSPC to sqlite and to gpg;
nothing is simulated. What an operator relies on: a node whose disk is full says so (507,
which the Distribution service retries), keeps serving everything it published, shows
nothing half done, and does the same request normally once there is room again.
(An upload that fills the disk itself: tests/test_disk_full.py.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.services import EdgeProcess
from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests import test_disk_full
from tests.conftest import ADMIN_TOKEN, admin
from tests.edge_setup import served
from tests.gpg_keys import KeyFactory, KeySet
from tests.test_distribution_api import create_body, flat_error
from tests.test_edge_transactions import BUNDLES, KEYS, REPO, TX, Remote, manifest_of, sha256, signed, tx_id
from wire.published import published_digest

small_disk = test_disk_full.small_disk  # the fixture: a small tmpfs mounted for the test
FULL = "Insufficient storage: the node is out of disk space"
V1 = {f"v1/f{i}.txt": os.urandom(3000) for i in range(20)}
V2 = {f"v2/f{i}.txt": os.urandom(3000) for i in range(20)}


class Filler:
    """Takes every free byte of a filesystem with one file, and gives it back."""

    def __init__(self, mount: Path) -> None:
        self.path = mount / "filler"

    def fill(self) -> None:
        """Unbuffered, so a last write that fits only in part leaves nothing to flush at close;
        smaller writes then take what is left, whatever the free space was a multiple of."""
        with open(self.path, "ab", buffering=0) as f:
            for size in (65536, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        st = os.statvfs(self.path.parent)
        assert st.f_bavail == 0

    def free(self) -> None:
        self.path.unlink()


@dataclass
class Node:
    edge: EdgeProcess
    remote: Remote
    disk: Filler
    v2: dict[str, str]  # the signed start body of version 2

    def served(self, version: str, files: dict[str, bytes]) -> int:
        return served(self.edge, version, files)

    def keys(self) -> list[tuple[str, str]]:
        listed = self.remote.call("GET", KEYS, headers=self.remote.admin).json()["keys"]
        return [(k["alias"], k["fingerprint"]) for k in listed]

    def trust(self, alias: str, public_key: str) -> Any:
        body = {"alias": alias, "public_key": public_key}
        return self.remote.call("POST", KEYS, json=body, headers=self.remote.admin)

    def bundles(self) -> list[tuple[str, str]]:
        return [(b["name"], b["version"]) for b in self.remote.call("GET", BUNDLES).json()]


def push(remote: Remote, body: dict[str, str], files: dict[str, bytes], *, commit: bool = True) -> None:
    tid = tx_id(body)
    assert remote.call("POST", TX, json=body).status_code == 201
    for data in files.values():
        assert remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(data)}", data=data).status_code in (200, 201)
    if commit:
        assert remote.call("POST", f"{TX}/{tid}/commit").status_code == 200


def full(resp: Any) -> None:
    assert resp.status_code == 507, resp.text
    assert resp.json() == {"errors": [{"status": 507, "message": FULL}]}


@pytest.fixture
def node(small_disk: Path, keys: KeySet, key_factory: KeyFactory) -> Iterator[Node]:
    """An edge on a small disk that trusts alice and serves version 1.0 of a bundle."""
    with EdgeProcess(small_disk / "edge") as edge:
        remote = Remote(edge)
        node = Node(edge, remote, Filler(small_disk), signed(key_factory, keys.alice, manifest_of(V2, version="2.0")))
        assert node.trust("a", keys.alice.public).ok
        push(remote, signed(key_factory, keys.alice, manifest_of(V1, version="1.0")), V1)
        yield node


def test_a_start_on_a_full_disk_is_a_507_that_opens_nothing_and_the_same_start_succeeds_with_room(
    node: Node,
) -> None:
    node.disk.fill()
    full(node.remote.call("POST", TX, json=node.v2))
    assert node.remote.call("GET", f"{TX}/{tx_id(node.v2)}").status_code == 404
    assert node.served("1.0", V1) == len(V1)
    node.disk.free()
    push(node.remote, node.v2, V2)
    assert node.served("2.0", V2) == len(V2)


def test_a_commit_on_a_full_disk_is_a_507_that_shows_nothing_and_the_same_commit_succeeds_with_room(
    node: Node,
) -> None:
    push(node.remote, node.v2, V2, commit=False)
    node.disk.fill()
    full(node.remote.call("POST", f"{TX}/{tx_id(node.v2)}/commit"))
    assert node.served("2.0", V2) == 0
    assert node.remote.call("GET", f"{TX}/{tx_id(node.v2)}").json()["state"] == "OPEN"
    assert node.served("1.0", V1) == len(V1)
    node.disk.free()
    assert node.remote.call("POST", f"{TX}/{tx_id(node.v2)}/commit").json()["state"] == "COMMITTED"
    assert node.served("2.0", V2) == len(V2)
    assert node.bundles() == [("app", "1.0"), ("app", "2.0")]


def test_a_full_edge_still_answers_everything_the_services_verify_step_reads(node: Node) -> None:
    node.disk.fill()
    bundles = node.remote.call("GET", BUNDLES).json()
    (v1,) = bundles
    status = node.remote.call("GET", f"{TX}/{v1['manifest_sha256']}").json()
    assert (status["state"], status["missing"]) == ("COMMITTED", [])
    entries = [(f"{REPO}/app/1.0/{path}", sha256(data), len(data)) for path, data in V1.items()]
    assert status["published"] == {"files": len(V1), "bytes": sum(map(len, V1.values())),
                                   "sha256": published_digest(entries)}  # fmt: skip
    assert node.served("1.0", V1) == len(V1)


def test_an_undistribute_on_a_full_disk_is_a_507_that_removes_nothing_and_succeeds_with_room(node: Node) -> None:
    node.disk.fill()
    full(node.remote.call("DELETE", f"{BUNDLES}/app/1.0"))
    assert node.served("1.0", V1) == len(V1)
    assert node.bundles() == [("app", "1.0")]
    node.disk.free()
    assert node.remote.call("DELETE", f"{BUNDLES}/app/1.0").status_code == 204
    assert node.served("1.0", V1) == 0 and node.bundles() == []


def test_a_key_trusted_on_a_full_disk_is_a_507_that_trusts_nothing_and_succeeds_with_room(
    node: Node, keys: KeySet, key_factory: KeyFactory
) -> None:
    before = node.keys()
    by_bob = signed(key_factory, keys.bob, manifest_of(V2, version="2.0"))
    node.disk.fill()
    full(node.trust("b", keys.bob.public))
    assert node.keys() == before
    node.disk.free()
    assert node.remote.call("POST", TX, json=by_bob).status_code == 422  # bob is still not trusted
    trusted = node.trust("b", keys.bob.public)
    assert trusted.status_code == 201, trusted.text
    assert node.keys() == [*before, ("b", keys.bob.fingerprint)]
    push(node.remote, by_bob, V2)
    assert node.served("1.0", V1) == len(V1)


# ---------------------------------------------------------------- the Distribution service


@pytest.fixture
async def service(aiohttp_client: Any, small_disk: Path) -> tuple[Any, Filler]:
    settings = DistributionSettings(data_dir=small_disk / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    client = await aiohttp_client(create_app(settings))
    for version in ("1.0", "2.0"):
        for i in range(5):
            resp = await client.put(f"/artifactory/{REPO}/app/{version}/f{i}", data=os.urandom(2000), headers=admin())
            assert resp.status == 201, await resp.text()
    return client, Filler(small_disk)


async def bundle_state(client: Any) -> dict[str, Any]:
    """Everything a release manager can read of the bundles: the list, and 1.0's signed parts."""
    v1 = "/distribution/api/v1/release_bundle/app/1.0"
    listed = await (await client.get("/distribution/api/v1/release_bundle", headers=admin())).json()
    manifest = await (await client.get(f"{v1}/manifest", headers=admin())).read()
    signature = await (await client.get(f"{v1}/signature", headers=admin())).read()
    return {"bundles": listed, "manifest": manifest, "signature": signature}


async def test_a_bundle_created_or_signed_on_a_full_disk_is_a_507_that_stores_nothing_and_succeeds_with_room(
    service: tuple[Any, Filler],
) -> None:
    client, disk = service
    v1 = create_body("1.0", f"{REPO}/app/1.0/*", sign_immediately=True)
    assert (await client.post("/distribution/api/v1/release_bundle", json=v1, headers=admin())).status == 201
    before = await bundle_state(client)
    v2 = create_body("2.0", f"{REPO}/app/2.0/*")
    disk.fill()
    refused = await client.post("/distribution/api/v1/release_bundle", json=v2, headers=admin())
    assert await flat_error(refused) == (507, FULL)
    assert await bundle_state(client) == before
    disk.free()
    assert (await client.post("/distribution/api/v1/release_bundle", json=v2, headers=admin())).status == 201
    opened = await bundle_state(client)
    disk.fill()
    refused = await client.post("/distribution/api/v1/release_bundle/app/2.0/sign", json={}, headers=admin())
    assert await flat_error(refused) == (507, FULL)
    assert await bundle_state(client) == opened  # 2.0 still OPEN, no signature made
    assert (await client.get("/distribution/api/v1/release_bundle/app/2.0/signature", headers=admin())).status == 404
    disk.free()
    signed_now = await client.post("/distribution/api/v1/release_bundle/app/2.0/sign", json={}, headers=admin())
    assert signed_now.status == 200 and (await signed_now.json())["state"] == "SIGNED"
    after = await bundle_state(client)
    assert (after["manifest"], after["signature"]) == (before["manifest"], before["signature"])
