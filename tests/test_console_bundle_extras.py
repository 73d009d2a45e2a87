"""The console's SBOM pages and its create-by-property form: what a session with the reader role
reads without a token, and a preview that selects exactly what the API's file spec selects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from repository.http.setup import database
from tests.conftest import ADMIN_TOKEN, admin
from tests.console_client import csrf_of, form_post, log_in, reader_token
from tests.test_distribution_api import REPO, V1, create_body, deploy, with_files
from tests.test_sbom_build import embedded_sbom

BUNDLE = "/ui/bundles/app/1.4.0"


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    return await aiohttp_client(create_app(settings))


async def signed_bundle(client: Any) -> dict[str, bytes]:
    files = await with_files(client)
    await deploy(client, "app/1.4.0/app.cdx.json", embedded_sbom())
    resp = await client.post(f"{V1}/release_bundle", json=create_body(sign_immediately=True), headers=admin())
    assert resp.status == 201, await resp.text()
    return files


async def manifest_sbom(client: Any) -> dict[str, Any]:
    resp = await client.get(f"{V1}/release_bundle/app/1.4.0/manifest", headers=admin())
    return dict(json.loads(await resp.read())["sbom"])


async def test_a_reader_downloads_the_sbom_the_signed_manifest_names_with_only_a_console_session(dist: Any) -> None:
    await signed_bundle(dist)
    await log_in(dist, token=await reader_token(dist, ADMIN_TOKEN))
    named = await manifest_sbom(dist)
    page = await (await dist.get(BUNDLE)).text()
    assert (
        named["sha256"] in page
        and f"{BUNDLE}/sbom.json" in page
        and "/release_bundle/app/1.4.0/sbom" not in page  # the REST path wants a token, which a session lacks
    )
    resp = await dist.get(f"{BUNDLE}/sbom.json")
    data = await resp.read()
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.cyclonedx+json"
    assert resp.headers["Content-Disposition"] == "attachment; filename*=UTF-8''app-1.4.0.cdx.json"
    assert {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} == named
    api = await dist.get(f"{V1}/release_bundle/app/1.4.0/sbom", headers=admin())
    assert await api.read() == data


async def test_the_sbom_page_lists_each_component_with_version_purl_and_sha256(dist: Any) -> None:
    files = await signed_bundle(dist)
    await log_in(dist, token=await reader_token(dist, ADMIN_TOKEN))
    resp = await dist.get(f"{BUNDLE}/sbom")
    page = await resp.text()
    assert resp.status == 200 and (await manifest_sbom(dist))["sha256"] in page and "CycloneDX 1.6, JSON" in page
    for path, data in files.items():
        if path.startswith("app/1.4.0/"):
            sha256 = hashlib.sha256(data).hexdigest()
            assert f"<td>{REPO}/{path}</td><td>1.4.0</td>" in page
            assert f"pkg:generic/{REPO}/app/1.4.0/{path.rsplit('/', 1)[1]}@1.4.0?checksum=sha256:{sha256}" in page
            assert f'<td class="hash">{sha256}</td>' in page
    # what the embedded SBOM says the file holds is listed under it
    assert "inside the file above" in page and "service" in page


async def test_a_bundle_without_an_sbom_shows_none_and_its_sbom_pages_are_404(dist: Any) -> None:
    await signed_bundle(dist)
    db = dist.app[database]
    await db.run(lambda: db.db.execute("DELETE FROM bundle_sboms"))
    await log_in(dist, token=ADMIN_TOKEN)
    assert "none (made before SBOMs were built)" in await (await dist.get(BUNDLE)).text()
    for url in (f"{BUNDLE}/sbom", f"{BUNDLE}/sbom.json", "/ui/bundles/app/9.9/sbom", "/ui/bundles/app/9.9/sbom.json"):
        resp = await dist.get(url)
        assert resp.status == 404 and resp.content_type == "text/html", url
        assert "SBOM" in await resp.text() or "9.9" in await resp.text()


async def test_the_sbom_pages_need_a_session(dist: Any) -> None:
    await signed_bundle(dist)
    for url in (f"{BUNDLE}/sbom", f"{BUNDLE}/sbom.json"):
        resp = await dist.get(url, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/ui/login"


PROPS = {
    "app/1/app.tgz": "build=1;RC1-Approved=false",
    "app/2/app.tgz": "build=2;RC1-Approved=true",
    "app/2/notes.txt": "build=2",
    "app/3/app.tgz": "build=3;RC1-Approved=true;stage=prod",
}


async def labelled(client: Any) -> None:
    for path, props in PROPS.items():
        await deploy(client, path, path.encode())
        resp = await client.put(f"/artifactory/api/storage/{REPO}/{path}?properties={props}", headers=admin())
        assert resp.status == 204, await resp.text()


async def preview(client: Any, props: str, kind: str = "pattern", query: str = f"{REPO}/app/**") -> Any:
    fields = {"name": "rc", "version": "1", "kind": kind, "query": query, "props": props, "action": "preview"}
    return await form_post(client, "/ui/bundles/new", "/ui/bundles", **fields)


@pytest.mark.parametrize(
    ("props", "selected"),
    [
        ("RC1-Approved=true", ["app/2/app.tgz", "app/3/app.tgz"]),
        ("RC1-Approved=true;stage=prod", ["app/3/app.tgz"]),
        ("build=1,2", ["app/1/app.tgz", "app/2/app.tgz", "app/2/notes.txt"]),
        ("", list(PROPS)),
    ],
)
async def test_the_create_forms_props_field_previews_exactly_the_files_the_api_selects(
    dist: Any, props: str, selected: list[str]
) -> None:
    await labelled(dist)
    await log_in(dist, token=ADMIN_TOKEN)
    resp = await preview(dist, props)
    page = await resp.text()
    assert resp.status == 200, page
    body = {"name": "rc", "version": "1", "dry_run": True, "spec": {"queries": [{"pattern": f"{REPO}/app/**"}]}}
    if props:
        body["spec"]["queries"][0]["props"] = props  # type: ignore[index]
    api = await (await dist.post(f"{V1}/release_bundle", json=body, headers=admin())).json()
    assert sorted(a["targetRepoPath"].split("/", 1)[1] for a in api["artifacts"]) == selected
    assert sorted(p for p in PROPS if f"<td>{REPO}/{p}</td>" in page) == selected
    assert f'value="{props}"' in page  # the field keeps what was typed
    assert (await dist.get(f"{V1}/release_bundle", headers=admin())).status == 200
    assert await (await dist.get(f"{V1}/release_bundle", headers=admin())).json() == []


async def test_props_work_beside_an_aql_query_and_a_created_bundle_holds_only_those_files(dist: Any) -> None:
    await labelled(dist)
    await log_in(dist, token=ADMIN_TOKEN)
    aql = f'items.find({{"repo": "{REPO}", "path": {{"$match": "app/*"}}}})'
    assert "app/3/app.tgz" in await (await preview(dist, "stage=prod", "aql", aql)).text()
    fields = {"name": "rc", "version": "2", "query": f"{REPO}/app/**", "props": "stage=prod", "action": "create"}
    resp = await form_post(dist, "/ui/bundles/new", "/ui/bundles", **fields)
    assert resp.status == 303
    bundle = await (await dist.get(f"{V1}/release_bundle/rc/2", headers=admin())).json()
    assert [a["targetRepoPath"] for a in bundle["artifacts"]] == [f"{REPO}/app/3/app.tgz"]


@pytest.mark.parametrize("props", ["=true", "RC1-Approved", ";"])
async def test_a_malformed_props_field_is_a_400_naming_it_and_nothing_is_stored(dist: Any, props: str) -> None:
    await labelled(dist)
    await log_in(dist, token=ADMIN_TOKEN)
    resp = await preview(dist, props)
    page = await resp.text()
    assert resp.status == 400 and "props" in page and 'role="alert"' in page
    fields = {"name": "rc", "version": "1", "query": f"{REPO}/app/**", "props": props, "action": "create"}
    assert (await form_post(dist, "/ui/bundles/new", "/ui/bundles", **fields)).status == 400
    assert await (await dist.get(f"{V1}/release_bundle", headers=admin())).json() == []


async def test_a_reader_cannot_preview_or_create_by_property(dist: Any) -> None:
    await labelled(dist)
    await log_in(dist, token=await reader_token(dist, ADMIN_TOKEN))
    csrf = csrf_of(await (await dist.get("/ui/bundles")).text())
    fields = {"csrf": csrf, "name": "rc", "version": "1", "query": f"{REPO}/app/**", "props": "build=2"}
    resp = await dist.post("/ui/bundles", data=fields | {"action": "create"}, allow_redirects=False)
    assert resp.status == 403
    assert await (await dist.get(f"{V1}/release_bundle", headers=admin())).json() == []
