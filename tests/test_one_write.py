"""Small files answered in one write (repository/http/one_write.py): the same bytes on the wire as
aiohttp's own response, for every size around the in-memory limit, kept-alive and pipelined
connections, prepare hooks, and the audit's byte counts."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from edge.access.audit_store import AuditQuery
from edge.keys import audit_trail_key
from repository.http.download import SMALL_BODY
from repository.http.one_write import OneWriteResponse, head_block
from tests.conftest import UPLOADS, upload

VARYING = ("date", "x-request-id")  # what differs between any two answers


async def exchange(client: Any, *requests: bytes, until_eof: bool = False) -> list[tuple[list[str], bytes]]:
    """Send ``requests`` in one write on one connection; the answers, as header lines and body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"".join(requests))
        answers = []
        for _ in requests:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")[:-2]
            length = next(int(v) for k, _, v in (x.partition(": ") for x in lines[1:]) if k.lower() == "content-length")
            answers.append((lines, await reader.readexactly(length)))
        if until_eof:
            assert await reader.read() == b""  # the server closed the connection
        return answers
    finally:
        writer.close()


def get(path: str, version: str = "1.1", *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/{version}", "Host: edge", *extra, "", ""]).encode()


def comparable(lines: list[str]) -> list[str]:
    """Header lines with the status line's version dropped, and without what varies per answer."""
    status = lines[0].split(" ", 1)[1]
    return [status] + [x for x in lines[1:] if x.split(":", 1)[0].lower() not in VARYING]


@pytest.mark.parametrize("size", [0, 1, SMALL_BODY - 1, SMALL_BODY, SMALL_BODY + 1])
async def test_a_small_file_goes_out_as_aiohttp_would_send_it(edge: Any, size: int) -> None:
    data = os.urandom(size)
    await upload(edge, "one/file.bin", data)
    url = f"/artifactory/{UPLOADS}/one/file.bin"
    assert await (await edge.get(url)).read() == data  # read once: held in memory from now on when small
    # two requests pipelined on a kept-alive connection (one write each when small), then aiohttp's answer
    first, second = await exchange(edge, get(url), get(url))
    ((plain, plain_body),) = await exchange(edge, get(url, "1.0"), until_eof=True)
    assert first[0][0] == second[0][0] == "HTTP/1.1 200 OK" and plain[0] == "HTTP/1.0 200 OK"
    assert first[1] == second[1] == plain_body == data
    assert comparable(first[0]) == comparable(second[0]) == comparable(plain)
    ids = {x.split(": ", 1)[1] for x in first[0] + second[0] if x.lower().startswith("x-request-id:")}
    assert len(ids) == 2  # each answer names its own request


async def test_a_client_that_closes_gets_the_same_headers_and_a_closed_connection(edge: Any) -> None:
    await upload(edge, "one/close.bin", b"bytes")
    url = f"/artifactory/{UPLOADS}/one/close.bin"
    ((kept, _),) = await exchange(edge, get(url))
    ((closing, body),) = await exchange(edge, get(url, "1.1", "Connection: close"), until_eof=True)
    assert body == b"bytes"
    assert comparable(closing) == comparable(kept) + ["Connection: close"]


async def test_every_download_in_one_write_is_audited_with_its_bytes(edge: Any) -> None:
    sizes = [0, 1, 4096]
    for size in sizes:
        await upload(edge, f"one/{size}.bin", os.urandom(size))
    for size in sizes:  # the first read from disk, the next two in one write each
        for _ in range(3):
            assert (await edge.get(f"/artifactory/{UPLOADS}/one/{size}.bin")).status == 200
    trail = edge.app[audit_trail_key]
    await trail.flush()
    records = [r for r in await trail.store.query(AuditQuery(limit=1000)) if r.method == "GET"]
    assert sorted((r.path, r.status, r.bytes, r.aborted) for r in records) == sorted(
        (f"one/{size}.bin", 200, size, False) for size in sizes for _ in range(3)
    )


async def test_prepare_hooks_add_their_headers_and_may_name_their_own_server(aiohttp_client: Any) -> None:
    head = head_block(CIMultiDict({"Content-Type": "text/plain", "X-Checksum-Sha1": "abc"}), 3)

    async def handler(request: web.Request) -> web.StreamResponse:
        return OneWriteResponse(head, b"abc")

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Hook"] = "yes"
        if request.path == "/own":
            response.headers["Server"] = "mine"

    app = web.Application()
    app.router.add_get("/{name}", handler)
    app.on_response_prepare.append(hook)
    client = await aiohttp_client(app)
    for path, server in (("/any", None), ("/own", "mine")):
        resp = await client.get(path)
        assert resp.status == 200 and await resp.read() == b"abc"
        h = resp.headers
        assert (h["Content-Type"], h["X-Checksum-Sha1"], h["Content-Length"]) == ("text/plain", "abc", "3")
        assert h["X-Hook"] == "yes" and "Date" in h
        servers = h.getall("Server")
        assert len(servers) == 1 and (servers[0] == server if server else servers[0].startswith("Python/"))


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nb", "a\rb"])
def test_a_header_with_a_line_break_never_becomes_a_header_block(value: str) -> None:
    with pytest.raises(ValueError, match="header injection"):
        head_block(CIMultiDict({"X-Artifactory-Filename": value}), 1)
