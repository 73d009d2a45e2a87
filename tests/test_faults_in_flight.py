"""Faults between the Distribution service and an edge: answers lost, and bytes damaged.

The proxy in tests/fault_servers.py stands in front of a real ``edge serve`` process; the
service runs in-process and pushes through it.

A lost answer: the proxy forwards one call of a phase, then closes the connection instead of
answering, and holds the calls that follow until the test has looked at the edge directly.
What a release manager relies on: the service retries, the retry finds the work done (every
step is idempotent), and the outcome is what it would have been without the fault.

A damaged byte: the proxy flips one byte of a request body, or the service's own copy of a
blob has one byte changed at rest. The edge refuses what does not match the signed manifest,
the distribution fails saying so, and a new distribution (of sound bytes) completes.

Either way, at no moment is part of a bundle visible, and nothing committed earlier is lost.
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

from devstack.services import EdgeProcess
from distribution.app import create_app
from distribution.orders import key_alias
from tests.conftest import admin
from tests.edge_setup import http, served, trust
from tests.fault_servers import Faults, ThreadedServer, flip_byte, proxy_app
from tests.test_distribution_jobs import EVERYWHERE, V1, distribute, finished, signed_bundle, status_of, wait_for
from tests.test_edge_transactions import KEYS, TX
from tests.test_threats_distribution import commits_logged, dist_settings, edge_bundles, register_trusted, staged_parts

REPO = "releases-local"
SHARED = b"# app\nthe same bytes in every version\n"
# A hang guard, not a speed check: the proxy loses an answer within a few calls.
GIVE_UP = 60.0


def files_of(version: str) -> dict[str, bytes]:
    """A version's files: one blob shared by every version, the others its own."""
    return {"README.md": SHARED, "app.bin": os.urandom(300_000), "notes.txt": f"notes {version}\n".encode()}


async def wait_until_lost(faults: Faults) -> None:
    """Until the proxy has lost an answer (the service runs on this event loop: never block it)."""
    deadline = time.monotonic() + GIVE_UP
    while not faults.lost:
        if time.monotonic() >= deadline:
            pytest.fail(f"no answer was lost: {faults.seen}")
        await asyncio.sleep(0.05)


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


async def one_version_pushed(
    dist: Any, edge: EdgeProcess, proxy: ThreadedServer | None = None
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The edge, trusting the service and registered (through ``proxy``, if any), serves 1.0 of
    the bundle; 2.0 is signed. Answers the files of both."""
    await register_trusted(dist, edge, url=proxy.url if proxy else None)
    v1, v2 = files_of("1.0"), files_of("2.0")
    await completed(dist, "1.0", v1)
    await signed_bundle(dist, "2.0", v2)
    return v1, v2


def losing_one_answer(faults: Faults, only: str, method: str = "") -> threading.Event:
    """From now on the proxy loses the answer of the next call to ``only`` (by ``method``, if
    given) and holds the calls that follow it until the event it answers is set."""
    faults.only, faults.only_method, faults.lose_answers, faults.release = only, method, 1, threading.Event()
    return faults.release


# phase -> (the calls whose first answer is lost, and their method if it tells them apart,
# whether the bundle is visible once it is); the verify step alone asks for a transaction's status
PHASES = {
    "start": ("/api/distribution/transactions", "", False),
    "upload": ("/blobs", "", False),
    "commit": ("/commit", "", True),
    "verify": ("/api/distribution/transactions/", "GET", True),
}


@pytest.mark.parametrize("phase", list(PHASES))
async def test_an_answer_lost_in_any_phase_of_a_push_is_retried_to_the_same_outcome_with_nothing_partial_seen(
    dist: Any, edge_server: EdgeProcess, proxied: tuple[ThreadedServer, Faults], phase: str
) -> None:
    proxy, faults = proxied
    v1, v2 = await one_version_pushed(dist, edge_server, proxy)
    manifest = await (await dist.get(f"{V1}/release_bundle/app/2.0/manifest", headers=admin())).read()
    tid = hashlib.sha256(manifest).hexdigest()
    only, method, visible = PHASES[phase]
    release = losing_one_answer(faults, only, method)
    dist_id = await distribute(dist, "2.0")

    await wait_until_lost(faults)  # the edge did the call; the service heard nothing; its retry is held
    assert served(edge_server, "2.0", v2) == (len(v2) if visible else 0)
    state = http("GET", f"{edge_server.url}{TX}/{tid}", edge_server.admin_token)[1]["state"]
    assert state == ("COMMITTED" if visible else "OPEN")
    assert not finished(await status_of(dist, "2.0", dist_id))
    assert served(edge_server, "1.0", v1) == len(v1)
    release.set()

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
    v1, v2 = await one_version_pushed(dist, edge_server, proxy)
    assert (await wait_for(dist, "2.0", await distribute(dist, "2.0"), finished))["status"] == "Completed"
    release = losing_one_answer(faults, "/api/distribution/bundles/app/2.0")
    resp = await dist.post(
        f"{V1}/distribution/app/2.0/delete", json={"distribution_rules": EVERYWHERE}, headers=admin()
    )
    assert resp.status == 202, await resp.text()
    dist_id = int((await resp.json())["id"])

    await wait_until_lost(faults)
    assert served(edge_server, "2.0", v2) == 0  # removed whole, though the service does not know yet
    assert served(edge_server, "1.0", v1) == len(v1)  # the blob it shares with 2.0 is kept for it
    assert not finished(await status_of(dist, "2.0", dist_id))
    release.set()

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


# ---------------------------------------------------------------- damaged bytes


async def failed_then_completed(dist: Any, edge: EdgeProcess, v1: dict[str, bytes], v2: dict[str, bytes]) -> str:
    """Distribute 2.0 once (it must fail, showing nothing), then again (it must complete); the first error."""
    failed = await wait_for(dist, "2.0", await distribute(dist, "2.0"), finished)
    assert failed["status"] == "Failed", failed
    assert served(edge, "2.0", v2) == 0
    assert served(edge, "1.0", v1) == len(v1)
    assert edge_bundles(edge) == [("app", "1.0")]
    (site,) = failed["sites"]
    await completed_again(dist, edge, v2)
    return str(site["general_error"])


async def completed_again(dist: Any, edge: EdgeProcess, v2: dict[str, bytes]) -> None:
    done = await wait_for(dist, "2.0", await distribute(dist, "2.0"), finished)
    assert done["status"] == "Completed", done
    assert served(edge, "2.0", v2) == len(v2)
    assert commits_logged(edge, "app", "2.0") == 1
    assert not staged_parts(edge)


def other_digest(body: bytes) -> bytes:
    """The start body (the manifest) with one hex digit of its first sha256 changed: still a
    canonical manifest, which only its signature tells from the one signed."""
    at = body.index(b'sha256":"') + len(b'sha256":"')
    return body[:at] + (b"1" if body[at : at + 1] == b"0" else b"0") + body[at + 1 :]


@pytest.mark.parametrize(
    ("only", "damage", "refusal"),
    [
        (TX, lambda body: flip_byte(body, 0), "refused with 422: Signature refused: bad signature"),
        (TX, other_digest, "refused with 422: Signature refused: bad signature"),
        ("/blobs", None, "refused with 422: Blob refused, its bytes do not match the manifest"),
    ],
    ids=["start-unreadable", "start-manifest-changed", "upload"],
)
async def test_a_byte_damaged_on_the_way_to_an_edge_is_refused_fails_the_push_saying_so_and_shows_nothing(
    dist: Any, edge_server: EdgeProcess, proxied: tuple[ThreadedServer, Faults], only: str, damage: Any, refusal: str
) -> None:
    proxy, faults = proxied
    v1, v2 = await one_version_pushed(dist, edge_server, proxy)
    faults.only, faults.damage_bodies = only, 1
    faults.damage = damage or faults.damage
    error = await failed_then_completed(dist, edge_server, v1, v2)
    assert faults.damage_bodies == 0 and refusal in error, error


async def test_a_blob_changed_by_one_byte_in_the_services_store_is_refused_by_name_and_shows_nothing(
    dist: Any, edge_server: EdgeProcess, tmp_path: Path
) -> None:
    v1, v2 = await one_version_pushed(dist, edge_server)
    sha = hashlib.sha256(v2["app.bin"]).hexdigest()
    (stored,) = (tmp_path / "dist").rglob(sha)
    damaged = bytearray(v2["app.bin"])
    damaged[len(damaged) // 2] ^= 0x01  # same size: only the bytes tell
    stored.write_bytes(bytes(damaged))
    failed = await wait_for(dist, "2.0", await distribute(dist, "2.0"), finished)
    assert failed["status"] == "Failed", failed
    (site,) = failed["sites"]
    assert sha in site["general_error"] and "422" in site["general_error"], site
    assert served(edge_server, "2.0", v2) == 0
    assert served(edge_server, "1.0", v1) == len(v1)
    stored.write_bytes(v2["app.bin"])  # the operator restores the blob from a backup
    await completed_again(dist, edge_server, v2)


async def test_a_public_key_damaged_on_the_way_to_an_edge_is_refused_and_trusts_nothing(
    dist: Any, edge_server: EdgeProcess, proxied: tuple[ThreadedServer, Faults]
) -> None:
    proxy, faults = proxied
    public = await (await dist.get(f"{V1}/keys/gpg/public")).text()
    trust(edge_server, public, alias="dist-main")
    body = {"name": "us-east-1", "url": proxy.url, "site_name": "s", "city_name": "c", "country_code": "US"}
    added = await dist.post(f"{V1}/edges", json=body | {"token": edge_server.admin_token}, headers=admin())
    assert added.status == 201, await added.text()
    v1 = files_of("1.0")
    await completed(dist, "1.0", v1)
    keys_url = edge_server.artifactory_url + KEYS.removeprefix("/artifactory")
    before = http("GET", keys_url, edge_server.admin_token)[1]
    faults.only, faults.damage_bodies = KEYS, 1

    refused = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
    (detail,) = refused["details"]
    assert refused["status"] == "FAILURE" and "refused with 400" in detail["message"], refused
    assert http("GET", keys_url, edge_server.admin_token)[1] == before
    assert served(edge_server, "1.0", v1) == len(v1)
    again = await (await dist.post(f"{V1}/keys/gpg/propagate", headers=admin())).json()
    assert again["status"] == "SUCCESS", again
    assert len(http("GET", keys_url, edge_server.admin_token)[1]["keys"]) == len(before["keys"]) + 1
