"""A bundle's SBOM on the Distribution service: built at creation, named in the signed manifest,
served at ``.../release_bundle/{name}/{version}/sbom``, refused over its caps with nothing stored,
and freed with its bundle."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from distribution.app import create_app
from distribution.keys import bundles_key
from distribution.settings import DistributionSettings
from repository.http import keys as core
from tests.conftest import ADMIN_TOKEN, admin
from tests.test_distribution_api import REPO, V1, create_body, deploy, flat_error, with_files
from tests.test_sbom_build import embedded_sbom

SBOM = f"{V1}/release_bundle/app/1.4.0/sbom"


async def service(aiohttp_client: Any, tmp_path: Path, **settings: Any) -> Any:
    return await aiohttp_client(
        create_app(
            DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,), **settings)
        )
    )


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    return await service(aiohttp_client, tmp_path)


async def blobs(client: Any) -> set[str]:
    return {name async for name in client.server.app[core.artifacts].storage.list()}


async def test_a_signed_bundle_serves_its_sbom_whose_sha256_and_size_the_signed_manifest_names(dist: Any) -> None:
    files = await with_files(dist)
    resp = await dist.post(f"{V1}/release_bundle", json=create_body(sign_immediately=True), headers=admin())
    assert resp.status == 201, await resp.text()
    got = await dist.get(SBOM, headers=admin())
    assert got.status == 200
    data = await got.read()
    assert got.headers["Content-Type"] == "application/vnd.cyclonedx+json"
    assert got.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(await (await dist.get(f"{V1}/release_bundle/app/1.4.0/manifest", headers=admin())).read())
    assert manifest["sbom"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    doc = json.loads(data)
    assert (doc["metadata"]["component"]["name"], doc["metadata"]["component"]["version"]) == ("app", "1.4.0")
    hashes = {c["name"]: {h["alg"]: h["content"] for h in c["hashes"]} for c in doc["components"]}
    assert hashes == {
        f"{REPO}/{path}": {
            "SHA-256": hashlib.sha256(body).hexdigest(),
            "SHA-1": hashlib.sha1(body).hexdigest(),
            "MD5": hashlib.md5(body).hexdigest(),
        }
        for path, body in files.items()
        if path.startswith("app/1.4.0/")
    }


async def test_an_sbom_file_in_the_bundle_is_merged_under_its_component(dist: Any) -> None:
    await with_files(dist)
    await deploy(dist, "app/1.4.0/app.cdx.json", embedded_sbom())
    assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    doc = json.loads(await (await dist.get(SBOM, headers=admin())).read())
    [holder] = [c for c in doc["components"] if c["name"] == f"{REPO}/app/1.4.0/app.cdx.json"]
    assert sorted(c["name"] for c in holder["components"]) == ["libbar", "libfoo", "service"]


async def test_an_unknown_bundle_or_one_made_before_sboms_answers_404_in_the_services_error_shape(dist: Any) -> None:
    assert await flat_error(await dist.get(SBOM, headers=admin())) == (404, "Release bundle app/1.4.0 not found")
    await with_files(dist)
    assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    database = dist.server.app[bundles_key].store._database  # a bundle as it was stored before SBOMs existed
    await database.run(lambda: database.db.execute("DELETE FROM bundle_sboms"))
    status, message = await flat_error(await dist.get(SBOM, headers=admin()))
    assert status == 404 and "has no SBOM" in message
    assert (await dist.post(f"{V1}/release_bundle/app/1.4.0/sign", json={}, headers=admin())).status == 200
    manifest = json.loads(await (await dist.get(f"{V1}/release_bundle/app/1.4.0/manifest", headers=admin())).read())
    assert "sbom" not in manifest  # signed as before: the field is absent, not null


async def test_reading_the_sbom_needs_a_token(dist: Any) -> None:
    await with_files(dist)
    assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    assert (await dist.get(SBOM)).status == 401


@pytest.mark.parametrize("cap", [1, 1000])
async def test_a_bundle_whose_sbom_passes_the_cap_is_refused_with_400_and_nothing_is_stored(
    aiohttp_client: Any, tmp_path: Path, cap: int
) -> None:
    client = await service(aiohttp_client, tmp_path, sbom_max_bytes=cap, sbom_embedded_max_bytes=0)
    await with_files(client)
    before = await blobs(client)
    status, message = await flat_error(await client.post(f"{V1}/release_bundle", json=create_body(), headers=admin()))
    assert status == 400 and "sbom_max_bytes" in message and f"{cap} bytes" in message
    assert (await client.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 404
    assert await blobs(client) == before


async def test_an_embedded_sbom_over_its_cap_refuses_the_bundle_naming_the_file_and_nothing_is_stored(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    data = embedded_sbom()
    client = await service(aiohttp_client, tmp_path, sbom_embedded_max_bytes=len(data) - 1)
    await with_files(client)
    await deploy(client, "app/1.4.0/bom.json", data)
    before = await blobs(client)
    status, message = await flat_error(await client.post(f"{V1}/release_bundle", json=create_body(), headers=admin()))
    assert status == 400
    assert f"{REPO}/app/1.4.0/bom.json is {len(data)} bytes, over the limit of {len(data) - 1}" in message
    assert (await client.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 404
    assert await blobs(client) == before


async def test_an_embedded_sbom_at_its_cap_is_merged(aiohttp_client: Any, tmp_path: Path) -> None:
    data = embedded_sbom()
    client = await service(aiohttp_client, tmp_path, sbom_embedded_max_bytes=len(data))
    await with_files(client)
    await deploy(client, "app/1.4.0/bom.json", data)
    assert (await client.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    doc = json.loads(await (await client.get(SBOM, headers=admin())).read())
    assert any(c.get("components") for c in doc["components"])


async def test_a_dry_run_builds_the_sbom_to_check_it_but_stores_nothing(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await service(aiohttp_client, tmp_path, sbom_max_bytes=1, sbom_embedded_max_bytes=0)
    await with_files(client)
    before = await blobs(client)
    resp = await client.post(f"{V1}/release_bundle", json=create_body(dry_run=True), headers=admin())
    assert (await flat_error(resp))[0] == 400
    roomy = await service(aiohttp_client, tmp_path / "roomy")
    await with_files(roomy)
    roomy_before = await blobs(roomy)
    assert (await roomy.post(f"{V1}/release_bundle", json=create_body(dry_run=True), headers=admin())).status == 200
    assert await blobs(roomy) == roomy_before and await blobs(client) == before


async def test_deleting_a_bundle_frees_its_sbom_and_an_update_replaces_it(dist: Any) -> None:
    await with_files(dist)
    assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())).status == 201
    first = (await dist.get(SBOM, headers=admin())).headers["X-Checksum-Sha256"]
    await dist.server.app[core.artifacts].sweep(timedelta(0))
    assert first in await blobs(dist)  # pinned by its bundle
    body = create_body(pattern=f"{REPO}/app/1.4.0/app-linux.tar.gz")
    assert (await dist.put(f"{V1}/release_bundle/app/1.4.0", json=body, headers=admin())).status == 200
    second = (await dist.get(SBOM, headers=admin())).headers["X-Checksum-Sha256"]
    assert second != first and first not in await blobs(dist) and second in await blobs(dist)
    assert (await dist.delete(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 204
    assert second not in await blobs(dist)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"sbom_max_bytes": 0}, "setting 'sbom_max_bytes' must be 1 to 1073741824"),
        ({"sbom_max_bytes": 1024**3 + 1}, "setting 'sbom_max_bytes' must be 1 to 1073741824"),
        (
            {"sbom_max_bytes": 10, "sbom_embedded_max_bytes": 11},
            "'sbom_embedded_max_bytes' must be 0 to sbom_max_bytes",
        ),
        ({"sbom_embedded_max_bytes": -1}, "'sbom_embedded_max_bytes' must be 0 to sbom_max_bytes"),
    ],
)
def test_sbom_limits_out_of_range_refuse_to_start_naming_the_setting(
    tmp_path: Path, settings: dict[str, int], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        DistributionSettings(data_dir=tmp_path, **settings)


def test_sbom_limits_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    DistributionSettings(data_dir=tmp_path, sbom_max_bytes=1, sbom_embedded_max_bytes=0)
    DistributionSettings(data_dir=tmp_path, sbom_max_bytes=1024**3, sbom_embedded_max_bytes=1024**3)
    assert (
        DistributionSettings(data_dir=tmp_path, sbom_max_bytes=10, sbom_embedded_max_bytes=10).sbom_embedded_max_bytes
        == 10
    )
