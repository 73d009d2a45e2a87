"""A download through a virtual repo takes the same delivery path as a direct one: sendfile or
memory from local disk, nginx's X-Accel-Redirect, a presigned S3 redirect, or S3 streamed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edge.app import create_app
from repository.policy import EDGE_UPLOADS_REPO as UPLOADS
from tests.conftest import admin, make_settings, upload

BIG = bytes(range(251)) * 1000  # above the size served from memory
REPOS = "/artifactory/api/repositories"


async def _with_virtual(client: Any) -> Any:
    await upload(client, "dir/big.bin", BIG)
    made = await client.put(f"{REPOS}/virt", json={"rclass": "virtual", "repositories": [UPLOADS]}, headers=admin())
    assert made.status == 201, await made.text()
    return client


def _same(direct: Any, virtual: Any, names: tuple[str, ...]) -> None:
    assert virtual.status == direct.status
    for name in names:
        assert virtual.headers.get(name) == direct.headers.get(name), name


async def test_a_range_through_a_virtual_repo_answers_as_the_member_on_every_backend(any_edge: Any) -> None:
    client = await _with_virtual(any_edge)
    asked = {**admin(), "Range": "bytes=100-99999"}
    direct = await client.get(f"/artifactory/{UPLOADS}/dir/big.bin", headers=asked, allow_redirects=False)
    virtual = await client.get("/artifactory/virt/dir/big.bin", headers=asked, allow_redirects=False)
    names = ("Content-Range", "Content-Length", "ETag", "X-Checksum-Sha256", "X-Checksum-Sha1", "Last-Modified")
    _same(direct, virtual, names)
    if virtual.status == 302:  # S3 with presigned redirects: the client fetches the range there
        assert virtual.headers["X-Checksum-Sha256"] == hashlib.sha256(BIG).hexdigest()
        assert "Location" in virtual.headers
    else:
        assert virtual.status == 206 and await virtual.read() == BIG[100:100000]


async def test_an_edge_behind_nginx_hands_a_virtual_download_to_nginx(tmp_path: Path, aiohttp_client: Any) -> None:
    settings = make_settings(tmp_path, accel_redirect="/_blobs/")
    client = await _with_virtual(await aiohttp_client(create_app(settings)))
    asks = {**admin(), "X-Sendfile-Type": "X-Accel-Redirect"}
    direct = await client.get(f"/artifactory/{UPLOADS}/dir/big.bin", headers=asks)
    virtual = await client.get("/artifactory/virt/dir/big.bin", headers=asks)
    _same(direct, virtual, ("X-Accel-Redirect", "ETag", "X-Checksum-Sha256"))
    sha = hashlib.sha256(BIG).hexdigest()
    assert virtual.headers["X-Accel-Redirect"] == f"/_blobs/{sha[:2]}/{sha}" and await virtual.read() == b""


async def test_a_conditional_get_through_a_virtual_repo_is_judged_on_the_member_file(edge: Any) -> None:
    client = await _with_virtual(edge)
    etag = f'"{hashlib.sha256(BIG).hexdigest()}"'
    unchanged = await client.get("/artifactory/virt/dir/big.bin", headers={**admin(), "If-None-Match": etag})
    assert unchanged.status == 304
    failed = await client.get("/artifactory/virt/dir/big.bin", headers={**admin(), "If-Match": '"other"'})
    assert failed.status == 412
