"""Unsafe paths in every spelling get a clear 4xx and never reach storage.

Requests go over a raw socket so that no client library normalises the path
before the server sees it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from repository.paths import split_repo_path
from tests.conftest import ADMIN_TOKEN, UPLOADS, upload
from wire.errors import InvalidPath
from wire.paths import check_artifact_path

UNSAFE = [
    f"{UPLOADS}/../etc/passwd",
    f"{UPLOADS}/a/../../etc/passwd",
    f"{UPLOADS}/..%2fetc%2fpasswd",
    f"{UPLOADS}/..%2Fetc/passwd",
    f"{UPLOADS}/%2e%2e/etc/passwd",
    f"{UPLOADS}/%2E%2E%2Fetc/passwd",
    f"{UPLOADS}/a/%2e/b",
    f"{UPLOADS}/..\\etc\\passwd",
    f"{UPLOADS}/..%5cetc%5cpasswd",
    f"{UPLOADS}/a%00.txt",
    f"{UPLOADS}/a%0a.txt",
    f"{UPLOADS}/%c0%ae%c0%ae/etc/passwd",  # overlong UTF-8 for '.'
    f"{UPLOADS}/a//b",
    f"{UPLOADS}/%2fetc/passwd",
    f"{UPLOADS}//etc/passwd",
    "..%2f..%2fetc/passwd",
    "%2e%2e/etc/passwd",
]


async def raw_request(client: Any, method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload) if payload else {}


@pytest.mark.parametrize("tail", UNSAFE)
@pytest.mark.parametrize("prefix", ["/artifactory/", "/artifactory/api/storage/"])
async def test_unsafe_paths_are_refused_on_read(edge: Any, tail: str, prefix: str) -> None:
    await upload(edge, "etc/passwd", b"inside the repo")
    status, body = await raw_request(edge, "GET", prefix + tail)
    assert status in (400, 404)
    assert body["errors"][0]["status"] == status


@pytest.mark.parametrize("tail", [t for t in UNSAFE if t.startswith(UPLOADS)])
async def test_unsafe_paths_are_refused_on_upload_and_store_nothing(edge: Any, tail: str) -> None:
    status, body = await raw_request(edge, "PUT", "/artifactory/" + tail, b"payload")
    assert status == 400
    assert body["errors"][0]["message"].startswith("Invalid path")
    listing = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}?list&deep=1")).json()
    assert listing["files"] == []


async def test_names_with_spaces_and_unicode_round_trip(edge: Any) -> None:
    await upload(edge, "docs/r%C3%A9sum%C3%A9%20v1.txt", b"cv")
    resp = await edge.get(f"/artifactory/{UPLOADS}/docs/r%C3%A9sum%C3%A9%20v1.txt")
    assert await resp.read() == b"cv"
    assert resp.headers["X-Artifactory-Filename"] == "r%C3%A9sum%C3%A9%20v1.txt"
    info = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/docs")).json()
    assert info["children"] == [{"uri": "/résumé v1.txt", "folder": False}]  # a name, as Artifactory answers it
    deep = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}?list&deep=1")).json()
    assert [f["uri"] for f in deep["files"]] == ["/docs/résumé v1.txt"]
    shallow = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}?list&listFolders=1")).json()
    assert [(f["uri"], f["folder"]) for f in shallow["files"]] == [("/docs", True)]
    assert info["uri"].endswith("/api/storage/artifactory-edge-uploads/docs")  # a URL: encoded
    file_info = await (await edge.get(f"/artifactory/api/storage/{UPLOADS}/docs/r%C3%A9sum%C3%A9%20v1.txt")).json()
    assert file_info["downloadUri"].endswith("/docs/r%C3%A9sum%C3%A9%20v1.txt")


@pytest.mark.parametrize(
    "path", ["", "/abs", "a/../b", "a/./b", "a//b", "a\\b", "a\x00b", "a\x7fb", "x" * 256, "a/" * 600]
)
def test_path_rules_refuse_each_unsafe_shape(path: str) -> None:
    with pytest.raises(InvalidPath):
        check_artifact_path(path)


@pytest.mark.parametrize("raw", ["api/x", ".hidden/x", "-repo/x", "re po/x", "a" * 65 + "/x"])
def test_repo_keys_are_plain_names(raw: str) -> None:
    with pytest.raises(InvalidPath):
        split_repo_path(raw)


def test_a_trailing_slash_names_the_folder_itself() -> None:
    assert split_repo_path("repo/a/b/") == ("repo", "a/b")
    assert split_repo_path("repo") == ("repo", "")
