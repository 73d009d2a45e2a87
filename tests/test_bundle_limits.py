"""One bundle-size limit, checked before anything is stored: a bundle that can be created can be signed.

``max_bundle_artifacts`` cannot exceed the most artifacts a manifest may list
(``wire.manifest.MAX_ARTIFACTS``), and a bundle whose manifest would be larger than every
edge accepts (``MAX_MANIFEST_BYTES``) is refused when it is created, not when it is signed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings, load_distribution_settings
from repository.settings import SettingsError
from tests.conftest import ADMIN_TOKEN, admin
from tests.test_distribution_api import REPO, V1, deploy, flat_error
from wire import manifest as wire_manifest
from wire.manifest import MAX_ARTIFACTS

LIMIT = 3


@pytest.mark.parametrize("value", [1, MAX_ARTIFACTS - 1, MAX_ARTIFACTS])
def test_max_bundle_artifacts_up_to_what_a_manifest_may_list_is_accepted(value: int) -> None:
    env = {"DISTRIBUTION_MAX_BUNDLE_ARTIFACTS": str(value)}
    assert load_distribution_settings(env=env).max_bundle_artifacts == value


@pytest.mark.parametrize("value", [0, MAX_ARTIFACTS + 1, 1_000_000])
def test_max_bundle_artifacts_beyond_what_a_manifest_may_list_is_refused_naming_the_limit(value: int) -> None:
    with pytest.raises(SettingsError) as refused:
        load_distribution_settings(env={"DISTRIBUTION_MAX_BUNDLE_ARTIFACTS": str(value)})
    assert f"setting 'max_bundle_artifacts' must be 1 to {MAX_ARTIFACTS}" in str(refused.value)


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    """A Distribution service allowing LIMIT artifacts a bundle, with LIMIT + 1 files under app/."""
    settings = DistributionSettings(
        data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,), max_bundle_artifacts=LIMIT
    )
    client = await aiohttp_client(create_app(settings))
    for i in range(LIMIT + 1):
        await deploy(client, f"app/{i}.bin", f"file {i}".encode())
    return client


def body(count: int, version: str = "1.0", **extra: Any) -> dict[str, Any]:
    """A bundle of the first ``count`` files under app/."""
    queries = [{"pattern": f"{REPO}/app/{i}.bin"} for i in range(count)]
    return {"name": "app", "version": version, "spec": {"queries": queries}, **extra}


async def stored_bundles(client: Any) -> int:
    listed = await client.get(f"{V1}/release_bundle", headers=admin())
    return int(listed.headers["X-RangeLimit-Total"])


@pytest.mark.parametrize("count", [LIMIT - 1, LIMIT])
async def test_a_bundle_up_to_the_limit_is_created_and_signed(dist: Any, count: int) -> None:
    resp = await dist.post(f"{V1}/release_bundle", json=body(count, sign_immediately=True), headers=admin())
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["state"] == "SIGNED"
    assert len((await resp.json())["artifacts"]) == count


@pytest.mark.parametrize("dry_run", [False, True])
async def test_a_bundle_one_over_the_limit_is_a_400_and_nothing_is_stored(dist: Any, dry_run: bool) -> None:
    resp = await dist.post(f"{V1}/release_bundle", json=body(LIMIT + 1, dry_run=dry_run), headers=admin())
    status, message = await flat_error(resp)
    assert status == 400 and f"more than the limit of {LIMIT} artifacts" in message
    assert await stored_bundles(dist) == 0
    assert (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).status == 404


async def test_an_update_one_over_the_limit_is_a_400_and_the_bundle_stays_as_it_was(dist: Any) -> None:
    assert (await dist.post(f"{V1}/release_bundle", json=body(LIMIT), headers=admin())).status == 201
    resp = await dist.put(f"{V1}/release_bundle/app/1.0", json=body(LIMIT + 1), headers=admin())
    assert (await flat_error(resp))[0] == 400
    kept = await (await dist.get(f"{V1}/release_bundle/app/1.0", headers=admin())).json()
    assert kept["state"] == "OPEN" and len(kept["artifacts"]) == LIMIT
    signed = await dist.post(f"{V1}/release_bundle/app/1.0/sign", json={}, headers=admin())
    assert signed.status == 200, await signed.text()


async def test_a_bundle_whose_manifest_would_be_over_the_byte_limit_is_refused_before_it_is_stored(
    dist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await dist.post(f"{V1}/release_bundle", json=body(LIMIT, sign_immediately=True), headers=admin())
    assert first.status == 201, await first.text()
    size = len(await (await dist.get(f"{V1}/release_bundle/app/1.0/manifest", headers=admin())).read())
    # the same files under another version of the same length: a manifest of the same size
    for version, limit in (("1.1", size + 1), ("1.2", size)):  # the manifest at limit - 1, at the limit
        monkeypatch.setattr(wire_manifest, "MAX_MANIFEST_BYTES", limit)
        made = await dist.post(
            f"{V1}/release_bundle", json=body(LIMIT, version, sign_immediately=True), headers=admin()
        )
        assert made.status == 201 and (await made.json())["state"] == "SIGNED", await made.text()
        manifest = await dist.get(f"{V1}/release_bundle/app/{version}/manifest", headers=admin())
        assert len(await manifest.read()) == size
    monkeypatch.setattr(wire_manifest, "MAX_MANIFEST_BYTES", size - 1)  # one byte over it
    refused = await dist.post(f"{V1}/release_bundle", json=body(LIMIT, "1.3", dry_run=True), headers=admin())
    status, message = await flat_error(refused)
    assert status == 400 and f"would be {size} bytes, over the limit of {size - 1} bytes" in message
    refused = await dist.post(f"{V1}/release_bundle", json=body(LIMIT, "1.3"), headers=admin())
    assert (await flat_error(refused))[0] == 400
    assert (await dist.get(f"{V1}/release_bundle/app/1.3", headers=admin())).status == 404
    assert await stored_bundles(dist) == 3
