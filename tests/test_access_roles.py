"""Users, tokens, roles and permission targets: who may read, deploy and delete what, and the
401/403 a refused caller gets, with nothing changed by a refusal."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.services import EdgeProcess
from edge.app import create_app
from repository.catalog import Repo
from repository.http import keys as core
from tests.conftest import UPLOADS, admin, error_of, make_settings, upload
from tests.edge_setup import http

USERS = "/artifactory/api/security/users"
TARGETS = "/artifactory/api/v2/security/permissions"
TOKENS = "/access/api/v1/tokens"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-password-333"}
TEAM_TARGET = {
    "name": "team-only",
    "repo": {
        "repositories": [UPLOADS],
        "include-patterns": ["team/**"],
        "actions": {"users": {"bob": ["read"]}, "groups": {"team": ["read", "write"]}},
    },
}


def basic(user: str, password: str | None = None) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password or PASSWORDS[user])}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def put_user(client: Any, name: str, **fields: Any) -> Any:
    body = {"email": f"{name}@example.com", "password": PASSWORDS.get(name, "some-password-1"), **fields}
    resp = await client.put(f"{USERS}/{name}", json=body, headers=admin())
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def put_target(client: Any, body: dict[str, Any]) -> None:
    resp = await client.put(f"{TARGETS}/{body['name']}", json=body, headers=admin())
    assert resp.status in (200, 201), await resp.text()


async def state(client: Any) -> dict[str, Any]:
    """What a refusal must leave alone: files, users, targets, tokens."""
    listing = await client.get(f"/artifactory/api/storage/{UPLOADS}?list&deep=1", headers=admin())
    return {
        "files": sorted(f["uri"] for f in (await listing.json())["files"]),
        "users": await (await client.get(USERS, headers=admin())).json(),
        "targets": await (await client.get(TARGETS, headers=admin())).json(),
        "tokens": await (await client.get(TOKENS, headers=admin())).json(),
        "blobs": sorted(p.name for p in (Path(client.app[core.storage].root)).rglob("*") if p.is_file()),
    }


@pytest.fixture
async def secured(aiohttp_client: Any, tmp_path: Path) -> Any:
    """Uploads without anonymous reads; alice (reader, group team), bob (deployer), carol (reader);
    a target that gives team/** to the team group (read, write) and to bob (read only)."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, uploads_anonymous_read=False)))
    await upload(client, "pub/a.bin", b"public bytes")
    await upload(client, "team/b.bin", b"team bytes")
    await put_user(client, "alice", groups=["team"])
    await put_user(client, "bob", role="deployer")
    await put_user(client, "carol")
    await put_target(client, TEAM_TARGET)
    return client


MATRIX = [
    # (caller, method, path, expected status)
    (None, "GET", "pub/a.bin", 401),
    ("carol", "GET", "pub/a.bin", 200),
    ("bob", "GET", "pub/a.bin", 200),
    (None, "GET", "team/b.bin", 401),
    ("carol", "GET", "team/b.bin", 403),  # covered by a target that grants carol nothing
    ("alice", "GET", "team/b.bin", 200),  # by her group
    ("bob", "GET", "team/b.bin", 200),  # by name
    ("admin", "GET", "team/b.bin", 200),
    ("alice", "PUT", "team/new.bin", 201),  # the target grants more than her reader role
    ("bob", "PUT", "team/new.bin", 403),  # and narrows bob's deployer role to read
    ("carol", "PUT", "team/new.bin", 403),
    (None, "PUT", "team/new.bin", 401),
    ("bob", "PUT", "pub/new.bin", 201),  # outside targets, the role decides
    ("alice", "PUT", "pub/new.bin", 403),
    ("bob", "DELETE", "pub/a.bin", 403),  # delete is the admin's unless a target grants it
    ("carol", "DELETE", "pub/a.bin", 403),
    (None, "DELETE", "pub/a.bin", 401),
    ("admin", "DELETE", "pub/a.bin", 204),
]


@pytest.mark.parametrize(("caller", "method", "path", "expected"), MATRIX)
async def test_roles_and_targets_decide_every_call_with_401_or_403_never_200(
    secured: Any, caller: str | None, method: str, path: str, expected: int
) -> None:
    headers = admin() if caller == "admin" else basic(caller) if caller else {}
    before = await state(secured)
    data = b"new bytes" if method == "PUT" else None
    resp = await secured.request(method, f"/artifactory/{UPLOADS}/{path}", data=data, headers=headers)
    assert resp.status == expected, await resp.text()
    if expected in (401, 403):
        status, message = await error_of(resp)
        assert message
        assert await state(secured) == before
        if expected == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_a_bad_password_an_unknown_user_and_a_bad_token_are_401(secured: Any) -> None:
    url = f"/artifactory/{UPLOADS}/pub/a.bin"
    for headers in (
        basic("alice", "wrong-password"),
        basic("nobody", "some-password-1"),
        bearer("edt_not-a-token"),
        basic("alice", "edt_not-a-token"),
    ):
        assert await error_of(await secured.get(url, headers=headers)) == (401, "Bad credentials")
    assert (await secured.get(url, headers=basic("alice"))).status == 200


async def test_passwords_are_kept_only_as_scrypt_hashes(secured: Any, tmp_path: Path) -> None:
    user = await (await secured.get(f"{USERS}/alice", headers=admin())).json()
    assert "password" not in user and user["groups"] == ["team"] and user["role"] == "reader"
    with sqlite3.connect(tmp_path / "edge" / "catalog.db") as conn:
        stored = dict(conn.execute("SELECT name, password_hash FROM users").fetchall())
    assert set(stored) == {"alice", "bob", "carol"}
    for name, hashed in stored.items():
        assert hashed.startswith("scrypt$16384$8$1$")
        assert PASSWORDS[name] not in hashed


async def test_a_changed_password_replaces_the_old_one_at_once(secured: Any) -> None:
    url = f"/artifactory/{UPLOADS}/pub/a.bin"
    assert (await secured.get(url, headers=basic("carol"))).status == 200  # remembered as checked
    resp = await secured.post(f"{USERS}/carol", json={"password": "a-new-password"}, headers=admin())
    assert resp.status == 200
    assert (await secured.get(url, headers=basic("carol"))).status == 401
    assert (await secured.get(url, headers=basic("carol", "a-new-password"))).status == 200


async def test_a_token_issued_for_a_user_acts_as_that_user_and_dies_with_it(secured: Any) -> None:
    made = await secured.post(TOKENS, json={"username": "alice", "description": "ci"}, headers=admin())
    assert made.status == 201
    token = await made.json()
    assert token["subject"] == "alice" and token["role"] == "reader"
    alice = bearer(token["access_token"])
    assert (await secured.get(f"/artifactory/{UPLOADS}/team/b.bin", headers=alice)).status == 200  # her group
    assert (await secured.put(f"/artifactory/{UPLOADS}/pub/x.bin", data=b"x", headers=alice)).status == 403
    # her role changes: her token follows at once
    assert (await secured.post(f"{USERS}/alice", json={"role": "deployer"}, headers=admin())).status == 200
    assert (await secured.put(f"/artifactory/{UPLOADS}/pub/x.bin", data=b"x", headers=alice)).status == 201
    # deleting her revokes her tokens
    deleted = await secured.delete(f"{USERS}/alice", headers=admin())
    assert deleted.status == 200 and "removed" in await deleted.text()
    assert (await secured.get(f"/artifactory/{UPLOADS}/pub/a.bin", headers=alice)).status == 401
    listed = (await (await secured.get(TOKENS, headers=admin())).json())["tokens"]
    assert [(t["subject"], t["revoked"]) for t in listed] == [("alice", True)]


async def test_a_user_may_issue_tokens_for_itself_only_and_never_above_its_role(secured: Any) -> None:
    own = await secured.post(TOKENS, json={"expires_in": 600}, headers=basic("carol"))
    assert own.status == 201
    assert (await own.json())["subject"] == "carol"
    before = await state(secured)
    refused = await secured.post(TOKENS, json={"username": "bob"}, headers=basic("carol"))
    assert (await error_of(refused))[0] == 403
    # well formed, refused by carol's present role: a conflict
    too_high = await secured.post(TOKENS, json={"role": "admin"}, headers=basic("carol"))
    assert (await error_of(too_high))[0] == 409
    by_admin = await secured.post(TOKENS, json={"username": "carol", "role": "deployer"}, headers=admin())
    assert (await error_of(by_admin))[0] == 409
    assert (await secured.get(TOKENS, headers=basic("carol"))).status == 403  # listing stays the admin's
    assert await state(secured) == before


async def test_a_revoked_token_is_refused_on_the_next_request_although_it_was_remembered(secured: Any) -> None:
    token = await (await secured.post(TOKENS, json={"role": "reader", "username": "svc"}, headers=admin())).json()
    url = f"/artifactory/{UPLOADS}/pub/a.bin"
    for _ in range(3):
        assert (await secured.get(url, headers=bearer(token["access_token"]))).status == 200
    assert (await secured.delete(f"{TOKENS}/{token['token_id']}", headers=admin())).status == 204
    assert (await secured.get(url, headers=bearer(token["access_token"]))).status == 401


async def test_anonymous_read_is_per_repo_and_targets_can_narrow_it(secured: Any) -> None:
    catalog = secured.app[core.catalog]
    original = await catalog.get_artifact(UPLOADS, "pub/a.bin")
    repo = Repo("releases-local", anonymous_read=True)
    copies = [replace(original, repo=repo.key, path=p) for p in ("app/app.bin", "private/p.bin")]
    await catalog.publish(copies, [repo])
    assert (await secured.get("/artifactory/releases-local/app/app.bin")).status == 200
    assert (await secured.get("/artifactory/releases-local/private/p.bin")).status == 200
    assert (await secured.get(f"/artifactory/{UPLOADS}/pub/a.bin")).status == 401
    private = {"name": "private", "repo": {"repositories": ["releases-*"], "include-patterns": ["private/**"]}}
    await put_target(secured, private)
    assert (await secured.get("/artifactory/releases-local/app/app.bin")).status == 200
    assert (await error_of(await secured.get("/artifactory/releases-local/private/p.bin")))[0] == 401
    assert (await secured.get("/artifactory/releases-local/private/p.bin", headers=basic("carol"))).status == 403
    private["repo"]["actions"] = {"users": {"anonymous": ["read"]}}  # type: ignore[index]
    await put_target(secured, private)
    assert (await secured.get("/artifactory/releases-local/private/p.bin")).status == 200
    assert (await secured.delete(f"{TARGETS}/private", headers=admin())).status == 200
    assert (await secured.get("/artifactory/releases-local/private/p.bin", headers=basic("carol"))).status == 200


async def test_an_admin_switches_anonymous_read_per_repo_and_bundles_keep_the_choice(secured: Any) -> None:
    made = await secured.put(
        "/artifactory/api/repositories/releases-local", json={"anonymousRead": False}, headers=admin()
    )
    assert made.status == 200 and (await made.json())["anonymousRead"] is False
    original = await secured.app[core.catalog].get_artifact(UPLOADS, "pub/a.bin")
    # a bundle publishing into it asks for anonymous read, and keeps what it finds
    await secured.app[core.catalog].publish(
        [replace(original, repo="releases-local", path="app.bin")], [Repo("releases-local", anonymous_read=True)]
    )
    url = "/artifactory/releases-local/app.bin"
    assert (await error_of(await secured.get(url)))[0] == 401
    switch = "/artifactory/api/repositories/releases-local"
    before = await state(secured)
    assert (await error_of(await secured.post(switch, json={"anonymousRead": True}, headers=basic("carol"))))[0] == 403
    assert (await error_of(await secured.post(switch, json={"anonymousRead": "yes"}, headers=admin())))[0] == 400
    assert (await error_of(await secured.post(switch, json={"rclass": "remote"}, headers=admin())))[0] == 400
    assert await state(secured) == before
    assert (await error_of(await secured.get(url)))[0] == 401
    assert (await secured.post(switch, json={"anonymousRead": True}, headers=admin())).status == 200
    assert (await secured.get(url)).status == 200
    uploads = f"/artifactory/api/repositories/{UPLOADS}"
    # configured by the node's settings: a conflict with them, not a malformed request
    assert (await error_of(await secured.post(uploads, json={"anonymousRead": True}, headers=admin())))[0] == 409
    missing = "/artifactory/api/repositories/nope"
    assert (await error_of(await secured.post(missing, json={"anonymousRead": True}, headers=admin())))[0] == 404


async def test_a_target_can_grant_delete_and_manage_is_not_delete(secured: Any) -> None:
    cleanup = {
        "name": "cleanup",
        "repo": {"repositories": ["ANY"], "include-patterns": ["pub/**"], "actions": {"users": {"carol": ["delete"]}}},
    }
    await put_target(secured, cleanup)
    assert (await secured.delete(f"/artifactory/{UPLOADS}/pub/a.bin", headers=basic("carol"))).status == 204
    # pub/** is now covered, so bob's deployer role no longer applies there
    assert (await secured.put(f"/artifactory/{UPLOADS}/pub/b.bin", data=b"b", headers=basic("bob"))).status == 403
    cleanup["repo"]["actions"] = {"users": {"carol": ["manage"]}}  # type: ignore[index]
    await put_target(secured, cleanup)
    await upload(secured, "pub/c.bin", b"c")
    assert (await secured.delete(f"/artifactory/{UPLOADS}/pub/c.bin", headers=basic("carol"))).status == 403


async def test_a_signed_url_reads_its_one_file_whatever_targets_and_anonymous_read_say(secured: Any) -> None:
    made = await secured.post(
        "/artifactory/api/signed/url",
        json={"repo_path": f"/{UPLOADS}/team/b.bin", "valid_for_secs": 600},
        headers=admin(),
    )
    assert made.status == 200, await made.text()
    url = await made.text()
    signed = url[url.index("/artifactory/") :]
    assert (await secured.get(signed)).status == 200  # anonymous read is off and a target covers team/**
    assert (await secured.get(signed, headers=basic("carol"))).status == 200
    other = signed.replace("team/b.bin", "pub/a.bin")
    assert (await error_of(await secured.get(other)))[0] == 403  # good for its own path only
    assert (await error_of(await secured.put(signed, data=b"x")))[0] == 403


async def test_listings_leave_out_what_the_caller_may_not_read(secured: Any) -> None:
    url = f"/artifactory/api/storage/{UPLOADS}?list&deep=1"
    carol = sorted(f["uri"] for f in (await (await secured.get(url, headers=basic("carol"))).json())["files"])
    alice = sorted(f["uri"] for f in (await (await secured.get(url, headers=basic("alice"))).json())["files"])
    assert carol == ["/pub/a.bin"]
    assert alice == ["/pub/a.bin", "/team/b.bin"]
    folder = await (await secured.get(f"/artifactory/api/storage/{UPLOADS}/team", headers=basic("carol"))).json()
    assert folder["children"] == []
    info = await secured.get(f"/artifactory/api/storage/{UPLOADS}/team/b.bin", headers=basic("carol"))
    assert (await error_of(info))[0] == 403


async def test_permission_targets_round_trip_in_artifactorys_v2_shape(secured: Any) -> None:
    listed = await (await secured.get(TARGETS, headers=admin())).json()
    assert [t["name"] for t in listed] == ["team-only"]
    assert listed[0]["uri"].endswith("/api/v2/security/permissions/team-only")
    got = await (await secured.get(f"{TARGETS}/team-only", headers=admin())).json()
    assert got == {
        "name": "team-only",
        "repo": {
            "include-patterns": ["team/**"],
            "exclude-patterns": [],
            "repositories": [UPLOADS],
            "actions": {"users": {"bob": ["read"]}, "groups": {"team": ["read", "write"]}},
        },
    }
    again = await secured.post(f"{TARGETS}/team-only", json=TEAM_TARGET, headers=admin())
    assert (await error_of(again))[0] == 409
    deploy_alias = {"name": "d", "repo": {"repositories": [UPLOADS], "actions": {"users": {"x": ["deploy"]}}}}
    assert (await secured.post(f"{TARGETS}/d", json=deploy_alias, headers=admin())).status == 201
    stored = await (await secured.get(f"{TARGETS}/d", headers=admin())).json()
    assert stored["repo"]["actions"]["users"] == {"x": ["write"]}
    assert stored["repo"]["include-patterns"] == ["**"]


async def test_permission_targets_survive_a_restart(aiohttp_client: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, uploads_anonymous_read=False)
    first = await aiohttp_client(create_app(settings))
    await upload(first, "team/b.bin", b"b")
    await put_user(first, "carol")
    await put_target(first, TEAM_TARGET)
    await first.close()
    second = await aiohttp_client(create_app(settings))
    assert (await second.get(f"/artifactory/{UPLOADS}/team/b.bin", headers=basic("carol"))).status == 403
    assert (await second.get(f"/artifactory/{UPLOADS}/team/b.bin", headers=admin())).status == 200


BAD_USERS = [
    ("dave", {"password": "short"}, "password"),
    ("dave", {"password": "edt_looks-like-a-token"}, "password"),
    ("dave", {"email": "d@example.com"}, "password"),  # a new user needs a password
    ("dave", {"password": "long-enough-1", "role": "root"}, "role"),
    ("dave", {"password": "long-enough-1", "role": {"name": "admin"}}, "role"),
    ("dave", {"password": "long-enough-1", "role": ["admin"]}, "role"),
    ("dave", {"password": "long-enough-1", "admin": True, "role": "reader"}, "disagree"),
    ("dave", {"password": "long-enough-1", "groups": "team"}, "groups"),
    ("dave", {"password": "long-enough-1", "shoeSize": 44}, "shoeSize"),
    ("dave", {"password": "long-enough-1", "name": "eve"}, "name"),
    ("anonymous", {"password": "long-enough-1"}, "anonymous"),
    ("bad name", {"password": "long-enough-1"}, "user name"),
]


@pytest.mark.parametrize(("name", "body", "mentions"), BAD_USERS)
async def test_a_bad_user_definition_is_a_400_that_says_why_and_stores_nothing(
    secured: Any, name: str, body: dict[str, Any], mentions: str
) -> None:
    before = await state(secured)
    resp = await secured.put(f"{USERS}/{name}", json=body, headers=admin())
    status, message = await error_of(resp)
    assert status == 400 and mentions in message
    assert await state(secured) == before


BAD_TARGETS = [
    ({"repo": {"include-patterns": ["**"]}}, "repositories"),
    ({"repo": {"repositories": []}}, "repositories"),
    ({"repo": {"repositories": ["a/b"]}}, "repositories"),
    ({"repo": {"repositories": ["x"], "actions": {"users": {"bob": ["fly"]}}}}, "fly"),
    ({"repo": {"repositories": ["x"], "actions": {"users": {"anonymous": ["write"]}}}}, "anonymous"),
    ({"repo": {"repositories": ["x"], "include-patterns": "**"}}, "include-patterns"),
    ({"repo": {"repositories": ["x"]}, "build": {}}, "build"),
    ({"repo": {"repositories": ["x"], "actions": {"robots": {}}}}, "actions"),
    ({"name": "other", "repo": {"repositories": ["x"]}}, "name"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_TARGETS)
async def test_a_bad_permission_target_is_a_400_that_says_why_and_changes_nothing(
    secured: Any, body: dict[str, Any], mentions: str
) -> None:
    before = await state(secured)
    resp = await secured.put(f"{TARGETS}/team-only", json=body, headers=admin())
    status, message = await error_of(resp)
    assert status == 400 and mentions in message
    assert await state(secured) == before
    assert (await secured.get(f"/artifactory/{UPLOADS}/team/b.bin", headers=basic("alice"))).status == 200


@pytest.mark.parametrize("field", ["role", "scope"])
@pytest.mark.parametrize("role", [{"name": "admin"}, ["admin"]])
async def test_a_token_request_whose_role_is_not_a_role_name_is_a_400(secured: Any, field: str, role: Any) -> None:
    before = await state(secured)
    resp = await secured.post(TOKENS, json={"username": "svc", field: role}, headers=admin())
    status, message = await error_of(resp)
    assert status == 400 and "role" in message
    assert await state(secured) == before


@pytest.mark.parametrize("caller", [None, "carol", "bob"])
async def test_only_an_admin_manages_users_and_targets(secured: Any, caller: str | None) -> None:
    headers = basic(caller) if caller else {}
    expected = 403 if caller else 401
    before = await state(secured)
    calls = [
        ("GET", USERS, None),
        ("GET", f"{USERS}/alice", None),
        ("PUT", f"{USERS}/mallory", {"password": "mallory-password"}),
        ("POST", f"{USERS}/carol", {"role": "admin"}),
        ("DELETE", f"{USERS}/alice", None),
        ("GET", TARGETS, None),
        ("PUT", f"{TARGETS}/mine", {"repo": {"repositories": ["ANY"], "actions": {"users": {"carol": ["write"]}}}}),
        ("DELETE", f"{TARGETS}/team-only", None),
    ]
    for method, url, body in calls:
        resp = await secured.request(method, url, json=body, headers=headers)
        assert (await error_of(resp))[0] == expected, (method, url)
    assert await state(secured) == before


def test_users_and_targets_work_against_a_real_edge_process(tmp_path: Path) -> None:
    edge = EdgeProcess(tmp_path / "edge", env={"EDGE_UPLOADS_ANONYMOUS_READ": "false"})
    with edge:
        token = edge.admin_token
        put = _put_bytes(edge, "team/b.bin", b"team bytes", token)
        assert put == 201
        status, _ = http("PUT", f"{edge.url}{USERS}/alice", token, {"password": PASSWORDS["alice"], "groups": ["team"]})
        assert status == 201
        status, _ = http("PUT", f"{edge.url}{USERS}/carol", token, {"password": PASSWORDS["carol"]})
        assert status == 201
        status, _ = http("PUT", f"{edge.url}{TARGETS}/team-only", token, TEAM_TARGET)
        assert status == 201
        url = f"{edge.artifactory_url}/{UPLOADS}/team/b.bin"
        assert _get(url, basic("alice")) == (200, b"team bytes")
        assert _get(url, basic("carol"))[0] == 403
        assert _get(url, {})[0] == 401
        assert _get(url, basic("carol", "wrong-password"))[0] == 401
        made = subprocess.run(
            [str(Path(sys.executable).parent / "edge"), "token", "create", "--subject", "alice"]
            + ["--url", edge.url, "--token", token],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        assert "(role reader)" in made.stderr
        assert _get(url, bearer(made.stdout.strip())) == (200, b"team bytes")  # as alice, through her group
    assert edge.returncode == 0


def _put_bytes(edge: EdgeProcess, path: str, data: bytes, token: str) -> int:
    request = urllib.request.Request(f"{edge.artifactory_url}/{UPLOADS}/{path}", data=data, method="PUT")
    request.add_header("Authorization", f"Bearer {token}")
    return _open(request)[0]


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    return _open(urllib.request.Request(url, headers=headers))


def _open(request: urllib.request.Request) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        json.loads(body)  # refusals carry a JSON error body
        return exc.code, body
