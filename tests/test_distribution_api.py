"""The Distribution service over REST: source repos, bundles, signing, as release managers use it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from distribution.app import create_app
from distribution.settings import DistributionSettings
from tests.conftest import ADMIN_TOKEN, admin

V1 = "/distribution/api/v1"
REPO = "releases-local"


@pytest.fixture
async def dist(aiohttp_client: Any, tmp_path: Path) -> Any:
    settings = DistributionSettings(
        data_dir=tmp_path / "dist", port=0, admin_token=ADMIN_TOKEN, repos=(REPO,), max_bundle_artifacts=50
    )
    return await aiohttp_client(create_app(settings))


async def deploy(client: Any, path: str, data: bytes, repo: str = REPO) -> None:
    resp = await client.put(f"/artifactory/{repo}/{path}", data=data, headers=admin())
    assert resp.status == 201, await resp.text()


async def with_files(client: Any) -> dict[str, bytes]:
    files = {f"app/1.4.0/app-{n}.tar.gz": f"content {n}".encode() for n in ("linux", "mac", "win")}
    files["app/1.3.0/app-linux.tar.gz"] = b"old"
    for path, data in files.items():
        await deploy(client, path, data)
    return files


def create_body(version: str = "1.4.0", pattern: str = f"{REPO}/app/1.4.0/*", **extra: Any) -> dict[str, Any]:
    return {"name": "app", "version": version, "spec": {"queries": [{"pattern": pattern}]}, **extra}


async def flat_error(resp: Any) -> tuple[int, str]:
    body = await resp.json()
    assert set(body) == {"status_code", "message"}
    assert body["status_code"] == resp.status
    return resp.status, body["message"]


async def test_source_repos_take_uploads_that_an_edge_would_refuse(dist: Any) -> None:
    await deploy(dist, "a/b.bin", b"bytes")
    assert await (await dist.get(f"/artifactory/{REPO}/a/b.bin", headers=admin())).read() == b"bytes"
    created = await dist.put("/artifactory/api/repositories/libs-local", json={"rclass": "local"}, headers=admin())
    assert created.status == 200
    await deploy(dist, "x.bin", b"x", repo="libs-local")
    again = await dist.put("/artifactory/api/repositories/libs-local", json={"rclass": "local"}, headers=admin())
    assert again.status == 200
    remote_body = {"rclass": "remote", "url": "http://edge-a:8082/artifactory/releases-local"}
    remote = await dist.put("/artifactory/api/repositories/r2", json=remote_body, headers=admin())
    assert remote.status == 409
    assert "configured on edges" in (await remote.json())["errors"][0]["message"]
    keys = [r["key"] for r in await (await dist.get("/artifactory/api/repositories", headers=admin())).json()]
    assert keys == ["libs-local", REPO]


async def test_a_signed_bundle_answers_its_manifest_checksum(dist: Any) -> None:
    files = await with_files(dist)
    resp = await dist.post(f"{V1}/release_bundle", json=create_body(sign_immediately=True), headers=admin())
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["state"] == "SIGNED"
    assert sorted(a["targetRepoPath"] for a in body["artifacts"]) == sorted(
        f"{REPO}/{p}" for p in files if p.startswith("app/1.4.0/")
    )
    for a in body["artifacts"]:
        assert a["checksum"] == hashlib.sha256(files[a["sourceRepoPath"].split("/", 1)[1]]).hexdigest()
    manifest = await (await dist.get(f"{V1}/release_bundle/app/1.4.0/manifest", headers=admin())).read()
    assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(manifest).hexdigest()
    decoded = json.loads(manifest)
    assert [a["target"] for a in decoded["artifacts"]] == sorted(a["target"] for a in decoded["artifacts"])
    assert manifest == json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


async def test_the_signature_verifies_with_plain_gpg_and_tampering_is_refused(dist: Any, tmp_path: Path) -> None:
    await with_files(dist)
    await dist.post(f"{V1}/release_bundle", json=create_body(sign_immediately=True), headers=admin())
    manifest = await (await dist.get(f"{V1}/release_bundle/app/1.4.0/manifest", headers=admin())).read()
    signature = await (await dist.get(f"{V1}/release_bundle/app/1.4.0/signature", headers=admin())).text()
    public = await (await dist.get(f"{V1}/keys/gpg/public")).text()
    assert "PUBLIC KEY" in public and "PRIVATE" not in public
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--no-autostart", "--status-fd", "1"]
    subprocess.run([*gpg, "--import"], input=public.encode(), check=True, capture_output=True)
    (tmp_path / "sig.asc").write_text(signature)

    def verify(data: bytes) -> subprocess.CompletedProcess[bytes]:
        (tmp_path / "m.json").write_bytes(data)
        return subprocess.run(
            [*gpg, "--verify", str(tmp_path / "sig.asc"), str(tmp_path / "m.json")], capture_output=True
        )

    good = verify(manifest)
    assert good.returncode == 0 and b"[GNUPG:] VALIDSIG" in good.stdout
    flipped = bytearray(manifest)
    flipped[len(flipped) // 2] ^= 1
    assert verify(bytes(flipped)).returncode != 0
    sha = json.loads(manifest)["artifacts"][0]["sha256"]
    other = sha[:-1] + ("0" if sha[-1] != "0" else "1")
    assert verify(manifest.replace(sha.encode(), other.encode())).returncode != 0


async def test_creating_the_same_bundle_again_is_the_same_answer_and_other_content_is_409(dist: Any) -> None:
    await with_files(dist)
    first = await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())
    retry = await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())
    assert (first.status, retry.status) == (201, 201)
    assert (await first.json()) == (await retry.json())
    other = await dist.post(f"{V1}/release_bundle", json=create_body(pattern=f"{REPO}/app/**"), headers=admin())
    status, message = await flat_error(other)
    assert status == 409 and "already exists" in message
    bundle = await (await dist.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())).json()
    assert bundle["artifacts_count"] == 3


async def test_an_open_bundle_can_change_and_a_signed_one_cannot(dist: Any) -> None:
    await with_files(dist)
    await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())
    update = {"spec": {"queries": [{"pattern": f"{REPO}/app/1.4.0/app-linux.tar.gz"}]}, "description": "linux only"}
    resp = await dist.put(f"{V1}/release_bundle/app/1.4.0", json=update, headers=admin())
    assert resp.status == 200
    assert (await resp.json())["artifacts_count"] == 1
    signed = await dist.post(f"{V1}/release_bundle/app/1.4.0/sign", headers=admin())
    assert signed.status == 200 and signed.headers["X-Checksum-Sha256"]
    again = await dist.post(f"{V1}/release_bundle/app/1.4.0/sign", headers=admin())
    assert again.status == 200 and again.headers["X-Checksum-Sha256"] == signed.headers["X-Checksum-Sha256"]
    late = await dist.put(f"{V1}/release_bundle/app/1.4.0", json=update, headers=admin())
    assert (await flat_error(late))[0] == 409


async def test_bundles_are_listed_ten_a_page_newest_first(dist: Any) -> None:
    await with_files(dist)
    for i in range(12):
        resp = await dist.post(f"{V1}/release_bundle", json=create_body(version=f"1.{i}"), headers=admin())
        assert resp.status == 201
    page = await dist.get(f"{V1}/release_bundle", headers=admin())
    assert [b["version"] for b in await page.json()][:1] == ["1.11"]
    assert (page.headers["X-RangeLimit-Total"], page.headers["X-RangeLimit-EndPos"]) == ("12", "10")
    rest = await dist.get(f"{V1}/release_bundle/app?start_pos=10", headers=admin())
    assert [b["version"] for b in await rest.json()] == ["1.1", "1.0"]
    assert (await dist.get(f"{V1}/release_bundle?start_pos=-1", headers=admin())).status == 400


async def test_a_deleted_bundle_is_gone(dist: Any) -> None:
    await with_files(dist)
    await dist.post(f"{V1}/release_bundle", json=create_body(sign_immediately=True), headers=admin())
    assert (await dist.delete(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 204
    assert (await flat_error(await dist.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())))[0] == 404
    assert (await flat_error(await dist.delete(f"{V1}/release_bundle/app/1.4.0", headers=admin())))[0] == 404


async def test_aql_and_mappings_and_added_props_shape_the_bundle(dist: Any) -> None:
    await with_files(dist)
    aql = 'items.find({"repo":"releases-local","path":{"$match":"app/1.4.0"},"name":{"$match":"*-linux*"}})'
    spec = {
        "queries": [
            {
                "aql": aql,
                "mappings": [{"input": "releases-local/app/1.4.0/(.*)", "output": "prod-local/app/$1"}],
                "added_props": [{"key": "channel", "values": ["stable"]}],
            }
        ]
    }
    resp = await dist.post(f"{V1}/release_bundle", json={"name": "app", "version": "2", "spec": spec}, headers=admin())
    assert resp.status == 201, await resp.text()
    (artifact,) = (await resp.json())["artifacts"]
    assert artifact["targetRepoPath"] == "prod-local/app/app-linux.tar.gz"
    assert artifact["sourceRepoPath"] == f"{REPO}/app/1.4.0/app-linux.tar.gz"
    assert artifact["props"] == [{"key": "channel", "values": ["stable"]}]


def one_query(**query: Any) -> bytes:
    return json.dumps({"name": "app", "version": "1", "spec": {"queries": [query]}}).encode()


BAD_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (json.dumps({"name": "app", "version": "1"}).encode(), "spec"),
    (json.dumps(create_body(pattern=f"{REPO}/nothing/*")).encode(), "matches no artifacts"),
    (json.dumps({**create_body(), "name": "../app"}).encode(), "name"),
    (json.dumps({**create_body(), "version": "1 0"}).encode(), "version"),
    (json.dumps({**create_body(), "name": "a" * 129}).encode(), "name"),
    (json.dumps({**create_body(), "sign_immediately": "yes"}).encode(), "sign_immediately"),
    (json.dumps({**create_body(), "colour": "blue"}).encode(), "colour"),
    (json.dumps({"name": "app", "version": "1", "spec": {"queries": []}}).encode(), "no queries"),
    (one_query(aql='items.find({"created":{"$gt":"x"}})'), "created"),
    (json.dumps(create_body(pattern=f"{REPO}/app/**")).encode(), "limit"),
    (one_query(pattern=f"{REPO}/app/1.4.0/*", mappings=[{"input": ".*", "output": "prod-local/same"}]), "target path"),
    (one_query(pattern=f"{REPO}/app/1.4.0/*", mappings=[{"input": "(.*)", "output": "../$1"}]), "unsafe"),
    # one strict parser for every body: a key given twice or NaN never reaches the checks
    (json.dumps(create_body())[:-1].encode() + b', "name": "other"}', "duplicate key 'name'"),
    (json.dumps(create_body())[:-1].encode() + b', "dry_run": NaN}', "NaN is not allowed"),
]


@pytest.mark.parametrize(("body", "says"), BAD_BODIES)
async def test_bad_bundle_requests_get_a_clear_400_and_store_nothing(dist: Any, body: bytes, says: str) -> None:
    await with_files(dist)
    for i in range(60):  # more files than max_bundle_artifacts under app/
        await deploy(dist, f"app/many/{i}.bin", str(i).encode())
    resp = await dist.post(f"{V1}/release_bundle", data=body, headers={**admin(), "Content-Type": "application/json"})
    status, message = await flat_error(resp)
    assert status == 400
    assert says.lower() in message.lower(), message
    listed = await dist.get(f"{V1}/release_bundle", headers=admin())
    assert listed.headers["X-RangeLimit-Total"] == "0"


async def test_bundle_calls_need_tokens_and_writes_need_an_admin(dist: Any) -> None:
    await with_files(dist)
    assert (await dist.post(f"{V1}/release_bundle", json=create_body())).status == 401
    token = await (await dist.post("/access/api/v1/tokens", json={"role": "reader"}, headers=admin())).json()
    reader = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await dist.post(f"{V1}/release_bundle", json=create_body(), headers=reader)).status == 403
    assert (await dist.get(f"{V1}/release_bundle", headers=reader)).status == 200
    assert (await dist.get(f"{V1}/release_bundle")).status == 401


async def test_dry_run_answers_the_bundle_without_storing_it(dist: Any) -> None:
    await with_files(dist)
    resp = await dist.post(f"{V1}/release_bundle", json=create_body(dry_run=True), headers=admin())
    assert resp.status == 200
    assert (await resp.json())["artifacts_count"] == 3
    assert (await dist.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())).status == 404


async def test_a_second_key_signs_by_alias_and_a_signed_bundle_refuses_another_key(dist: Any, keys: Any) -> None:
    await with_files(dist)
    upload = {"alias": "release-2026", "key": {"private_key": keys.alice.private}}
    resp = await dist.post(f"{V1}/keys/gpg", json=upload, headers=admin())
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["key"]["fingerprint"] == keys.alice.fingerprint
    body = create_body(sign_immediately=True, signing_key_alias="release-2026")
    signed = await (await dist.post(f"{V1}/release_bundle", json=body, headers=admin())).json()
    assert signed["signed_by"] == keys.alice.fingerprint
    other = await dist.post(
        f"{V1}/release_bundle/app/1.4.0/sign", json={"signing_key_alias": "default"}, headers=admin()
    )
    status, message = await flat_error(other)
    assert status == 409 and "another key" in message
    listed = await (await dist.get(f"{V1}/keys/gpg", headers=admin())).json()
    assert sorted(k["alias"] for k in listed["keys"]) == ["default", "release-2026"]
    assert [k["alias"] for k in listed["keys"] if k["default"]] == ["default"]
    assert all("PRIVATE" not in k["public_key"] for k in listed["keys"])


@pytest.mark.parametrize(
    ("key_text", "status"), [("not a key", 400), ("public", 400), ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n", 400)]
)
async def test_malformed_or_public_only_signing_keys_are_refused(
    dist: Any, keys: Any, key_text: str, status: int
) -> None:
    text = keys.bob.public if key_text == "public" else key_text
    resp = await dist.post(f"{V1}/keys/gpg", json={"alias": "x", "key": {"private_key": text}}, headers=admin())
    assert (await flat_error(resp))[0] == status
    listed = await (await dist.get(f"{V1}/keys/gpg", headers=admin())).json()
    assert [k["alias"] for k in listed["keys"]] == ["default"]


async def test_signing_with_an_unknown_key_alias_is_a_clear_error(dist: Any) -> None:
    await with_files(dist)
    await dist.post(f"{V1}/release_bundle", json=create_body(), headers=admin())
    resp = await dist.post(f"{V1}/release_bundle/app/1.4.0/sign", json={"signing_key_alias": "nope"}, headers=admin())
    status, message = await flat_error(resp)
    assert status == 404 and "nope" in message
    bundle = await (await dist.get(f"{V1}/release_bundle/app/1.4.0", headers=admin())).json()
    assert bundle["state"] == "OPEN"
