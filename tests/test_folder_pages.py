"""A folder URL answers browsers with an HTML listing (as Artifactory does) and API clients as before."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app as create_distribution
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN, UPLOADS, admin, error_of, upload

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def links(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)">', html)


async def test_a_browser_gets_a_listing_of_a_folder_with_links_that_download(edge: Any) -> None:
    await upload(edge, "app/1.4.0/app.tar.gz", b"app bytes")
    await upload(edge, "app/1.4.0/docs/readme.txt", b"read me")
    resp = await edge.get(f"/artifactory/{UPLOADS}/app/1.4.0/", headers={**admin(), "Accept": BROWSER})
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert f"Index of {UPLOADS}/app/1.4.0/" in page
    assert links(page) == ["../", "docs/", "app.tar.gz"]
    assert hashlib.sha256(b"app bytes").hexdigest() in page
    file = await edge.get(f"/artifactory/{UPLOADS}/app/1.4.0/app.tar.gz", headers={**admin(), "Accept": BROWSER})
    assert await file.read() == b"app bytes"
    root = await (await edge.get(f"/artifactory/{UPLOADS}/", headers={**admin(), "Accept": BROWSER})).text()
    assert links(root) == ["app/"]


async def test_a_folder_url_without_its_slash_is_redirected_to_it(edge: Any) -> None:
    await upload(edge, "app/a.bin", b"a")
    headers = {**admin(), "Accept": BROWSER}
    resp = await edge.get(f"/artifactory/{UPLOADS}/app", headers=headers, allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"] == f"/artifactory/{UPLOADS}/app/"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html;q=0", "text/plain"])
async def test_api_clients_keep_the_json_404_of_a_folder(edge: Any, accept: str | None) -> None:
    await upload(edge, "app/a.bin", b"a")
    headers = {**admin(), **({"Accept": accept} if accept else {})}
    resp = await edge.get(f"/artifactory/{UPLOADS}/app/", headers=headers)
    assert await error_of(resp) == (404, "Unable to find item")


async def test_a_missing_folder_is_still_a_404_for_a_browser(edge: Any) -> None:
    resp = await edge.get(f"/artifactory/{UPLOADS}/nothing/", headers={**admin(), "Accept": BROWSER})
    assert await error_of(resp) == (404, "Unable to find item")


async def test_names_in_a_listing_render_as_text(edge: Any) -> None:
    await upload(edge, "x/<script>alert(1)<%2Fscript>.txt".replace("%2F", "_"), b"x")
    page = await (await edge.get(f"/artifactory/{UPLOADS}/x/", headers={**admin(), "Accept": BROWSER})).text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;_script&gt;.txt" in page


async def test_the_distribution_service_lists_its_source_folders_too(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = DistributionSettings(data_dir=tmp_path / "d", port=0, admin_token=ADMIN_TOKEN, repos=("src-local",))
    client = await aiohttp_client(create_distribution(settings))
    assert (await client.put("/artifactory/src-local/app/1.0/a.bin", data=b"a", headers=admin())).status == 201
    page = await (await client.get("/artifactory/src-local/app/", headers={**admin(), "Accept": BROWSER})).text()
    assert links(page) == ["../", "1.0/"]
    # a listing needs the read permission a download needs: these repos have no anonymous reads
    anonymous = await client.get("/artifactory/src-local/app/", headers={"Accept": BROWSER})
    assert anonymous.status == 401 and "1.0/" not in await anonymous.text()
