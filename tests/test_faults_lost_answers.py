"""Dropped connections: an edge carries out a call, and its answer never reaches the Distribution service.

The proxy in tests/fault_servers.py stands in front of a real ``edge serve`` process, forwards
one call of a phase, then closes the connection instead of answering, and holds the calls
that follow until the test has looked at the edge directly. What a release manager relies
on: the service retries, the retry finds the work done (every step is idempotent), the
outcome is what it would have been without the fault, and at no moment is part of a bundle
visible or a bundle committed earlier lost. The service runs in-process; the edge is real.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.orders import key_alias
from tests.conftest import admin
from tests.edge_process import EdgeProcess
from tests.edge_setup import download, http, trust
from tests.fault_servers import Faults, ThreadedServer, proxy_app
from tests.test_distribution_jobs import EVERYWHERE, V1, distribute, signed_bundle, status_of, wait_for
from tests.test_edge_transactions import KEYS, TX
from tests.test_threats_distribution import commits_logged, dist_settings, edge_bundles, register_trusted, staged_parts

REPO = "releases-local"
SHARED = b"# app\nthe same bytes in every version\n"
# A hang guard, not a speed check: the proxy loses an answer within a few calls.
GIVE_UP = 60.0


def files_of(version: str) -> dict[str, bytes]:
    """A version's files: one blob shared by every version, the others its own."""
    return {"README.md": SHARED, "app.bin": os.urandom(300_000), "notes.txt": f"notes {version}\n".encode()}


def served(edge: EdgeProcess, version: str, files: dict[str, bytes]) -> int:
    """How many of the version's files the edge serves, each checked byte for byte."""
    count = 0
    for path, data in files.items():
        status, body = download(edge.url, f"{REPO}/app/{version}/{path}")
        assert status in (200, 404), (path, status)
        if status == 200:
            assert body == data, path
            count += 1
    return count


async def wait_until_lost(faults: Faults) -> None:
    """Until the proxy has lost an answer (the service runs on this event loop: never block it)."""
    deadline = time.monotonic() + GIVE_UP
    while not faults.lost:
        if time.monotonic() >= deadline:
            pytest.fail(f"no answer was lost: {faults.seen}")
        await asyncio.sleep(0.05)


def finished(status: dict[str, Any]) -> bool:
    return status["status"] in ("Completed", "Failed")


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await aiohttp_client(create_app(dist_settings(tmp_path / "dist")))


@pytest.fixture
def proxied(edge_server: EdgeProcess) -> Iterator[tuple[ThreadedServer, Faults]]:
    faults = Faults()
    proxy = ThreadedServer(proxy_app(edge_server.url, faults)).start()
    try:
        yield proxy, faults
    finally:
        if faults.release is not None:
            faults.release.set()
        proxy.stop()


async def completed(dist: Any, version: str, files: dict[str, bytes]) -> None:
    await signed_bundle(dist, version, files)
    done = await wait_for(dist, version, await distribute(dist, version), finished)
    assert done["status"] == "Completed", done


# phase -> (the calls whose first answer is lost, whether the bundle is visible once it is)
PHASES = {
    "start": ("/api/distribution/transactions", False),
    "upload": ("/blobs", False),
    "commit": ("/commit", True),
    "verify": ("/api/storage/", True),
}


@pytest.mark.parametrize("phase", list(PHASES))
async def test_an_answer_lost_in_any_phase_of_a_push_is_retried_to_the_same_outcome_with_nothing_partial_seen(
    dist: Any, edge_server: EdgeProcess, proxied: tuple[ThreadedServer, Faults], phase: str
) -> None:
    proxy, faults = proxied
    await register_trusted(dist, edge_server, url=proxy.url)
    v1, v2 = files_of("1.0"), files_of("2.0")
    await completed(dist, "1.0", v1)
    await signed_bundle(dist, "2.0", v2)
    manifest = await (await dist.get(f"{V1}/release_bundle/app/2.0/manifest", headers=admin())).read()
    tid = hashlib.sha256(manifest).hexdigest()
    faults.only, visible = PHASES[phase]
    faults.release = threading.Event()
    faults.lose_answers = 1
    dist_id = await distribute(dist, "2.0")

    await wait_until_lost(faults)  # the edge did the call; the service heard nothing; its retry is held
    assert served(edge_server, "2.0", v2) == (len(v2) if visible else 0)
    state = http("GET", f"{edge_server.url}{TX}/{tid}", edge_server.admin_token)[1]["state"]
    assert state == ("COMMITTED" if visible else "OPEN")
    assert not finished(await status_of(dist, "2.0", dist_id))
    assert served(edge_server, "1.0", v1) == len(v1)
    faults.release.set()

    done = await wait_for(dist, "2.0", dist_id, finished)
    assert done["status"] == "Completed", done
    assert served(edge_server, "2.0", v2) == len(v2)
    assert served(edge_server, "1.0", v1) == len(v1)
    assert edge_bundles(edge_server) == [("app", "1.0"), ("app", "2.0")]
    assert commits_logged(edge_server, "app", "2.0") == 1
    assert not staged_parts(edge_server)


async def test_a_lost_answer_to_an_undistribute_is_retried_and_removes_that_version_alone(
    dist: Any, edge_server: EdgeProcess, proxied: tuple[ThreadedServer, Faults]
) -> None:
    proxy, faults = proxied
    await register_trusted(dist, edge_server, url=proxy.url)
    v1, v2 = files_of("1.0"), files_of("2.0")
    await completed(dist, "1.0", v1)
    await completed(dist, "2.0", v2)
    faults.only = "/api/distribution/bundles/app/2.0"
    faults.release = threading.Event()
    faults.lose_answers = 1
    resp = await dist.post(
        f"{V1}/distribution/app/2.0/delete",
        json={"distribution_rules": EVERYWHERE},
        headers=admin(),
    )
    assert resp.status == 202, await resp.text()
    dist_id = int((await resp.json())["id"])

    await wait_until_lost(faults)
    assert served(edge_server, "2.0", v2) == 0  # removed whole, though the service does not know yet
    assert served(edge_server, "1.0", v1) == len(v1)  # the blob it shares with 2.0 is kept for it
    assert not finished(await status_of(dist, "2.0", dist_id))
    faults.release.set()

    done = await wait_for(dist, "2.0", dist_id, finished)
    assert done["status"] == "Completed", done
    assert edge_bundles(edge_server) == [("app", "1.0")]
    assert served(edge_server, "1.0", v1) == len(v1)


async def test_a_lost_answer_to_a_key_propagation_says_failure_and_propagating_again_trusts_the_key_once(
    dist: Any, edge_server: EdgeProcess, proxied: tuple[ThreadedServer, Faults]
) -> None:
    """Keys reach an edge registered with its admin token (a distributor token may not widen trust)."""
    proxy, faults = proxied
    public = await (await dist.get(f"{V1}/keys/gpg/public")).text()
    trust(edge_server, public, alias="dist-main")  # trusted by hand first, as an operator does
    body = {"name": "us-east-1", "url": proxy.url, "site_name": "s", "city_name": "c", "country_code": "US"}
    added = await dist.post(f"{V1}/edges", json=body | {"token": edge_server.admin_token}, headers=admin())
    assert added.status == 201, await added.text()
    v1 = files_of("1.0")
    await completed(dist, "1.0", v1)
    faults.only, faults.lose_answers = KEYS, 1

    first = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
    assert faults.lost == 1
    (detail,) = first["details"]
    assert first["status"] == "FAILURE" and "cannot reach the edge" in detail["message"], first
    again = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
    assert again["status"] == "SUCCESS", again

    listed = http("GET", edge_server.artifactory_url + KEYS.removeprefix("/artifactory"), edge_server.admin_token)[1]
    (fingerprint,) = {k["fingerprint"] for k in listed["keys"]}
    assert sorted(k["alias"] for k in listed["keys"]) == sorted(["dist-main", key_alias(fingerprint)])
    assert served(edge_server, "1.0", v1) == len(v1)
