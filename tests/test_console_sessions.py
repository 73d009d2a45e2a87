"""The web console's sessions and guards: who may sign in, what the cookie promises, CSRF on every
form, roles exactly as on the API, and every value shown as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from repository.http.setup import database
from tests.conftest import ADMIN_TOKEN, admin
from tests.console_client import csrf_of, form_post, log_in, reader_token

V1 = "/distribution/api/v1"
REPO = "releases-local"


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,))
    return await aiohttp_client(create_app(settings))


async def make_bundle(client: Any, name: str = "app", version: str = "1.0") -> None:
    resp = await client.put(f"/artifactory/{REPO}/{name}/{version}/a.bin", data=b"a", headers=admin())
    assert resp.status == 201
    body = {"name": name, "version": version, "spec": {"queries": [{"pattern": f"{REPO}/{name}/{version}/*"}]}}
    assert (await client.post(f"{V1}/release_bundle", json=body, headers=admin())).status == 201


async def bundle_names(client: Any) -> list[str]:
    resp = await client.get(f"{V1}/release_bundle", headers=admin())
    return [f"{b['name']}/{b['version']}" for b in await resp.json()]


async def test_a_page_without_a_session_sends_the_browser_to_the_login_page(dist: Any) -> None:
    resp = await dist.get("/ui/bundles", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/login"


async def test_logging_in_with_a_token_sets_an_httponly_strict_session_cookie(dist: Any) -> None:
    resp = await log_in(dist, token=ADMIN_TOKEN)
    assert resp.status == 200 and "Release bundles" in await resp.text()
    cookie = next(h for h in resp.history[0].headers.getall("Set-Cookie") if h.startswith("console_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert "Secure" not in cookie  # plain http, and no https public URL configured


async def test_the_cookie_is_secure_when_the_public_url_is_https(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = DistributionSettings(
        data_dir=tmp_path / "d", port=0, admin_token=ADMIN_TOKEN, console_public_url="https://dist.example"
    )
    client = await aiohttp_client(create_app(settings))
    page = await client.get("/ui/login")
    assert "Secure" in page.headers["Set-Cookie"]


async def test_bad_credentials_are_refused_with_401_and_no_session(dist: Any) -> None:
    resp = await log_in(dist, token="edt_not-a-token")
    assert resp.status == 401 and "Bad credentials" in await resp.text()
    assert (await dist.get("/ui/bundles", allow_redirects=False)).status == 303


async def test_a_user_name_and_password_log_in_as_the_api_accepts_them(dist: Any) -> None:
    resp = await log_in(dist, username="admin", password=ADMIN_TOKEN)
    assert resp.status == 200 and "admin (admin)" in await resp.text()


async def test_the_login_form_without_its_csrf_token_is_refused(dist: Any) -> None:
    await dist.get("/ui/login")
    resp = await dist.post("/ui/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    assert resp.status == 403
    assert (await dist.get("/ui/bundles", allow_redirects=False)).status == 303


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(dist: Any) -> None:
    await make_bundle(dist)
    await log_in(dist, token=ADMIN_TOKEN)
    for data in ({}, {"csrf": "forged"}, {"csrf": ""}):
        resp = await dist.post("/ui/bundles/app/1.0/delete", data=data, allow_redirects=False)
        assert resp.status == 403 and "CSRF" in await resp.text()
    assert await bundle_names(dist) == ["app/1.0"]
    resp = await form_post(dist, "/ui/bundles/app/1.0", "/ui/bundles/app/1.0/delete")
    assert resp.status == 303
    assert await bundle_names(dist) == []


async def test_a_reader_sees_no_change_buttons_and_a_forged_post_is_refused_403(dist: Any) -> None:
    await make_bundle(dist)
    await log_in(dist, token=await reader_token(dist, ADMIN_TOKEN))
    page = await (await dist.get("/ui/bundles/app/1.0")).text()
    assert "Delete this version" not in page and ">Sign<" not in page and "Distribute" not in page
    resp = await dist.post("/ui/bundles/app/1.0/delete", data={"csrf": csrf_of(page)}, allow_redirects=False)
    assert resp.status == 403 and "may not do this" in await resp.text()
    assert await bundle_names(dist) == ["app/1.0"]


async def test_logging_out_ends_the_session_on_the_server(dist: Any) -> None:
    await log_in(dist, token=ADMIN_TOKEN)
    stolen = dist.session.cookie_jar.filter_cookies(dist.make_url("/ui/"))["console_session"].value
    assert (await form_post(dist, "/ui/bundles", "/ui/logout")).status == 303
    resp = await dist.get("/ui/bundles", cookies={"console_session": stolen}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/login"


async def test_a_bundle_named_like_a_script_renders_as_text(dist: Any) -> None:
    await make_bundle(dist)
    body = {
        "name": "app",
        "version": "2.0",
        "description": "<script>alert(1)</script>",
        "spec": {"queries": [{"pattern": f"{REPO}/app/1.0/*"}]},
    }
    assert (await dist.post(f"{V1}/release_bundle", json=body, headers=admin())).status == 201
    await log_in(dist, token=ADMIN_TOKEN)
    page = await (await dist.get("/ui/bundles/app/2.0")).text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_the_bundle_list_searches_names_and_versions(dist: Any) -> None:
    await make_bundle(dist, "app", "1.0")
    await make_bundle(dist, "tool", "7.1")
    await log_in(dist, token=ADMIN_TOKEN)
    page = await (await dist.get("/ui/bundles", params={"q": "too"})).text()
    assert ">tool<" in page and ">app<" not in page
    page = await (await dist.get("/ui/bundles", params={"q": "%"})).text()
    assert "No bundles match" in page


@pytest.mark.parametrize(("hours", "valid"), [(0, False), (1, True), (719, True), (720, True), (721, False)])
def test_the_session_lifetime_setting_is_1_to_720_hours(tmp_path: Path, hours: int, valid: bool) -> None:
    if valid:
        assert DistributionSettings(data_dir=tmp_path, console_session_hours=hours).console_session_hours == hours
    else:
        with pytest.raises(ValueError, match="console_session_hours"):
            DistributionSettings(data_dir=tmp_path, console_session_hours=hours)


@pytest.mark.parametrize("url", ["ftp://dist.example", "dist.example", ""])
def test_the_public_url_setting_must_be_http_or_https(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="console_public_url"):
        DistributionSettings(data_dir=tmp_path, console_public_url=url)


async def test_a_session_ends_when_its_lifetime_is_over(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = DistributionSettings(data_dir=tmp_path / "d", port=0, admin_token=ADMIN_TOKEN, console_session_hours=1)
    client = await aiohttp_client(create_app(settings))
    await log_in(client, token=ADMIN_TOKEN)
    assert (await client.get("/ui/bundles", allow_redirects=False)).status == 200
    db = client.app[database]
    await db.run(db.db.execute, "UPDATE console_sessions SET expires = expires - :hour", {"hour": 3600 * 1000})
    assert (await client.get("/ui/bundles", allow_redirects=False)).status == 303
