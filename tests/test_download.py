"""Downloads as Artifactory clients see them, on every backend and download path."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from edge.app import create_app
from tests.conftest import UPLOADS, error_of, make_settings, storage_settings, upload

SIZE = 10_000
DATA = os.urandom(SIZE)
URL = f"/artifactory/{UPLOADS}/dir/file.bin"


@pytest.fixture
async def stored(any_edge: Any) -> Any:
    await upload(any_edge, "dir/file.bin", DATA)
    return any_edge


async def test_a_download_carries_every_header_clients_check(stored: Any) -> None:
    resp = await stored.get(URL)
    assert resp.status == 200
    assert await resp.read() == DATA
    # After an S3 redirect the headers come from S3; the checksums must survive either way.
    head = await stored.head(URL, allow_redirects=False)
    h = head.headers
    assert head.status == 200
    assert h["Content-Length"] == str(SIZE)
    assert h["Accept-Ranges"] == "bytes"
    assert h["X-Checksum-Sha256"] == hashlib.sha256(DATA).hexdigest()
    assert h["X-Checksum-Sha1"] == hashlib.sha1(DATA).hexdigest()
    assert h["X-Checksum-Md5"] == hashlib.md5(DATA).hexdigest()
    assert h["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert h["X-Artifactory-Filename"] == "file.bin"
    assert h["X-Artifactory-Id"] == "edge"
    assert h["Content-Disposition"].startswith('attachment; filename="file.bin"')
    assert h["Content-Type"] == "application/octet-stream"
    assert "Last-Modified" in h
    assert await head.read() == b""


# Like aiohttp's own test_web_sendfile_functional: exact Content-Range for every shape.
RANGES = [
    ("bytes=0-99", 0, 100),
    ("bytes=0-0", 0, 1),
    ("bytes=5000-5999", 5000, 1000),
    ("bytes=9990-", 9990, 10),
    ("bytes=0-", 0, SIZE),
    ("bytes=-500", SIZE - 500, 500),
    ("bytes=-20000", 0, SIZE),
    ("bytes=9000-20000", 9000, 1000),
    ("bytes=9999-9999", 9999, 1),
    # a last position past the end is the end, however many digits it has (RFC 9110)
    ("bytes=0-99999999999999999999999999", 0, SIZE),
    ("bytes=9990-" + "9" * 5000, 9990, 10),
    ("bytes=-" + "9" * 30, 0, SIZE),
    ("bytes=" + "0" * 30 + "5-" + "0" * 30 + "9", 5, 5),
]


@pytest.mark.parametrize(("header", "start", "length"), RANGES)
async def test_range_requests_answer_206_with_exact_content_range(
    stored: Any, header: str, start: int, length: int
) -> None:
    resp = await stored.get(URL, headers={"Range": header})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{start + length - 1}/{SIZE}"
    assert int(resp.headers["Content-Length"]) == length
    assert await resp.read() == DATA[start : start + length]


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10000-",
        "bytes=20000-30000",
        "bytes=-0",
        "bytes=5-2",
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "items=0-5",
        "bytes=0-5,10-20",
        "bytes=1e3-",
        "bytes=+1-5",
        "bytes= 0-5x",
        "bytes=99999999999999999999-",
        # digits of other scripts are not digits here
        "bytes=\u0661-\u0662",
        "bytes=0-\u0661\u0660",
        "bytes=-\u0665",
        "bytes=\uff11-\uff12",
    ],
)
async def test_unsatisfiable_or_malformed_ranges_answer_416(stored: Any, header: str) -> None:
    resp = await stored.get(URL, headers={"Range": header})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
    status, _ = await error_of(resp)
    assert status == 416


async def test_head_answers_the_range_it_would_send(edge: Any) -> None:
    await upload(edge, "dir/file.bin", DATA)
    resp = await edge.head(URL, headers={"Range": "bytes=100-199"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 100-199/{SIZE}"
    assert resp.headers["Content-Length"] == "100"


async def test_conditional_requests_answer_304_when_the_copy_is_current(edge: Any) -> None:
    await upload(edge, "dir/file.bin", DATA)
    first = await edge.get(URL)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert (await edge.get(URL, headers={"If-None-Match": etag})).status == 304
    assert (await edge.get(URL, headers={"If-None-Match": f"W/{etag}"})).status == 304
    assert (await edge.get(URL, headers={"If-None-Match": '"other"'})).status == 200
    assert (await edge.get(URL, headers={"If-Modified-Since": modified})).status == 304
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert (await edge.get(URL, headers={"If-Modified-Since": earlier})).status == 200
    not_modified = await edge.get(URL, headers={"If-None-Match": etag})
    assert await not_modified.read() == b""
    assert not_modified.headers["ETag"] == etag


async def test_if_match_that_fails_answers_412(edge: Any) -> None:
    await upload(edge, "dir/file.bin", DATA)
    resp = await edge.get(URL, headers={"If-Match": '"not-this"'})
    assert resp.status == 412
    etag = resp.headers.get("ETag") or (await edge.head(URL)).headers["ETag"]
    assert (await edge.get(URL, headers={"If-Match": etag})).status == 200


async def test_if_range_honours_the_range_only_for_the_same_version(edge: Any) -> None:
    await upload(edge, "dir/file.bin", DATA)
    etag = (await edge.head(URL)).headers["ETag"]
    same = await edge.get(URL, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status == 206 and await same.read() == DATA[:10]
    changed = await edge.get(URL, headers={"Range": "bytes=0-9", "If-Range": '"older-version"'})
    assert changed.status == 200 and await changed.read() == DATA
    old_date = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    by_date = await edge.get(URL, headers={"Range": "bytes=0-9", "If-Range": old_date})
    assert by_date.status == 200


async def test_an_empty_file_downloads_as_zero_bytes(any_edge: Any) -> None:
    await upload(any_edge, "empty.txt", b"")
    resp = await any_edge.get(f"/artifactory/{UPLOADS}/empty.txt")
    assert resp.status == 200
    assert await resp.read() == b""
    assert (await any_edge.get(f"/artifactory/{UPLOADS}/empty.txt", headers={"Range": "bytes=0-"})).status == 416


async def test_missing_items_answer_the_exact_404_clients_understand(edge: Any) -> None:
    for url in (f"/artifactory/{UPLOADS}/nope.bin", "/artifactory/no-such-repo/file.bin"):
        resp = await edge.get(url)
        assert await error_of(resp) == (404, "Unable to find item")


async def test_a_folder_requested_as_a_file_is_not_found(edge: Any) -> None:
    await upload(edge, "dir/file.bin", DATA)
    resp = await edge.get(f"/artifactory/{UPLOADS}/dir")
    assert await error_of(resp) == (404, "Unable to find item")


async def test_s3_downloads_redirect_to_a_presigned_url_by_default(
    tmp_path: Any, request: Any, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(tmp_path, storage=storage_settings("s3", tmp_path, request)))
    )
    await upload(client, "r.bin", DATA)
    resp = await client.get(f"/artifactory/{UPLOADS}/r.bin", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(DATA).hexdigest()
    location = resp.headers["Location"]
    assert "X-Amz-Signature" in location or "Signature" in location
    assert hashlib.sha256(DATA).hexdigest() not in location.split("?")[1]
