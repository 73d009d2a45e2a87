"""The edge side of two-phase distribution (docs/transactions.md), as the Distribution service uses it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.services import EdgeProcess
from edge.app import create_app
from edge.keys import transactions_key
from edge.settings import EdgeSettings
from repository.catalog import now_ms
from tests.conftest import UPLOADS, admin, error_of, make_settings, upload
from tests.gpg_keys import KeyFactory, KeySet, TestKey
from wire.manifest import Manifest, ManifestArtifact, encode

TX = "/artifactory/api/distribution/transactions"
KEYS = "/artifactory/api/security/keys/trusted"
BUNDLES = "/artifactory/api/distribution/bundles"
REPO = "releases-local"
MiB = 1024 * 1024
FILES = {"app.tar.gz": b"the application " * 1000, "README.md": b"# read me\n", "lib/core.so": os.urandom(300_000)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_of(files: dict[str, bytes], name: str = "app", version: str = "1.0.0", repo: str = REPO) -> Manifest:
    artifacts = [
        ManifestArtifact(
            target=f"{repo}/{name}/{version}/{path}",
            source=f"src-local/{path}",
            size=len(data),
            sha256=sha256(data),
            sha1=hashlib.sha1(data).hexdigest(),
            md5=hashlib.md5(data).hexdigest(),
        )
        for path, data in files.items()
    ]
    return Manifest.create(name, version, artifacts, created_by="release-manager")


def signed(key_factory: KeyFactory, key: TestKey, manifest: Manifest, **sign: Any) -> dict[str, str]:
    data = encode(manifest)
    return {"manifest": data.decode(), "signature": key_factory.sign(key, data, **sign).decode()}


def tx_id(body: dict[str, str]) -> str:
    return sha256(body["manifest"].encode())


async def token(client: Any, role: str) -> dict[str, str]:
    resp = await client.post("/access/api/v1/tokens", json={"role": role, "username": role}, headers=admin())
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['access_token']}"}


async def trust(client: Any, key: TestKey, alias: str = "dist-main") -> None:
    resp = await client.post(KEYS, json={"alias": alias, "public_key": key.public}, headers=admin())
    assert resp.status in (200, 201), await resp.text()


ENGINES = ["sqlite", "postgresql"]


def database_url(request: pytest.FixtureRequest) -> str | None:
    """By the fixture's param: None (sqlite, the default) or a fresh PostgreSQL database's URL."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


@pytest.fixture(params=ENGINES)
def edge_settings(request: pytest.FixtureRequest, tmp_path: Path) -> EdgeSettings:
    """The edge under test keeps its state in sqlite, then in PostgreSQL."""
    return make_settings(tmp_path, database_url=database_url(request))


@pytest.fixture
async def dist(edge: Any, keys: KeySet) -> dict[str, str]:
    """The distributor's headers, on an edge that trusts alice."""
    await trust(edge, keys.alice)
    return await token(edge, "distributor")


async def start(client: Any, body: dict[str, str], headers: dict[str, str], status: int = 201) -> dict[str, Any]:
    resp = await client.post(TX, json=body, headers=headers)
    assert resp.status == status, await resp.text()
    return dict(await resp.json())


async def put_blob(client: Any, tid: str, data: bytes, headers: dict[str, str], **extra: Any) -> Any:
    return await client.put(f"{TX}/{tid}/blobs/{sha256(data)}", data=io.BytesIO(data), headers={**headers, **extra})


async def push(client: Any, body: dict[str, str], headers: dict[str, str], files: dict[str, bytes]) -> dict[str, Any]:
    """start, upload what is missing, commit: what the Distribution service does."""
    started = await start(client, body, headers, status=201)
    by_sha = {sha256(d): d for d in files.values()}
    for missing in started["missing"]:
        resp = await put_blob(client, started["transaction_id"], by_sha[missing], headers)
        assert resp.status in (200, 201), await resp.text()
    return await commit(client, started["transaction_id"], headers)


async def commit(client: Any, tid: str, headers: dict[str, str], status: int = 200) -> dict[str, Any]:
    resp = await client.post(f"{TX}/{tid}/commit", headers=headers)
    assert resp.status == status, await resp.text()
    return dict(await resp.json())


async def status_of(client: Any, tid: str, headers: dict[str, str]) -> dict[str, Any]:
    resp = await client.get(f"{TX}/{tid}", headers=headers)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def download(client: Any, target: str) -> tuple[int, bytes]:
    resp = await client.get(f"/artifactory/{target}")
    return resp.status, await resp.read()


def staging_of(edge: Any, tid: str) -> Path:
    return Path(edge.server.app[transactions_key].staging.root) / tid


async def test_a_signed_bundle_is_invisible_until_commit_then_every_file_is_served_with_its_checksums(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    manifest = manifest_of(FILES)
    body = signed(key_factory, keys.alice, manifest)
    started = await start(edge, body, dist)
    tid = started["transaction_id"]
    assert tid == tx_id(body)
    assert started["state"] == "OPEN" and started["bundle"] == {"name": "app", "version": "1.0.0"}
    assert started["missing"] == sorted(sha256(d) for d in FILES.values())
    for data in FILES.values():
        resp = await put_blob(edge, tid, data, dist)
        assert resp.status == 201
        assert await resp.json() == {"sha256": sha256(data), "size": len(data), "received": len(data)}
        assert (await download(edge, f"{REPO}/app/1.0.0/app.tar.gz"))[0] == 404
    assert (await status_of(edge, tid, dist))["missing"] == []
    answer = await commit(edge, tid, dist)
    total = sum(len(d) for d in FILES.values())
    assert answer == {"transaction_id": tid, "state": "COMMITTED", "files": 3, "bytes": total}
    for path, data in FILES.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{path}") == (200, data)  # anonymous read
        info = await (await edge.get(f"/artifactory/api/storage/{REPO}/app/1.0.0/{path}")).json()
        assert info["checksums"]["sha256"] == sha256(data) and info["size"] == str(len(data))
    bundles = await (await edge.get(BUNDLES, headers=dist)).json()
    assert [(b["name"], b["version"], b["manifest_sha256"], b["files"]) for b in bundles] == [("app", "1.0.0", tid, 3)]
    assert not staging_of(edge, tid).exists()


async def test_missing_lists_only_blobs_the_edge_does_not_hold_and_a_held_blob_is_answered_at_once(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    await upload(edge, "same/README.md", FILES["README.md"])
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    started = await start(edge, body, dist)
    assert sha256(FILES["README.md"]) not in started["missing"]
    assert len(started["missing"]) == 2
    resp = await put_blob(edge, started["transaction_id"], FILES["README.md"], dist)
    assert resp.status == 200 and (await resp.json())["received"] == len(FILES["README.md"])
    for data in (FILES["app.tar.gz"], FILES["lib/core.so"]):
        assert (await put_blob(edge, started["transaction_id"], data, dist)).status == 201
    assert (await commit(edge, started["transaction_id"], dist))["state"] == "COMMITTED"
    assert await download(edge, f"{UPLOADS}/same/README.md") == (200, FILES["README.md"])


async def _cut_off(client: Any, url: str, data: bytes, cut: int, headers: dict[str, str]) -> None:
    """Send ``data[:cut]`` and then drop the connection, as a sender that dies mid-upload."""

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, cut, 64 * 1024):
            yield data[offset : min(offset + 64 * 1024, cut)]
        raise ConnectionAbortedError("sender died")

    with pytest.raises(Exception):  # noqa: B017  (whatever the client library makes of it)
        await client.put(url, data=body(), headers=headers)


async def received_bytes(client: Any, url: str, headers: dict[str, str]) -> int:
    resp = await client.head(url, headers=headers)
    assert resp.status == 200
    return int(resp.headers["X-Received-Bytes"])


async def test_a_half_uploaded_blob_resumes_from_the_bytes_the_edge_holds(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    big = os.urandom(3 * MiB + 123)
    started = await start(edge, signed(key_factory, keys.alice, manifest_of({"big.bin": big})), dist)
    url = f"{TX}/{started['transaction_id']}/blobs/{sha256(big)}"
    await _cut_off(edge, url, big, 2 * MiB, dist)
    held, previous = 0, -1
    for _ in range(100):  # the edge finishes writing what arrived shortly after the cut
        held = await received_bytes(edge, url, dist)
        if held and held == previous:
            break
        previous = held
        await asyncio.sleep(0.05)
    assert 0 < held <= 2 * MiB
    wrong = await edge.put(
        url,
        data=io.BytesIO(big[held + 1 :]),
        headers={**dist, "Content-Range": f"bytes {held + 1}-{len(big) - 1}/{len(big)}"},
    )
    assert wrong.status == 416 and wrong.headers["X-Received-Bytes"] == str(held)
    rest = await edge.put(
        url, data=io.BytesIO(big[held:]), headers={**dist, "Content-Range": f"bytes {held}-{len(big) - 1}/{len(big)}"}
    )
    assert rest.status == 201, await rest.text()
    assert await received_bytes(edge, url, dist) == len(big)
    await commit(edge, started["transaction_id"], dist)
    assert await download(edge, f"{REPO}/app/1.0.0/big.bin") == (200, big)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], id="flipped-byte"),
        pytest.param(lambda b: b[:-1], id="missing-byte"),
        pytest.param(lambda b: b + b"!", id="extra-byte"),
    ],
)
@pytest.mark.parametrize("size", ["small", "large"])  # large: read straight from the socket (edge/raw_body.py)
async def test_a_blob_whose_bytes_differ_from_the_manifest_is_refused_with_422_and_nothing_is_kept(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, damage: Any, size: str
) -> None:
    data = FILES["lib/core.so"] if size == "small" else os.urandom(5 * MiB + 77)
    started = await start(edge, signed(key_factory, keys.alice, manifest_of({"core.so": data})), dist)
    url = f"{TX}/{started['transaction_id']}/blobs/{sha256(data)}"
    resp = await edge.put(url, data=io.BytesIO(damage(data)), headers=dist)
    assert (await error_of(resp))[0] == 422
    assert await received_bytes(edge, url, dist) == 0
    assert not list(staging_of(edge, started["transaction_id"]).glob("*.part"))
    assert (await status_of(edge, started["transaction_id"], dist))["missing"] == [sha256(data)]
    await commit(edge, started["transaction_id"], dist, status=409)


async def test_a_large_blob_read_from_the_socket_closes_its_connection_and_the_next_request_is_served(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    """Past aiohttp's parser the connection cannot carry another request: the answer says so."""
    data = os.urandom(3 * MiB + 5)
    started = await start(edge, signed(key_factory, keys.alice, manifest_of({"big.bin": data})), dist)
    resp = await put_blob(edge, started["transaction_id"], data, dist)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Connection"] == "close"
    assert await received_bytes(edge, f"{TX}/{started['transaction_id']}/blobs/{sha256(data)}", dist) == len(data)
    await commit(edge, started["transaction_id"], dist)
    assert await download(edge, f"{REPO}/app/1.0.0/big.bin") == (200, data)


async def test_a_blob_not_in_the_manifest_is_404(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    resp = await put_blob(edge, started["transaction_id"], b"not listed", dist)
    assert (await error_of(resp))[0] == 404


def _revoked_signer(key_factory: KeyFactory, data: bytes) -> tuple[TestKey, bytes]:
    key = key_factory.make_key("Soon Revoked <soon@example.com>")
    signature = key_factory.sign(key, data)
    return key_factory.revoke(key), signature


@pytest.mark.parametrize("case", ["unsigned", "untrusted", "expired", "revoked", "tampered", "two-signatures"])
async def test_a_manifest_not_signed_by_exactly_one_valid_trusted_key_is_refused_with_422_and_opens_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, case: str
) -> None:
    manifest = manifest_of(FILES)
    data = encode(manifest)
    body = {"manifest": data.decode(), "signature": ""}
    if case == "untrusted":
        body = signed(key_factory, keys.mallory, manifest)
    elif case == "expired":
        await trust(edge, keys.expired, "old")
        body = signed(key_factory, keys.expired, manifest, days_ago=9.9)
    elif case == "revoked":
        key, signature = _revoked_signer(key_factory, data)
        await trust(edge, key, "revoked")
        body["signature"] = signature.decode()
    elif case == "tampered":
        body = signed(key_factory, keys.alice, manifest)
        body["manifest"] = encode(manifest_of({**FILES, "README.md": b"evil"})).decode()
    elif case == "two-signatures":
        await trust(edge, keys.bob, "second")
        body["signature"] = key_factory.sign_with_all([keys.alice, keys.bob], data).decode()
    resp = await edge.post(TX, json=body, headers=dist)
    status, message = await error_of(resp)
    assert status == 422 and "Signature refused" in message
    assert (await edge.get(f"{TX}/{tx_id(body)}", headers=dist)).status == 404


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'["manifest"]', id="not-an-object"),
        pytest.param(b'{"manifest": "{}", "signature": "x", "extra": 1}', id="extra-field"),
        pytest.param(b'{"manifest": 1, "signature": "x"}', id="manifest-not-a-string"),
        pytest.param(b'{"manifest": "a", "manifest": "b", "signature": "x"}', id="duplicate-key"),
    ],
)
async def test_a_malformed_start_is_a_400(edge: Any, dist: dict[str, str], body: bytes) -> None:
    resp = await edge.post(TX, data=body, headers={**dist, "Content-Type": "application/json"})
    assert (await error_of(resp))[0] == 400


@pytest.mark.parametrize(
    "data", [b'{"format": 1}', encode(manifest_of(FILES)) + b" "], ids=["not-canonical", "trailing-space"]
)
async def test_a_signed_manifest_not_in_canonical_form_is_a_400(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, data: bytes
) -> None:
    body = {"manifest": data.decode(), "signature": key_factory.sign(keys.alice, data).decode()}
    status, message = await error_of(await edge.post(TX, json=body, headers=dist))
    assert status == 400 and "canonical" in message
    assert (await edge.get(f"{TX}/{tx_id(body)}", headers=dist)).status == 404


async def test_a_start_body_beyond_max_manifest_bytes_is_a_413(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, max_manifest_bytes=4096)))
    headers = await token(client, "distributor")
    resp = await client.post(TX, json={"manifest": "x" * 5000, "signature": ""}, headers=headers)
    assert (await error_of(resp))[0] == 413


async def test_a_start_that_would_overwrite_other_bytes_is_a_409_and_stages_nothing(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    await push(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist, FILES)
    other = {**FILES, "README.md": b"other text"}
    # another bundle name, same paths: the repo layout is what collides
    clash = signed(key_factory, keys.alice, Manifest.create("other", "1.0.0", manifest_of(other).artifacts))
    resp = await edge.post(TX, json=clash, headers=dist)
    status, message = await error_of(resp)
    assert status == 409 and f"{REPO}/app/1.0.0/README.md" in message
    assert (await edge.get(f"{TX}/{tx_id(clash)}", headers=dist)).status == 404
    await upload(edge, "app/1.0.0/README.md", b"uploaded")
    onto_upload = signed(
        key_factory, keys.alice, Manifest.create("up", "1", manifest_of({"README.md": b"x"}, repo=UPLOADS).artifacts)
    )
    # the uploads repo is never a bundle's target, whatever it holds (tests/test_bundle_owned_paths.py)
    assert (await error_of(await edge.post(TX, json=onto_upload, headers=dist)))[0] == 422


async def test_the_same_name_and_version_with_another_manifest_is_a_409_after_commit(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    await push(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist, FILES)
    again = signed(key_factory, keys.alice, manifest_of({"new.txt": b"new"}))
    status, message = await error_of(await edge.post(TX, json=again, headers=dist))
    assert status == 409 and "another manifest" in message


async def test_a_commit_with_a_blob_missing_is_a_409_naming_it_and_nothing_is_visible(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    tid = started["transaction_id"]
    for data in (FILES["app.tar.gz"], FILES["README.md"]):
        assert (await put_blob(edge, tid, data, dist)).status == 201
    status, message = await error_of(await edge.post(f"{TX}/{tid}/commit", headers=dist))
    assert status == 409 and sha256(FILES["lib/core.so"]) in message
    for path in FILES:
        assert (await download(edge, f"{REPO}/app/1.0.0/{path}"))[0] == 404
    assert (await status_of(edge, tid, dist))["state"] == "OPEN"


async def test_a_duplicate_start_finds_the_same_transaction_and_a_second_commit_gives_the_same_answer(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    first = await start(edge, body, dist, status=201)
    second = await start(edge, body, dist, status=200)
    assert second["transaction_id"] == first["transaction_id"] and second["missing"] == first["missing"]
    for data in FILES.values():
        await put_blob(edge, first["transaction_id"], data, dist)
    done = await commit(edge, first["transaction_id"], dist)
    assert await commit(edge, first["transaction_id"], dist) == done
    after = await start(edge, body, dist, status=200)
    assert after["state"] == "COMMITTED" and after["missing"] == []


async def test_two_concurrent_distributions_of_one_bundle_meet_in_one_transaction_and_agree(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    body = signed(key_factory, keys.alice, manifest_of(FILES))

    async def distribute() -> dict[str, Any]:
        resp = await edge.post(TX, json=body, headers=dist)
        assert resp.status in (200, 201)
        started = await resp.json()
        by_sha = {sha256(d): d for d in FILES.values()}
        for missing in started["missing"]:
            put = await put_blob(edge, started["transaction_id"], by_sha[missing], dist)
            assert put.status in (200, 201), await put.text()
        return await commit(edge, started["transaction_id"], dist)

    one, two = await asyncio.gather(distribute(), distribute())
    assert one == two and one["state"] == "COMMITTED"
    for path, data in FILES.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{path}") == (200, data)


async def test_abort_frees_staging_and_a_commit_after_abort_is_a_409(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist)
    tid = started["transaction_id"]
    await put_blob(edge, tid, FILES["README.md"], dist)
    aborted = await edge.post(f"{TX}/{tid}/abort", headers=dist)
    assert aborted.status == 200 and (await aborted.json())["state"] == "ABORTED"
    assert not staging_of(edge, tid).exists()
    assert not await edge.server.app[transactions_key].artifacts.storage.exists(sha256(FILES["README.md"]))
    assert (await error_of(await edge.post(f"{TX}/{tid}/commit", headers=dist)))[0] == 409
    assert (await edge.post(f"{TX}/{tid}/abort", headers=dist)).status == 200


async def test_abort_after_commit_is_a_409_and_every_file_is_still_served(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    done = await push(edge, signed(key_factory, keys.alice, manifest_of(FILES)), dist, FILES)
    assert (await error_of(await edge.post(f"{TX}/{done['transaction_id']}/abort", headers=dist)))[0] == 409
    for path, data in FILES.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{path}") == (200, data)


async def test_an_abandoned_transaction_expires_and_its_staging_and_blobs_are_freed(
    aiohttp_client: Any, tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, transaction_ttl=1)))
    await trust(client, keys.alice)
    headers = await token(client, "distributor")
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    tid = (await start(client, body, headers))["transaction_id"]
    await put_blob(client, tid, FILES["README.md"], headers)
    await _cut_off(client, f"{TX}/{tid}/blobs/{sha256(FILES['lib/core.so'])}", FILES["lib/core.so"], 100_000, headers)
    transactions = client.server.app[transactions_key]
    assert await transactions.expire(now=now_ms()) == []
    assert await transactions.expire(now=now_ms() + 2000) == [tid]
    assert (await status_of(client, tid, headers))["state"] == "EXPIRED"
    assert not staging_of(client, tid).exists()
    assert not await transactions.artifacts.storage.exists(sha256(FILES["README.md"]))
    assert (await error_of(await client.post(f"{TX}/{tid}/commit", headers=headers)))[0] == 409
    reopened = await start(client, body, headers, status=201)
    assert reopened["state"] == "OPEN" and len(reopened["missing"]) == 3


@pytest.mark.parametrize("role", ["reader", "deployer", None])
async def test_only_a_distributor_or_admin_may_call_the_transaction_api(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, role: str | None
) -> None:
    headers = await token(edge, role) if role else {}
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    expected = 403 if role else 401
    assert (await edge.post(TX, json=body, headers=headers)).status == expected
    tid = (await start(edge, body, dist))["transaction_id"]
    for method, url in [("GET", f"{TX}/{tid}"), ("POST", f"{TX}/{tid}/commit"), ("POST", f"{TX}/{tid}/abort"),
                        ("PUT", f"{TX}/{tid}/blobs/{sha256(FILES['README.md'])}"), ("GET", BUNDLES)]:  # fmt: skip
        assert (await edge.request(method, url, headers=headers)).status == expected
    assert (await start(edge, body, admin(), status=200))["transaction_id"] == tid


async def test_deleting_a_bundle_removes_its_entries_and_unreferenced_blobs_but_keeps_shared_ones(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    await upload(edge, "mine/README.md", FILES["README.md"])
    body = signed(key_factory, keys.alice, manifest_of(FILES))
    done = await push(edge, body, dist, FILES)
    twin = signed(
        key_factory,
        keys.alice,
        Manifest.create("twin", "1", manifest_of({"app.tar.gz": FILES["app.tar.gz"]}).artifacts),
    )
    await push(edge, twin, dist, {"app.tar.gz": FILES["app.tar.gz"]})
    resp = await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)
    assert resp.status == 204
    storage = edge.server.app[transactions_key].artifacts.storage
    assert (await download(edge, f"{REPO}/app/1.0.0/lib/core.so"))[0] == 404
    assert (await download(edge, f"{REPO}/app/1.0.0/README.md"))[0] == 404
    assert not await storage.exists(sha256(FILES["lib/core.so"]))
    assert await download(edge, f"{UPLOADS}/mine/README.md") == (200, FILES["README.md"])
    # the same bytes at the same path, claimed by the twin bundle: kept for it
    assert await download(edge, f"{REPO}/app/1.0.0/app.tar.gz") == (200, FILES["app.tar.gz"])
    assert [b["name"] for b in await (await edge.get(BUNDLES, headers=dist)).json()] == ["twin"]
    assert (await edge.delete(f"{BUNDLES}/app/1.0.0", headers=dist)).status == 404
    assert (await edge.delete(f"{BUNDLES}/twin/1", headers=dist)).status == 204
    assert not await storage.exists(sha256(FILES["app.tar.gz"]))
    again = await start(edge, body, dist, status=201)  # deleted: pushing it again starts afresh
    assert again["transaction_id"] == done["transaction_id"] and again["state"] == "OPEN"


# -- a real edge process, killed with SIGKILL -------------------------------------


class Remote:
    """The Distribution service's side of the protocol, over HTTP with ``requests``."""

    def __init__(self, edge: EdgeProcess) -> None:
        self.edge = edge
        self.session = requests.Session()
        self.session.trust_env = False  # loopback, whatever proxy a developer has set
        admin_headers = {"Authorization": f"Bearer {edge.admin_token}"}
        made = self.session.post(
            f"{edge.url}/access/api/v1/tokens", json={"role": "distributor", "username": "dist"}, headers=admin_headers
        )
        self.session.headers["Authorization"] = f"Bearer {made.json()['access_token']}"
        self.admin = admin_headers

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.edge.url}{path}", timeout=60, **kwargs)

    def visible(self, target: str) -> int:
        return requests.get(f"{self.edge.artifactory_url}/{target}", timeout=60).status_code


def kill_and_restart(edge: EdgeProcess) -> None:
    os.kill(edge.pid, signal.SIGKILL)
    assert edge.wait(20) == -signal.SIGKILL
    edge.start()


def test_an_edge_killed_mid_upload_and_before_commit_resumes_and_shows_nothing_until_commit(
    tmp_path: Path, keys: KeySet, key_factory: KeyFactory
) -> None:
    big = os.urandom(24 * MiB)
    files = {"big.bin": big, "small.txt": b"small"}
    body = signed(key_factory, keys.alice, manifest_of(files))
    tid = tx_id(body)
    edge = EdgeProcess(tmp_path / "edge").start()
    try:
        remote = Remote(edge)
        assert remote.call("POST", KEYS, json={"alias": "a", "public_key": keys.alice.public}, headers=remote.admin).ok
        assert remote.call("POST", TX, json=body).status_code == 201
        assert remote.call("PUT", f"{TX}/{tid}/blobs/{sha256(files['small.txt'])}", data=b"small").status_code == 201
        url = f"{TX}/{tid}/blobs/{sha256(big)}"

        def killed_midway() -> Any:
            for offset in range(0, len(big), MiB):
                if offset == 12 * MiB:
                    time.sleep(0.3)  # let the edge write what it has received before the kill
                    kill_and_restart(edge)
                yield big[offset : offset + MiB]

        with pytest.raises(requests.ConnectionError):
            remote.call("PUT", url, data=killed_midway())
        assert (edge.data_dir / "staging" / tid).is_dir()
        held = int(remote.call("HEAD", url).headers["X-Received-Bytes"])
        assert 0 < held <= 12 * MiB
        assert remote.visible(f"{REPO}/app/1.0.0/small.txt") == 404
        rest = remote.call(
            "PUT", url, data=big[held:], headers={"Content-Range": f"bytes {held}-{len(big) - 1}/{len(big)}"}
        )
        assert rest.status_code == 201, rest.text

        (edge.data_dir / "staging" / ("0" * 64)).mkdir()  # left by a transaction no longer open
        kill_and_restart(edge)  # every blob uploaded, no commit yet
        assert not (edge.data_dir / "staging" / ("0" * 64)).exists()
        assert remote.visible(f"{REPO}/app/1.0.0/big.bin") == 404
        status = remote.call("GET", f"{TX}/{tid}").json()
        assert status["state"] == "OPEN" and status["missing"] == []
        committed = remote.call("POST", f"{TX}/{tid}/commit")
        assert committed.status_code == 200 and committed.json()["state"] == "COMMITTED"
        kill_and_restart(edge)  # the commit is durable, and answered the same way again
        assert remote.call("POST", f"{TX}/{tid}/commit").json() == committed.json()
        got = requests.get(f"{edge.artifactory_url}/{REPO}/app/1.0.0/big.bin", timeout=60)
        assert got.status_code == 200 and sha256(got.content) == sha256(big)
        assert not (edge.data_dir / "staging" / tid).exists()
    finally:
        code = edge.stop()
    assert code == 0, edge.log_tail()


async def test_a_blob_staged_whole_but_not_yet_stored_when_the_edge_stopped_is_finished_by_head(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    started = await start(edge, signed(key_factory, keys.alice, manifest_of({"a": b"whole", "b": b"damaged"})), dist)
    tid = started["transaction_id"]
    staged = staging_of(edge, tid)
    staged.mkdir(parents=True)
    (staged / f"{sha256(b'whole')}.part").write_bytes(b"whole")
    (staged / f"{sha256(b'damaged')}.part").write_bytes(b"DAMAGED")
    assert await received_bytes(edge, f"{TX}/{tid}/blobs/{sha256(b'whole')}", dist) == 5
    assert await received_bytes(edge, f"{TX}/{tid}/blobs/{sha256(b'damaged')}", dist) == 0
    assert (await status_of(edge, tid, dist))["missing"] == [sha256(b"damaged")]
    assert (await put_blob(edge, tid, b"damaged", dist)).status == 201
    assert (await commit(edge, tid, dist))["state"] == "COMMITTED"


# -- a sender too slow, or too long ---------------------------------------------------


async def _raw_put(port: int, path: str, headers: dict[str, str], length: int, pace: tuple[int, float]) -> bytes:
    """A PUT from a raw socket that declares ``length`` bytes and sends ``pace[0]`` of them every
    ``pace[1]`` s, until the edge answers; answers everything the edge sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())

    async def trickle() -> None:
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < length:
                n = min(pace[0], length - sent)
                writer.write(b"x" * n)
                await writer.drain()
                sent += n
                await asyncio.sleep(pace[1])

    async def answer() -> bytes:
        """Everything up to the close. The edge closes with the sender's bytes still unread, so the
        close may come as a reset after the answer: what arrived before it counts."""
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
        return received

    sender = asyncio.create_task(trickle())
    try:
        return await asyncio.wait_for(answer(), timeout=15)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()


@pytest.mark.parametrize(
    ("settings", "pace", "why"),
    [
        pytest.param({"upload_min_rate": 1000, "upload_rate_window": 1.0}, (100, 0.25), "minimum rate", id="trickle"),
        pytest.param({"upload_min_rate": 1000, "upload_rate_window": 1.0}, (0, 0.25), "minimum rate", id="stalled"),
        pytest.param({"upload_min_rate": 0, "upload_deadline": 1.0}, (4000, 0.1), "deadline", id="past-deadline"),
    ],
)
async def test_an_upload_below_the_minimum_rate_or_past_its_deadline_is_cut_off_and_its_staging_freed(
    aiohttp_client: Any, tmp_path: Path, keys: KeySet, key_factory: KeyFactory,
    settings: dict[str, Any], pace: tuple[int, float], why: str,
) -> None:  # fmt: skip
    client = await aiohttp_client(create_app(make_settings(tmp_path, **settings)))
    await trust(client, keys.alice)
    headers = await token(client, "distributor")
    data = os.urandom(200_000)
    body = signed(key_factory, keys.alice, manifest_of({"big.bin": data}))
    tid = (await start(client, body, headers))["transaction_id"]
    url = f"{TX}/{tid}/blobs/{sha256(data)}"
    answer = await _raw_put(client.server.port, url, headers, len(data), pace)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:300]
    assert why.encode() in rest and b"send the blob again from byte 0" in rest
    assert await received_bytes(client, url, headers) == 0
    assert not list(staging_of(client, tid).glob("*.part"))
    assert (await put_blob(client, tid, data, headers)).status == 201  # a sender at speed starts over and succeeds
    assert (await commit(client, tid, headers))["state"] == "COMMITTED"


# -- many large uploads at once -------------------------------------------------------------


class HeldPut:
    """A blob PUT from a raw socket that sends its head and ``first`` bytes, then waits for
    ``go`` before sending the rest; ``answer`` is the edge's whole answer, head and body."""

    def __init__(self, port: int, path: str, headers: dict[str, str], data: bytes, first: int) -> None:
        self.go = asyncio.Event()
        self.sent_first = asyncio.Event()
        self.task = asyncio.create_task(self._run(port, path, headers, data, first))

    async def _run(self, port: int, path: str, headers: dict[str, str], data: bytes, first: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data[:first])
            await writer.drain()
            self.sent_first.set()
            await self.go.wait()
            writer.write(data[first:])
            await writer.drain()
            received = await reader.readuntil(b"\r\n\r\n")
            length = int(next(v for k, v in _headers(received) if k == "content-length"))
            return received + await reader.readexactly(length)
        finally:
            writer.close()

    async def answer(self) -> bytes:
        return await asyncio.wait_for(self.task, timeout=60)  # a hang guard, not a speed check


def _headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines if line)]


async def _held_puts(client: Any, headers: dict[str, str], key_factory: KeyFactory, keys: KeySet, count: int) -> Any:
    blobs = {f"big-{i}.bin": os.urandom(2 * MiB + i) for i in range(count)}
    tid = (await start(client, signed(key_factory, keys.alice, manifest_of(blobs)), headers))["transaction_id"]
    puts = [
        HeldPut(client.server.port, f"{TX}/{tid}/blobs/{sha256(data)}", headers, data, MiB + 1000)
        for data in blobs.values()
    ]
    await asyncio.wait_for(asyncio.gather(*(p.sent_first.wait() for p in puts)), timeout=60)
    return tid, blobs, puts


async def test_large_uploads_held_open_by_their_senders_leave_the_edge_answering_everything_else(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory
) -> None:
    """Each large body is received by a thread of its own for as long as it lasts; more of them
    than the event loop's default executor has threads must not stall the file operations of
    every other request (they did: a download waited for an upload to end)."""
    await upload(edge, "seen/while-uploading.txt", b"served meanwhile")
    count = min(32, (os.cpu_count() or 1) + 4) + 2  # asyncio's default executor size, and two more
    tid, blobs, puts = await _held_puts(edge, dist, key_factory, keys, count)
    await asyncio.sleep(0.5)  # let every upload reach its receiving thread
    answered = await asyncio.wait_for(download(edge, f"{UPLOADS}/seen/while-uploading.txt"), timeout=30)
    assert answered == (200, b"served meanwhile")
    status = await asyncio.wait_for(status_of(edge, tid, dist), timeout=30)
    assert sorted(status["missing"]) == sorted(sha256(data) for data in blobs.values())
    for put in puts:
        put.go.set()
    for put in puts:
        assert (await put.answer()).startswith(b"HTTP/1.1 201 ")
    await commit(edge, tid, dist)
    for name, data in blobs.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{name}") == (200, data)


async def test_uploads_beyond_the_receiving_threads_go_through_aiohttp_and_every_one_lands(
    edge: Any, dist: dict[str, str], keys: KeySet, key_factory: KeyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    receivers = edge.server.app[transactions_key].receivers
    monkeypatch.setattr(receivers, "_free", 2)  # two threads free: the other uploads stay with aiohttp
    tid, blobs, puts = await _held_puts(edge, dist, key_factory, keys, 5)
    await asyncio.sleep(0.5)
    for put in puts:
        put.go.set()
    answers = [await put.answer() for put in puts]
    assert all(a.startswith(b"HTTP/1.1 201 ") for a in answers), [a[:200] for a in answers]
    closing = [("connection", "close") in _headers(a.partition(b"\r\n\r\n")[0] + b"\r\n") for a in answers]
    assert closing.count(True) == 2, "the two bodies taken from their sockets close their connections"
    assert receivers._free == 2, "every receiver is given back"
    await commit(edge, tid, dist)
    for name, data in blobs.items():
        assert await download(edge, f"{REPO}/app/1.0.0/{name}") == (200, data)
