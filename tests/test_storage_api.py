"""The storage, repositories, system and token APIs in the shapes existing clients parse."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from typing import Any

import aiohttp
import pytest

from edge.app import create_app
from repository.http import keys
from repository.tokens import Role
from tests.conftest import UPLOADS, admin, error_of, make_settings, upload

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_file_info_has_a_string_size_and_all_checksums(edge: Any) -> None:
    await upload(edge, "a/b/c.txt", b"hello")
    info = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/a/b/c.txt")).json()
    assert info["size"] == "5"
    assert info["path"] == "/a/b/c.txt"
    assert info["repo"] == UPLOADS
    assert info["mimeType"] == "text/plain"
    assert info["checksums"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert info["originalChecksums"] == info["checksums"]
    for key in ("created", "lastModified", "lastUpdated"):
        assert ISO_MS.fullmatch(info[key]), info[key]
    assert info["uri"].endswith(f"/artifactory/api/storage/{UPLOADS}/a/b/c.txt")


async def test_folder_info_lists_children_without_a_size(edge: Any) -> None:
    await upload(edge, "a/b/c.txt", b"c")
    await upload(edge, "a/d.txt", b"d")
    info = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/a")).json()
    assert "size" not in info
    assert info["path"] == "/a"
    assert info["children"] == [{"uri": "/b", "folder": True}, {"uri": "/d.txt", "folder": False}]
    root = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}")).json()
    assert root["path"] == "/"
    assert root["children"] == [{"uri": "/a", "folder": True}]
    slash = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/a/")).json()
    assert slash["children"] == info["children"]


async def test_deep_list_walks_the_whole_tree(edge: Any) -> None:
    names = ["x/1.bin", "x/y/2.bin", "x/y/z/3.bin", "x0.bin", "w/4.bin"]
    for n in names:
        await upload(edge, n, n.encode())
    listing = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/x?list&deep=1")).json()
    assert [f["uri"] for f in listing["files"]] == ["/1.bin", "/y/2.bin", "/y/z/3.bin"]
    first = listing["files"][0]
    assert first["size"] == 7 and first["folder"] is False
    assert first["sha2"] == hashlib.sha256(b"x/1.bin").hexdigest()
    assert first["sha1"] == hashlib.sha1(b"x/1.bin").hexdigest()
    everything = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}?list&deep=1")).json()
    assert len(everything["files"]) == 5
    shallow = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/x?list&listFolders=1")).json()
    assert [(f["uri"], f["folder"]) for f in shallow["files"]] == [("/y", True), ("/1.bin", False)]


@pytest.mark.parametrize("query", ["list&deep=true", "list&deep=2", "list&listFolders=yes", "deep=", "listFolders=10"])
async def test_deep_and_list_folders_are_0_or_1_and_anything_else_is_a_400(edge: Any, query: str) -> None:
    await upload(edge, "x/1.bin", b"1")
    assert (await edge.get(f"/artifactory/api/storage/{UPLOADS}/x?list&deep=0&listFolders=1")).status == 200
    status, message = await error_of(await edge.get(f"/artifactory/api/storage/{UPLOADS}/x?{query}"))
    assert status == 400 and "must be 0 or 1" in message


async def test_listing_a_file_or_a_missing_path_is_a_404(edge: Any) -> None:
    await upload(edge, "f.txt", b"f")
    assert (await error_of(await edge.get(f"/artifactory/api/storage/{UPLOADS}/f.txt?list")))[0] == 404
    missing = await edge.get(f"/artifactory/api/storage/{UPLOADS}/nope")
    assert await error_of(missing) == (404, "Unable to find item")
    assert await error_of(await edge.get("/artifactory/api/storage/nope-repo")) == (404, "Unable to find item")


async def test_repositories_are_listed_with_types_clients_accept(edge: Any) -> None:
    repos = await (await edge.get("/artifactory/api/repositories")).json()
    assert repos == [
        {
            "key": UPLOADS,
            "type": "LOCAL",
            "description": "",
            "url": f"http://{edge.server.host}:{edge.server.port}/artifactory/{UPLOADS}",
            "packageType": "generic",
        }
    ]
    one = await (await edge.get(f"/artifactory/api/repositories/{UPLOADS}")).json()
    assert one["key"] == UPLOADS and one["rclass"] == "local" and one["packageType"] == "generic"
    assert (await error_of(await edge.get("/artifactory/api/repositories/nope")))[0] == 404


async def test_ping_and_version_answer_like_artifactory(edge: Any) -> None:
    ping = await edge.get("/artifactory/api/system/ping")
    assert ping.status == 200 and ping.content_type == "text/plain" and await ping.text() == "OK"
    version = await (await edge.get("/artifactory/api/system/version")).json()
    assert set(version) == {"version", "revision", "addons"} and version["addons"] == []


async def test_unknown_api_calls_are_a_json_404(edge: Any) -> None:
    assert (await error_of(await edge.get("/artifactory/api/nothing/here")))[0] == 404
    assert (await error_of(await edge.get("/no/such/route")))[0] == 404


async def test_tokens_are_issued_listed_and_revoked_by_an_admin(edge: Any) -> None:
    created = await edge.post(
        "/access/api/v1/tokens", json={"role": "deployer", "username": "ci", "expires_in": 3600}, headers=admin()
    )
    assert created.status == 201
    token = await created.json()
    assert token["role"] == "deployer" and token["token_type"] == "Bearer"
    for header in (
        {"Authorization": f"Bearer {token['access_token']}"},
        {"X-JFrog-Art-Api": token["access_token"]},
    ):
        resp = await edge.put(f"/artifactory/{UPLOADS}/ci.bin", data=b"ci", headers=header)
        assert resp.status == 201
        assert (await resp.json())["createdBy"] == "ci"
    basic = await edge.put(
        f"/artifactory/{UPLOADS}/ci2.bin",
        data=b"ci",
        headers={"Authorization": aiohttp.encode_basic_auth("ci", token["access_token"])},
    )
    assert basic.status == 201
    listed = await (await edge.get("/access/api/v1/tokens", headers=admin())).json()
    assert [t["token_id"] for t in listed["tokens"]] == [token["token_id"]]
    assert "access_token" not in listed["tokens"][0]
    assert (await edge.delete(f"/access/api/v1/tokens/{token['token_id']}", headers=admin())).status == 204
    after = await edge.put(
        f"/artifactory/{UPLOADS}/ci3.bin", data=b"ci", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert after.status == 401
    assert (await edge.delete(f"/access/api/v1/tokens/{token['token_id']}", headers=admin())).status == 404


async def test_a_reader_token_may_read_but_not_deploy_or_issue_tokens(edge: Any) -> None:
    token = await (await edge.post("/access/api/v1/tokens", json={"role": "reader"}, headers=admin())).json()
    reader = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await edge.put(f"/artifactory/{UPLOADS}/r.bin", data=b"r", headers=reader)).status == 403
    assert (await edge.post("/access/api/v1/tokens", json={"role": "admin"}, headers=reader)).status == 403
    assert (await edge.get("/access/api/v1/tokens")).status == 401
    assert (await edge.get(f"/artifactory/api/storage/{UPLOADS}", headers=reader)).status == 200


async def test_bad_token_requests_get_a_clear_400(edge: Any) -> None:
    cases = [
        b"{not json",
        b"[1, 2]",
        b'{"role": "root"}',
        b'{"role": "reader", "expires_in": -5}',
        b'{"role": "reader", "expires_in": 1.5}',
        b'{"role": "reader", "username": ""}',
        b'{"role": "reader", "expires_in": null}',
        b'{"role": "reader", "refreshable": true}',
        b'{"role": "reader", "scope": "reader"}',
        b'{"username": "ci", "subject": "ci"}',
    ]
    for body in cases:
        resp = await edge.post(
            "/access/api/v1/tokens", data=body, headers={**admin(), "Content-Type": "application/json"}
        )
        assert (await error_of(resp))[0] == 400, body
    listed = await (await edge.get("/access/api/v1/tokens", headers=admin())).json()
    assert listed["tokens"] == []


async def test_an_oversized_json_body_is_a_413(edge: Any) -> None:
    resp = await edge.post(
        "/access/api/v1/tokens", data=io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}"), headers=admin()
    )
    assert (await error_of(resp))[0] == 413


async def test_an_expired_token_is_refused(edge: Any) -> None:
    _, secret = await edge.app[keys.tokens].create(Role.deployer, "old", expires_in=1)
    await asyncio.sleep(1.1)
    resp = await edge.put(f"/artifactory/{UPLOADS}/late.bin", data=b"x", headers={"Authorization": f"Bearer {secret}"})
    assert resp.status == 401


async def test_malformed_credentials_are_a_401(edge: Any) -> None:
    for header in ({"Authorization": "Basic !!!"}, {"Authorization": "Negotiate abc"}, {"Authorization": "Bearer "}):
        assert (await error_of(await edge.get(f"/artifactory/api/storage/{UPLOADS}", headers=header)))[0] == 401


async def test_anonymous_reads_can_be_switched_off_for_the_uploads_repo(aiohttp_client: Any, tmp_path: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, uploads_anonymous_read=False)))
    await upload(client, "private.bin", b"p")
    for url in (f"/artifactory/{UPLOADS}/private.bin", f"/artifactory/api/storage/{UPLOADS}/private.bin"):
        assert (await error_of(await client.get(url)))[0] == 401
        assert (await client.get(url, headers=admin())).status == 200
