"""Every JSON write API on both services takes strict JSON: an unknown key, ``NaN`` in any
field, and ``null`` in any field (none is nullable; the integers the OpenAPI documents name are
checked by name, sent or not) are each a 400 in the API's error shape, and the catalog is
exactly as before.

Each operation has a valid body that the same app then accepts, so a refusal is the
mutation's doing and not a body that was wrong anyway. The apps are the real ones, in
process, with real gpg keys and a real signed manifest where an operation needs them.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from distribution.app import create_app as create_distribution_app
from distribution.settings import DistributionSettings
from edge.app import create_app as create_edge_app
from repository.http.openapi import load_document
from tests.api_formats import ed25519_pem, manifest_artifact
from tests.conftest import ADMIN_TOKEN, UPLOADS, make_settings
from tests.gpg_keys import KeyFactory, KeySet
from wire import protocol, pull
from wire.manifest import Manifest, encode

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REPO = "releases-local"
FILE = b"a file the bodies point at\n"
RELAYED = "0.9"  # the version of the transaction the edge's state commits, for a relay to ask for
CREATED = "2026-01-02T03:04:05.000Z"  # fixed, so the relayed transaction's id is known beforehand
PULL_EDGE = "pull-1"


async def _ok(resp: Any) -> None:
    assert resp.status < 300, f"{resp.method} {resp.url}: {resp.status} {await resp.text()}"


def _manifest(version: str) -> bytes:
    target = f"{REPO}/app/{version}/app.bin"
    artifact = manifest_artifact(target, target, FILE)
    return encode(Manifest.create("app", version, [artifact], created=CREATED, created_by="release-manager"))


def _relayed_id() -> str:
    """The id of the transaction ``_edge_state`` commits: its manifest's sha256."""
    return hashlib.sha256(_manifest(RELAYED)).hexdigest()


def _signed_manifest(key_factory: KeyFactory, keys: KeySet, version: str = "1.0") -> dict[str, str]:
    manifest = _manifest(version)
    return {"manifest": manifest.decode(), "signature": key_factory.sign(keys.alice, manifest).decode()}


async def _edge_state(client: Any, key_factory: KeyFactory, keys: KeySet) -> None:
    await _ok(await client.put(f"/artifactory/api/repositories/{REPO}", json={}, headers=ADMIN))
    await _ok(await client.put(f"/artifactory/{UPLOADS}/a.bin", data=FILE, headers=ADMIN))
    await _ok(await client.put("/artifactory/api/security/users/alice", json={"password": "pw-long-1"}, headers=ADMIN))
    trusted = {"alias": "dist", "public_key": keys.alice.public}
    await _ok(await client.post("/artifactory/api/security/keys/trusted", json=trusted, headers=ADMIN))
    started = await client.post(protocol.TRANSACTIONS, json=_signed_manifest(key_factory, keys, RELAYED), headers=ADMIN)
    await _ok(started)
    for sha256 in (await started.json())["missing"]:
        await _ok(await client.put(protocol.blob_path(_relayed_id(), sha256), data=FILE, headers=ADMIN))
    await _ok(await client.post(protocol.commit_path(_relayed_id()), headers=ADMIN))


async def _distribution_state(client: Any) -> dict[tuple[str, str], dict[str, str]]:
    """The state the bodies need; answers the headers an operation takes instead of an admin's."""
    await _ok(await client.put(f"/artifactory/api/repositories/{REPO}", json={}, headers=ADMIN))
    await _ok(await client.put(f"/artifactory/{REPO}/app/1.0/app.bin", data=FILE, headers=ADMIN))
    spec = {"queries": [{"pattern": f"{REPO}/app/**"}]}
    for version, signed in (("1.4.0", False), ("1.5.0", True)):  # one to change and sign, one to distribute
        bundle = {"name": "app", "version": version, "spec": spec, "sign_immediately": signed}
        await _ok(await client.post("/distribution/api/v1/release_bundle", json=bundle, headers=ADMIN))
    edge = {
        "name": "edge-1",
        "url": "http://127.0.0.1:9",
        "site_name": "us-east",
        "city_name": "nyc",
        "country_code": "US",
        "token": "edge-token",
    }
    await _ok(await client.post("/distribution/api/v1/edges", json=edge, headers=ADMIN))
    pull_edge = {
        "name": PULL_EDGE,
        "mode": "pull",
        "site_name": "inbound-only",
        "city_name": "ber",
        "country_code": "DE",
    }
    registered = await client.post("/distribution/api/v1/edges", json=pull_edge, headers=ADMIN)
    await _ok(registered)
    rules = {"distribution_rules": [{"site_name": "inbound-only"}]}  # job 1, in queue for the pull-mode edge
    await _ok(await client.post("/distribution/api/v1/distribution/app/1.5.0", json=rules, headers=ADMIN))
    hook = {"url": "http://127.0.0.1:9/hooks", "events": ["bundle.created"]}  # subscription 1
    await _ok(await client.post("/distribution/api/v1/webhooks", json=hook, headers=ADMIN))
    credential = {pull.CREDENTIAL_HEADER: (await registered.json())["credential"]}
    return {("POST", "/distribution/api/v1/pull/{edge}/jobs/{id}"): credential}


def edge_bodies(key_factory: KeyFactory, keys: KeySet) -> dict[tuple[str, str], dict[str, Any]]:
    """A body each edge write API accepts, once ``_edge_state`` is in place."""
    target = {"repo": {"repositories": ["releases-*"], "actions": {"users": {"alice": ["read"]}}}}
    return {
        ("PUT", "/artifactory/api/repositories/{key}"): {"anonymousRead": False, "rclass": "local"},
        ("POST", "/artifactory/api/repositories/{key}"): {"description": "changed"},
        ("POST", "/access/api/v1/tokens"): {"username": "ci", "role": "reader", "expires_in": 3600},
        ("POST", "/artifactory/api/signed/url"): {"repo_path": f"/{UPLOADS}/a.bin", "valid_for_secs": 60},
        ("POST", "/artifactory/api/signed/keys"): {"kid": "partner", "public_key": ed25519_pem()},
        ("PUT", "/artifactory/api/access/rules"): {"rules": [{"repos": ["x-*"], "deny_cidrs": ["203.0.113.0/24"]}]},
        ("PUT", "/artifactory/api/security/users/{name}"): {"password": "pw-long-2", "groups": ["team"]},
        ("POST", "/artifactory/api/security/users/{name}"): {"email": "alice@example.com", "admin": False},
        ("PUT", "/artifactory/api/v2/security/permissions/{name}"): target,
        ("POST", "/artifactory/api/v2/security/permissions/{name}"): target,
        ("POST", "/artifactory/api/distribution/transactions"): _signed_manifest(key_factory, keys),
        ("POST", "/artifactory/api/security/keys/trusted"): {"alias": "other", "public_key": keys.bob.public},
        ("POST", "/artifactory/api/downloads/statistics"): {
            "downloads": [{"repo": UPLOADS, "path": "a.bin", "count": 1}]
        },
        ("PATCH", "/artifactory/api/metadata/{repo}/{path}"): {"props": {"stage": "approved"}},
        ("POST", "/artifactory/api/distribution/relays"): {
            "transaction_id": _relayed_id(),
            "child": "child-1",
            "url": "http://127.0.0.1:9",
            "token": "child-token",
        },
    }


def distribution_bodies(keys: KeySet) -> dict[tuple[str, str], dict[str, Any]]:
    """A body each Distribution service write API accepts, once ``_distribution_state`` is in place."""
    spec = {"queries": [{"pattern": f"{REPO}/app/**", "query_name": "app"}]}
    rules = [{"site_name": "us-*", "country_codes": ["US"]}]
    return {
        ("PUT", "/artifactory/api/repositories/{key}"): {"anonymousRead": False},
        ("POST", "/access/api/v1/tokens"): {"username": "ci", "role": "reader", "expires_in": 3600},
        ("POST", "/distribution/api/v1/release_bundle"): {
            "name": "app",
            "version": "2.0",
            "spec": spec,
            "release_notes": {"syntax": "markdown", "content": "# 2.0"},
            "storing_repository": REPO,
            "sign_immediately": True,
            "signing_key_alias": "default",
        },
        ("PUT", "/distribution/api/v1/release_bundle/{name}/{version}"): {"spec": spec, "description": "d"},
        ("POST", "/distribution/api/v1/release_bundle/{name}/{version}/sign"): {"storing_repository": REPO},
        ("POST", "/distribution/api/v1/distribution/{name}/{version}"): {"dry_run": True, "distribution_rules": rules},
        ("POST", "/distribution/api/v1/distribution/{name}/{version}/delete"): {
            "dry_run": True,
            "distribution_rules": rules,
        },
        ("POST", "/distribution/api/v1/edges"): {
            "name": "edge-2",
            "url": "http://127.0.0.1:10",
            "site_name": "eu",
            "city_name": "ber",
            "country_code": "DE",
            "token": "t",
        },
        ("POST", "/distribution/api/v1/keys/gpg"): {"alias": "next", "key": {"private_key": keys.bob.private}},
        ("POST", "/distribution/api/v1/distribution/{name}/{version}/repair"): {"dry_run": True},
        ("PATCH", "/artifactory/api/metadata/{repo}/{path}"): {"props": {"stage": "approved"}},
        ("POST", "/distribution/api/v1/webhooks"): {
            "url": "http://127.0.0.1:9/other",
            "events": ["bundle.signed"],
            "secret": "a-secret-of-sixteen-or-more",
            "enabled": True,
        },
        ("PATCH", "/distribution/api/v1/webhooks/{id}"): {"enabled": False},
        ("POST", "/distribution/api/v1/pull/{edge}/jobs/{id}"): {
            "state": "In progress",
            "distributed_files": 0,
            "distributed_bytes": 0,
            "transaction_id": "ab" * 32,
            "error": "",
        },
    }


# Valid bodies the state refuses, with what it says: the body was read and judged valid.
REFUSED_BY_STATE = {
    ("POST", "/distribution/api/v1/distribution/{name}/{version}/repair"): (409, "No registered edge holds app/1.5.0"),
}


def concrete(path: str, service: str) -> str:
    """The path of the operation, naming what the state holds."""
    if "{repo}/{path}" in path:  # a file the state deployed: the edge's in its writable uploads repo
        samples = {"repo": UPLOADS, "path": "a.bin"} if service == "edge" else {"repo": REPO, "path": "app/1.0/app.bin"}
    elif "/distribution/api/v1/distribution/" in path:
        samples = {"name": "app", "version": "1.5.0"}  # signed
    elif "release_bundle" in path:
        samples = {"name": "app", "version": "1.4.0"}  # open
    else:
        samples = {"key": REPO, "name": "team" if "permissions" in path else "alice", "edge": PULL_EDGE, "id": "1"}
    for name, value in samples.items():
        path = path.replace("{" + name + "}", value)
    return path


def integer_fields(service: str, method: str, path: str) -> list[str]:
    """The top-level fields the document says are integers."""
    document = load_document(service)
    schema = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    while "$ref" in schema or "allOf" in schema:
        ref = schema["$ref"] if "$ref" in schema else schema["allOf"][0].get("$ref")
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema["allOf"][0]
    return [name for name, prop in schema.get("properties", {}).items() if prop.get("type") == "integer"]


def json_operations(service: str) -> set[tuple[str, str]]:
    document = load_document(service)
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "application/json" in operation.get("requestBody", {}).get("content", {})
    }


def catalog_rows(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table but the audit trail's and its row counter (a refusal is recorded there, as it
    should be)."""
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        kept = [t for t in tables if "audit" not in t and t != "sqlite_sequence"]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in kept}


def mutations(body: dict[str, Any], integers: list[str]) -> dict[str, dict[str, Any]]:
    found = {"an unknown key": {**body, "surplus": 1}}
    found.update({f"NaN in {name}": {**body, name: math.nan} for name in body})
    found.update({f"null in {name}": {**body, name: None} for name in {*body, *integers}})
    return found


async def _check(
    client: Any, service: str, method: str, path: str, body: dict[str, Any], database: Path, headers: dict[str, str]
) -> None:
    before = catalog_rows(database)
    for what, mutated in mutations(body, integer_fields(service, method, path)).items():
        data = json.dumps(mutated, allow_nan=True)
        resp = await client.request(
            method, concrete(path, service), data=data, headers={**headers, "Content-Type": "application/json"}
        )
        answer = await resp.json()
        assert resp.status == 400, f"{method} {path} with {what}: {resp.status} {answer}"
        status = answer["status_code"] if path.startswith("/distribution/") else answer["errors"][0]["status"]
        assert status == 400, answer
        assert catalog_rows(database) == before, f"{method} {path} with {what} changed the catalog"
    accepted = await client.request(method, concrete(path, service), json=body, headers=headers)
    if (method, path) in REFUSED_BY_STATE:
        status, message = REFUSED_BY_STATE[method, path]
        assert (accepted.status, (await accepted.json())["message"].startswith(message)) == (status, True)
        return
    assert accepted.status < 300, f"{method} {path}: the valid body got {accepted.status} {await accepted.text()}"


def test_every_json_write_api_has_a_valid_body_here(key_factory: KeyFactory, keys: KeySet) -> None:
    assert set(edge_bodies(key_factory, keys)) == json_operations("edge")
    assert set(distribution_bodies(keys)) == service_operations()


def service_operations() -> set[tuple[str, str]]:
    """The Distribution service's own; the fleet's have a test of their own (tests/test_fleet_strict_bodies.py)."""
    return {op for op in json_operations("distribution") if not op[1].startswith("/fleet/")}


@pytest.mark.parametrize("operation", sorted(json_operations("edge")), ids=" ".join)
async def test_an_edge_write_api_refuses_unknown_keys_nan_and_null_integers(
    operation: tuple[str, str], aiohttp_client: Any, tmp_path: Path, key_factory: KeyFactory, keys: KeySet
) -> None:
    settings = make_settings(tmp_path)
    client = await aiohttp_client(create_edge_app(settings))
    await _edge_state(client, key_factory, keys)
    method, path = operation
    body = edge_bodies(key_factory, keys)[operation]
    await _check(client, "edge", method, path, body, settings.database_path, ADMIN)


@pytest.mark.parametrize("operation", sorted(service_operations()), ids=" ".join)
async def test_a_distribution_write_api_refuses_unknown_keys_nan_and_null_integers(
    operation: tuple[str, str], aiohttp_client: Any, tmp_path: Path, keys: KeySet
) -> None:
    settings = DistributionSettings(data_dir=tmp_path / "distribution", port=0, admin_token=ADMIN_TOKEN)
    app: web.Application = create_distribution_app(settings)
    client = await aiohttp_client(app)
    headers = (await _distribution_state(client)).get(operation, ADMIN)
    method, path = operation
    body = distribution_bodies(keys)[operation]
    await _check(client, "distribution", method, path, body, settings.database_path, headers)
