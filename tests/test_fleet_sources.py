"""Where a device downloads an action's release: the signed manifest as it was signed, the
edges holding it Completed nearest first, a signed-URL token per file; and the refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from distribution.app import create_app
from distribution.settings import DistributionSettings
from fleet.rollout_keys import url_key_key
from fleet.rollout_url_key import FleetUrlKey
from tests.conftest import ADMIN_TOKEN, admin, error_of
from tests.fleet_deploy import FILES, V1, check_in, deploy, fleet_fixture, report, signed_release  # noqa: F401
from tests.fleet_rows import add_app, add_device, completed_on, device_auth
from wire.fleet import Sources, sources_path

PLACES = {  # edge -> (site, city, country)
    "z-same-site": ("lisbon-dc", "Lisbon", "PT"),
    "y-same-city": ("lisbon-2", "Lisbon", "PT"),
    "x-same-country": ("porto-dc", "Porto", "PT"),
    "w-elsewhere": ("fra-dc", "Frankfurt", "DE"),
    "v-not-holding": ("lisbon-dc", "Lisbon", "PT"),
}


async def register(client: Any, name: str) -> str:
    site, city, country = PLACES[name]
    body = {"name": name, "url": f"http://127.0.0.1:1/{name}", "site_name": site, "city_name": city}
    body |= {"country_code": country, "token": "t0k"}
    resp = await client.post(f"{V1}/edges", json=body, headers=admin())
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["service_id"])


async def sources_of(client: Any, device: str, action_id: str) -> Any:
    return await client.get(sources_path(action_id), headers=device_auth(device))


async def test_sources_answer_the_signed_manifest_nearest_edges_and_a_token_per_file(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    for edge in PLACES:
        service_id = await register(fleet, edge)
        if edge != "v-not-holding":
            await completed_on(fleet.app, edge, service_id, "app", "2.3.0")
    await add_device(fleet.app, "till-1", tags={"site": "lisbon-dc", "city": "Lisbon", "country": "PT"})
    await add_device(fleet.app, "till-2", tags={"country": "pt"})
    await deploy(fleet)
    (action,) = await check_in(fleet, "till-1")
    resp = await sources_of(fleet, "till-1", action.action_id)
    assert resp.status == 200, await resp.text()
    answer = Sources.from_json(await resp.json())
    assert [e.name for e in answer.edges] == ["z-same-site", "y-same-city", "x-same-country", "w-elsewhere"]
    manifest = await (await fleet.get(f"{V1}/release_bundle/app/2.3.0/manifest", headers=admin())).read()
    signature = await (await fleet.get(f"{V1}/release_bundle/app/2.3.0/signature", headers=admin())).text()
    assert (answer.manifest.encode(), answer.signature) == (manifest, signature)
    assert sorted((f.path, f.size) for f in answer.files) == sorted(
        (f"releases-local/app/2.3.0/{p}", len(d)) for p, d in FILES.items()
    )
    key = fleet.app[url_key_key]
    public = load_pem_public_key(key.public_pem.encode())
    for file in answer.files:
        header = jwt.get_unverified_header(file.token)
        assert header == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
        claims = jwt.decode(file.token, public, algorithms=["EdDSA"])  # type: ignore[arg-type]
        assert claims["sub"] == file.path and claims["exp"] * 1000 == answer.expires
        assert claims["exp"] - claims["iat"] == 900  # the default lifetime
    (other,) = await check_in(fleet, "till-2")
    by_country = Sources.from_json(await (await sources_of(fleet, "till-2", other.action_id)).json())
    assert [e.name for e in by_country.edges] == ["x-same-country", "y-same-city", "z-same-site", "w-elsewhere"]


async def test_sources_refusals(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_device(fleet.app, "a")
    await add_device(fleet.app, "b")
    await register(fleet, "w-elsewhere")
    await deploy(fleet)
    (mine,) = await check_in(fleet, "a")
    assert await error_of(await sources_of(fleet, "a", mine.action_id)) == (
        409,
        "No edge holds app/2.3.0 Completed yet; ask again later",
    )
    assert (await error_of(await sources_of(fleet, "b", mine.action_id)))[0] == 404
    assert (await error_of(await sources_of(fleet, "a", "d1.s99")))[0] == 404
    assert (await error_of(await sources_of(fleet, "a", "nonsense")))[0] == 404
    assert (await error_of(await sources_of(fleet, "a", mine.action_id + ".rollback")))[0] == 404
    anonymous = await fleet.get(sources_path(mine.action_id))
    assert (await error_of(anonymous))[0] == 401
    # rolled back on a device that ran nothing before: nothing to download
    await report(fleet, "a", mine.action_id, "succeeded")
    assert (await fleet.post("/fleet/api/v1/deployments/1/rollback", headers=admin())).status == 200
    (back,) = await check_in(fleet, "a")
    assert back.version is None
    assert (await error_of(await sources_of(fleet, "a", back.action_id)))[0] == 409


async def test_the_url_key_is_made_once_private_and_kept(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN)
    first = await aiohttp_client(create_app(settings))
    kid = first.app[url_key_key].kid
    assert kid.startswith("fleet-") and len(kid) == len("fleet-") + 16
    assert stat.S_IMODE(os.stat(settings.fleet_url_key_path).st_mode) == 0o600
    await first.close()
    again = FleetUrlKey.load_or_create(settings.fleet_url_key_path, "fleet@distribution")
    assert again.kid == kid
    assert os.listdir(settings.data_dir).count("fleet-url-key.pem") == 1


@pytest.mark.parametrize(("lifetime", "valid"), [(9, False), (10, True), (86400, True), (86401, False)])
def test_the_url_lifetime_setting_is_bounded(tmp_path: Path, lifetime: int, valid: bool) -> None:
    if valid:
        assert DistributionSettings(data_dir=tmp_path, fleet_url_lifetime=lifetime).fleet_url_lifetime == lifetime
    else:
        with pytest.raises(ValueError, match="fleet_url_lifetime"):
            DistributionSettings(data_dir=tmp_path, fleet_url_lifetime=lifetime)


async def test_tokens_live_as_long_as_the_setting_says(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = DistributionSettings(
        data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=("releases-local",), fleet_url_lifetime=60
    )
    client = await aiohttp_client(create_app(settings))
    await add_app(client.app)
    await signed_release(client, "2.3.0")
    await completed_on(client.app, "w-elsewhere", await register(client, "w-elsewhere"), "app", "2.3.0")
    await add_device(client.app, "a")
    await deploy(client)
    (action,) = await check_in(client, "a")
    answer = Sources.from_json(await (await sources_of(client, "a", action.action_id)).json())
    claims = jwt.decode(answer.files[0].token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60 and answer.expires == claims["exp"] * 1000
