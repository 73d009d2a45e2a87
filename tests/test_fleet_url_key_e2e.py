"""The fleet's URL key against a real edge process: propagated to the edge, a token the control
plane minted for a device opens exactly its file there, and no other file, and not after
it expired."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from devstack.services import EdgeProcess
from fleet.rollout_keys import url_key_key
from tests.conftest import admin
from tests.edge_setup import http, trust
from tests.fleet_deploy import FILES, FLEET, V1, check_in, deploy, fleet_fixture, signed_release  # noqa: F401
from tests.fleet_rows import add_device, device_auth
from wire.fleet import Sources, download_url, sources_path

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with _DIRECT.open(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def distributed(client: Any, edge: EdgeProcess) -> None:
    """The edge trusts the service's GPG key, is registered with its admin token, and holds app/2.3.0."""
    public = await (await client.get(f"{V1}/keys/gpg/public")).text()
    await asyncio.to_thread(trust, edge, public)
    body = {"name": "edge-1", "url": edge.url, "site_name": "lisbon-dc", "city_name": "Lisbon"}
    body |= {"country_code": "PT", "token": edge.admin_token}
    assert (await client.post(f"{V1}/edges", json=body, headers=admin())).status == 201
    rules = [{"site_name": "*", "city_name": "*", "country_codes": ["*"]}]
    resp = await client.post(f"{V1}/distribution/app/2.3.0", json={"distribution_rules": rules}, headers=admin())
    assert resp.status == 202, await resp.text()
    dist_id = (await resp.json())["id"]
    deadline = time.monotonic() + 60
    while True:
        got = await client.get(f"{V1}/release_bundle/app/2.3.0/distribution/{dist_id}", headers=admin())
        status = (await got.json())["status"]
        if status in ("Completed", "Failed"):
            assert status == "Completed"
            return
        if time.monotonic() > deadline:  # a hang guard, not a speed check
            pytest.fail(f"distribution still {status}")
        await asyncio.sleep(0.2)


async def test_a_minted_token_opens_exactly_its_file_on_a_real_edge(fleet: Any, edge_server: EdgeProcess) -> None:
    await signed_release(fleet, "2.3.0")
    await distributed(fleet, edge_server)
    key = fleet.app[url_key_key]
    keys_url = f"{edge_server.url}/artifactory/api/signed/keys"
    pushed = await fleet.post(f"{FLEET}/url-key/propagate", headers=admin())
    assert await pushed.json() == {
        "status": "SUCCESS",
        "kid": key.kid,
        "details": [{"name": "edge-1", "status": "SUCCESS"}],
    }
    again = await fleet.post(f"{FLEET}/url-key/propagate", headers=admin())
    assert (await again.json())["status"] == "SUCCESS"  # the same key again: nothing changes, no conflict
    status, listed = await asyncio.to_thread(http, "GET", keys_url, edge_server.admin_token)
    assert status == 200 and [k["public_key"] for k in listed["keys"] if k["kid"] == key.kid] == [key.public_pem]

    await add_device(fleet.app, "till-1", tags={"city": "Lisbon"})
    await deploy(fleet)
    (action,) = await check_in(fleet, "till-1")
    answer = Sources.from_json(
        await (await fleet.get(sources_path(action.action_id), headers=device_auth("till-1"))).json()
    )
    assert [e.url for e in answer.edges] == [edge_server.url]
    by_path = {f.path: f for f in answer.files}
    for path, data in FILES.items():
        file = by_path[f"releases-local/app/2.3.0/{path}"]
        assert await asyncio.to_thread(fetch, download_url(edge_server.url, file.path, file.token)) == (200, data)
    readme, binary = by_path["releases-local/app/2.3.0/README.md"], by_path["releases-local/app/2.3.0/till.bin"]
    wrong = await asyncio.to_thread(fetch, download_url(edge_server.url, binary.path, readme.token))
    assert wrong[0] in (401, 403)
    now = int(time.time())
    expired = key.mint(readme.path, now - 1000, now - 900)  # past the edge's clock leeway
    assert (await asyncio.to_thread(fetch, download_url(edge_server.url, readme.path, expired)))[0] in (401, 403)


async def test_a_new_deployment_pushes_the_url_key_to_the_edges(fleet: Any, edge_server: EdgeProcess) -> None:
    await signed_release(fleet, "2.3.0")
    await distributed(fleet, edge_server)
    await add_device(fleet.app, "till-1")
    await deploy(fleet)
    kid = fleet.app[url_key_key].kid
    keys_url = f"{edge_server.url}/artifactory/api/signed/keys"
    deadline = time.monotonic() + 30
    while kid not in str(await asyncio.to_thread(http, "GET", keys_url, edge_server.admin_token)):
        if time.monotonic() > deadline:  # a hang guard, not a speed check
            pytest.fail("the edge never came to trust the fleet's URL key")
        await asyncio.sleep(0.2)
