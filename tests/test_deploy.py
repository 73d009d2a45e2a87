"""Uploads into the edge's uploads repo, and the refusals everywhere else."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from edge.app import create_app
from edge.keys import settings_key
from tests.conftest import UPLOADS, admin, error_of, make_settings, upload

DATA = os.urandom(50_000)
SHA256, SHA1, MD5 = (hashlib.new(a, DATA).hexdigest() for a in ("sha256", "sha1", "md5"))


async def snapshot(client: Any) -> tuple[list[str], list[str]]:
    """What a user can observe of stored state: the deep listing and the blobs on disk."""
    listing = await client.get(f"/artifactory/api/storage/{UPLOADS}?list&deep=1")
    files = sorted(f["uri"] + ":" + f["sha2"] for f in (await listing.json())["files"])
    settings = client.app[settings_key]
    blobs = sorted(
        str(p.relative_to(settings.data_dir)) for p in Path(settings.data_dir, "blobs").rglob("*") if p.is_file()
    )
    return files, blobs


async def test_an_upload_answers_201_with_file_info_and_reads_back(edge: Any) -> None:
    info = await upload(edge, "tools/app.tar.gz", DATA, {"X-Checksum-Sha256": SHA256})
    assert info["repo"] == UPLOADS
    assert info["path"] == "/tools/app.tar.gz"
    assert info["size"] == str(len(DATA))
    assert info["checksums"] == {"sha1": SHA1, "md5": MD5, "sha256": SHA256}
    assert info["createdBy"] == "admin"
    assert info["downloadUri"].endswith(f"/artifactory/{UPLOADS}/tools/app.tar.gz")
    resp = await edge.get(f"/artifactory/{UPLOADS}/tools/app.tar.gz")
    assert await resp.read() == DATA


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Checksum-Sha256": "0" * 64},
        {"X-Checksum": "0" * 64},
        {"X-Checksum-Sha1": "0" * 40},
        {"X-Checksum-Md5": "0" * 32},
        {"X-Checksum-Sha256": SHA256, "X-Checksum-Md5": "f" * 32},
    ],
)
async def test_a_checksum_mismatch_is_rejected_and_stores_nothing(edge: Any, headers: dict[str, str]) -> None:
    before = await snapshot(edge)
    resp = await edge.put(f"/artifactory/{UPLOADS}/bad.bin", data=DATA, headers={**admin(), **headers})
    status, message = await error_of(resp)
    assert status == 409
    assert "mismatch" in message.lower()
    assert await snapshot(edge) == before
    assert (await edge.get(f"/artifactory/{UPLOADS}/bad.bin")).status == 404


async def test_every_matching_checksum_header_is_accepted(edge: Any) -> None:
    headers = {
        "X-Checksum-Sha256": SHA256.upper(),
        "X-Checksum-Sha1": SHA1,
        "X-Checksum-Md5": MD5,
        "X-Checksum": SHA256,
    }
    await upload(edge, "ok.bin", DATA, headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Checksum-Sha256": "xyz"},
        {"X-Checksum-Sha1": "0" * 64},
        {"X-Checksum-Deploy": "yes", "X-Checksum-Sha256": SHA256},
        {"X-Checksum-Deploy": "True", "X-Checksum-Sha256": SHA256},
    ],
)
async def test_malformed_checksum_headers_are_a_400(edge: Any, headers: dict[str, str]) -> None:
    resp = await edge.put(f"/artifactory/{UPLOADS}/x.bin", data=DATA, headers={**admin(), **headers})
    assert (await error_of(resp))[0] == 400
    assert (await edge.get(f"/artifactory/{UPLOADS}/x.bin")).status == 404


async def test_x_checksum_and_x_checksum_sha256_that_differ_are_a_mismatch_409(edge: Any) -> None:
    """No content can match both: the deploy fails as any checksum mismatch does."""
    before = await snapshot(edge)
    headers = {**admin(), "X-Checksum": "0" * 64, "X-Checksum-Sha256": SHA256}
    resp = await edge.put(f"/artifactory/{UPLOADS}/x.bin", data=DATA, headers=headers)
    assert (await error_of(resp))[0] == 409
    assert await snapshot(edge) == before


async def test_deploy_by_checksum_stores_known_bytes_without_a_body(edge: Any) -> None:
    await upload(edge, "first.bin", DATA)
    resp = await edge.put(
        f"/artifactory/{UPLOADS}/copy.bin",
        headers={**admin(), "X-Checksum-Deploy": "true", "X-Checksum-Sha1": SHA1},
    )
    assert resp.status == 201
    assert (await resp.json())["checksums"]["sha256"] == SHA256
    assert await (await edge.get(f"/artifactory/{UPLOADS}/copy.bin")).read() == DATA


@pytest.mark.parametrize(
    "checksums", [{"X-Checksum-Sha256": "a" * 64}, {"X-Checksum-Md5": MD5}, {}], ids=["unknown", "md5 only", "none"]
)
async def test_deploy_by_an_unknown_or_no_checksum_asks_for_the_content(edge: Any, checksums: dict[str, str]) -> None:
    await upload(edge, "first.bin", DATA)
    before = await snapshot(edge)
    resp = await edge.put(
        f"/artifactory/{UPLOADS}/copy.bin", headers={**admin(), "X-Checksum-Deploy": "true", **checksums}
    )
    status, message = await error_of(resp)
    assert status == 404 and "send the content" in message
    assert await snapshot(edge) == before


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "MOVE", "PATCH"])
@pytest.mark.parametrize("repo", ["releases-local", "no-such-repo"])
async def test_writes_to_any_other_repo_are_a_real_403(edge: Any, method: str, repo: str) -> None:
    before = await snapshot(edge)
    resp = await edge.request(method, f"/artifactory/{repo}/a/b.bin", data=DATA, headers=admin())
    assert await error_of(resp) == (403, "Deployment to an Edge Artifactory node is not supported.")
    assert await snapshot(edge) == before


async def test_uploads_need_a_deploying_token(edge: Any) -> None:
    anonymous = await edge.put(f"/artifactory/{UPLOADS}/a.bin", data=b"x")
    assert anonymous.status == 401
    assert "WWW-Authenticate" in anonymous.headers
    wrong = await edge.put(f"/artifactory/{UPLOADS}/a.bin", data=b"x", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert (await edge.get(f"/artifactory/{UPLOADS}/a.bin")).status == 404


async def test_an_upload_over_the_size_limit_is_a_413_and_stores_nothing(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path, max_upload_bytes=1000)))
    before = await snapshot(client)
    declared = await client.put(f"/artifactory/{UPLOADS}/big.bin", data=b"x" * 1001, headers=admin())
    assert (await error_of(declared))[0] == 413

    async def chunked() -> Any:  # no Content-Length: the limit is enforced while streaming
        for _ in range(20):
            yield b"y" * 100

    streamed = await client.put(f"/artifactory/{UPLOADS}/big.bin", data=chunked(), headers=admin())
    assert (await error_of(streamed))[0] == 413
    assert await snapshot(client) == before
    await upload(client, "small.bin", b"z" * 1000)


async def test_a_client_that_disconnects_mid_upload_leaves_no_trace(edge: Any) -> None:
    before = await snapshot(edge)
    host, port = edge.server.host, edge.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT /artifactory/{UPLOADS}/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-admin-token\r\n"
        f"Content-Length: 10000000\r\n\r\n".encode()
        + b"a" * 3_000_000
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert (await edge.get(f"/artifactory/{UPLOADS}/cut.bin")).status == 404
    assert await snapshot(edge) == before
    settings_dir = edge.app[settings_key].data_dir
    assert list(Path(settings_dir, "blobs", "tmp").iterdir()) == []


async def test_overwriting_a_file_serves_the_new_bytes_and_keeps_created(edge: Any) -> None:
    first = await upload(edge, "v.txt", b"one")
    assert await (await edge.get(f"/artifactory/{UPLOADS}/v.txt")).read() == b"one"  # now hot in caches
    second = await upload(edge, "v.txt", b"two")
    assert second["created"] == first["created"]
    assert await (await edge.get(f"/artifactory/{UPLOADS}/v.txt")).read() == b"two"
    assert (await edge.delete(f"/artifactory/{UPLOADS}/v.txt", headers=admin())).status == 204
    assert (await edge.get(f"/artifactory/{UPLOADS}/v.txt")).status == 404


async def test_a_file_cannot_replace_a_folder_or_live_under_a_file(edge: Any) -> None:
    await upload(edge, "a/b.txt", b"b")
    before = await snapshot(edge)
    as_folder = await edge.put(f"/artifactory/{UPLOADS}/a", data=b"x", headers=admin())
    under_file = await edge.put(f"/artifactory/{UPLOADS}/a/b.txt/c", data=b"y", headers=admin())
    assert (await error_of(as_folder))[0] == 409
    assert (await error_of(under_file))[0] == 409
    assert await snapshot(edge) == before


async def test_an_admin_deletes_files_and_folders_and_their_blobs_go(edge: Any) -> None:
    await upload(edge, "keep/k.bin", b"keep")
    await upload(edge, "gone/one.bin", b"one")
    await upload(edge, "gone/deep/two.bin", b"two")
    await upload(edge, "gone/dup.bin", b"keep")  # same bytes as keep/k.bin: blob must stay
    resp = await edge.delete(f"/artifactory/{UPLOADS}/gone", headers=admin())
    assert resp.status == 204
    files, blobs = await snapshot(edge)
    assert files == [f"/keep/k.bin:{hashlib.sha256(b'keep').hexdigest()}"]
    assert [Path(b).name for b in blobs] == [hashlib.sha256(b"keep").hexdigest()]
    assert (await edge.get(f"/artifactory/api/storage/{UPLOADS}/gone")).status == 404
    assert (await edge.delete(f"/artifactory/{UPLOADS}/gone", headers=admin())).status == 404


async def test_only_an_admin_may_delete(edge: Any) -> None:
    await upload(edge, "d.bin", b"d")
    token = await edge.post("/access/api/v1/tokens", json={"role": "deployer"}, headers=admin())
    deployer = {"Authorization": f"Bearer {(await token.json())['access_token']}"}
    assert (await edge.delete(f"/artifactory/{UPLOADS}/d.bin")).status == 401
    assert (await edge.delete(f"/artifactory/{UPLOADS}/d.bin", headers=deployer)).status == 403
    assert (await edge.get(f"/artifactory/{UPLOADS}/d.bin")).status == 200


async def test_a_put_with_a_trailing_slash_creates_a_folder(edge: Any) -> None:
    resp = await edge.put(f"/artifactory/{UPLOADS}/new/empty/", headers=admin())
    assert resp.status == 201
    assert (await resp.json())["path"] == "/new/empty"
    info = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/new")).json()
    assert info["children"] == [{"uri": "/empty", "folder": True}]
    assert (await edge.put(f"/artifactory/{UPLOADS}/new/empty/", headers=admin())).status == 201
    await upload(edge, "f.txt", b"f")
    clash = await edge.put(f"/artifactory/{UPLOADS}/f.txt/", headers=admin())
    assert (await error_of(clash))[0] == 409
    under = await edge.put(f"/artifactory/{UPLOADS}/f.txt/sub/", headers=admin())
    assert (await error_of(under))[0] == 409
