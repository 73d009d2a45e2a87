"""Downloads dispatched without aiohttp's router (edge/dispatch.py): every request, whichever
way it went, carries the match the router itself makes, for any path; downloads take the short
way; a router that no longer guarantees the short way is right stops the edge from starting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.app import create_app
from edge.dispatch import MATCHES_REMEMBERED, RouterChanged, check_router
from tests.conftest import UPLOADS, make_settings, upload


def described(match_info: Any) -> tuple[Any, ...]:
    route = match_info.route
    return (type(match_info).__name__, route.name, getattr(route, "method", None), dict(match_info))


class Witness:
    """A prepare hook comparing each request's match with the router's own, and noting the
    requests the edge's dispatch claimed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []
        self.mismatches: list[tuple[str, Any, Any]] = []

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        theirs = await request.app.router.resolve(request)
        if described(request.match_info) != described(theirs):
            self.mismatches.append((request.raw_path, described(request.match_info), described(theirs)))
        claimed = check_router(request.app).match(request) is not None
        self.seen.append((request.method, request.raw_path, claimed))


@pytest.fixture
async def witnessed(tmp_path: Path, aiohttp_client: Any) -> tuple[Any, Witness]:
    app = create_app(make_settings(tmp_path))
    witness = Witness()
    app.on_response_prepare.append(witness)
    client = await aiohttp_client(app)
    await upload(client, "dir/file.bin", b"bytes")
    witness.seen.clear()
    return client, witness


async def raw_request(client: Any, method: str, target: str, *headers: str) -> int:
    """The status of one request sent exactly as written (no client rewrites the target)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        head = "\r\n".join([f"{method} {target} HTTP/1.1", "Host: edge", "Connection: close", *headers, "", ""])
        writer.write(head.encode("latin-1"))
        status_line = await reader.readline()
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()


DOWNLOADS = [
    f"/artifactory/{UPLOADS}/dir/file.bin",
    f"/artifactory/{UPLOADS}/dir%2Ffile.bin",
    f"/artifactory/{UPLOADS}/dir/%66ile.bin",
    f"/artifactory/{UPLOADS}/dir/file.bin?x=1&y",
    f"/artifactory/{UPLOADS}/%E2%82%AC%20and%25.txt",
    f"/artifactory/{UPLOADS}/a;b=c/d",
    f"/artifactory/{UPLOADS}//double/",
    f"/artifactory/{UPLOADS}/../escape",
    f"/artifactory/{UPLOADS}",
    "/artifactory/apix/a",
    "/artifactory/API/storage/x",
    "/artifactory/no-such-repo/x",
]
OTHERS = [
    f"/artifactory/api/storage/{UPLOADS}/dir/file.bin",
    "/artifactory/api",
    "/artifactory/api/",
    "/artifactory/api/system/ping",
    "/artifactory/ap%69/system/ping",  # the router decodes it: the ping, not a download
    "/artifactory/%61pi/storage/x",
    "/artifactory/",
    "/artifactory",
    "/api/v1/system/ping",
    "/",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_downloads_take_the_short_way_with_the_routers_match(witnessed: Any, method: str) -> None:
    client, witness = witnessed
    for _ in range(2):  # the second time, downloads find the match they were given the first time
        statuses = {target: await raw_request(client, method, target) for target in DOWNLOADS + OTHERS}
    assert statuses[f"/artifactory/{UPLOADS}/dir/file.bin"] == 200
    assert statuses[f"/artifactory/{UPLOADS}/dir/%66ile.bin"] == 200
    assert statuses["/artifactory/ap%69/system/ping"] == 200
    assert witness.mismatches == []
    claimed = {target for _, target, took in witness.seen if took}
    assert claimed == set(DOWNLOADS)
    assert {target for _, target, _ in witness.seen} == set(DOWNLOADS + OTHERS)  # every answer was compared


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "OPTIONS", "PATCH"])
async def test_other_methods_and_an_expect_header_go_through_the_router(witnessed: Any, method: str) -> None:
    client, witness = witnessed
    target = f"/artifactory/{UPLOADS}/dir/other.bin"
    await raw_request(client, method, target, "Content-Length: 0")
    await raw_request(client, "GET", target, "Expect: 100-continue", "Content-Length: 0")
    assert witness.mismatches == []
    assert [took for _, _, took in witness.seen] == [False, False]


segment = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(segment, min_size=1, max_size=4),
    safe=st.sampled_from(["/", "", "/;=@", "/%"]),
    method=st.sampled_from(["GET", "HEAD", "PUT"]),
)
async def test_any_path_gets_the_routers_match(witnessed: Any, segments: list[str], safe: str, method: str) -> None:
    client, witness = witnessed
    witness.mismatches.clear()
    target = "/artifactory/" + "/".join(quote(s, safe=safe) for s in segments)
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
        return  # not a request target a client can send
    await raw_request(client, method, target, "Content-Length: 0")
    assert witness.mismatches == []


@pytest.mark.parametrize("count", [0, 1, MATCHES_REMEMBERED - 1, MATCHES_REMEMBERED, MATCHES_REMEMBERED + 1])
def test_the_matches_of_downloads_are_kept_up_to_a_bound_and_shared(tmp_path: Path, count: int) -> None:
    app = create_app(make_settings(tmp_path))
    downloads = check_router(app)
    first = [downloads.match(make_mocked_request("GET", f"/artifactory/r/f{i}", app=app)) for i in range(count)]
    assert all(m is not None and m["tail"] == f"r/f{i}" and m.apps == (app,) for i, m in enumerate(first))
    # past the bound, the kept matches were let go and the last one kept afresh
    assert len(downloads.matches) == (count if count <= MATCHES_REMEMBERED else 1)
    if count:
        again = downloads.match(make_mocked_request("GET", f"/artifactory/r/f{count - 1}", app=app))
        assert again is first[-1]  # shared: the same frozen match
        head = downloads.match(make_mocked_request("HEAD", f"/artifactory/r/f{count - 1}", app=app))
        assert head is not None and head is not again and head.route.method == "HEAD"


def test_the_match_of_a_download_with_a_query_is_not_kept(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    downloads = check_router(app)
    matches = [downloads.match(make_mocked_request("GET", "/artifactory/r/f?sig=x", app=app)) for _ in range(2)]
    assert matches[0] is not None and matches[1] is not None and matches[0] is not matches[1]
    assert downloads.matches == {}


async def handler(request: web.Request) -> web.Response:
    return web.Response()


@pytest.mark.parametrize(
    "change",
    [
        lambda app: app.router.add_get("/artifactory/special/{name}", handler),
        lambda app: app.router.add_get("/artifactory/{repo}/{path:.*}", handler),
        lambda app: app.add_domain("files.example", web.Application()),
    ],
    ids=["a route under a repo's name", "another catch-all", "a sub-app by domain"],
)
async def test_a_route_that_would_be_shadowed_stops_the_edge_from_starting(tmp_path: Path, change: Any) -> None:
    app = create_app(make_settings(tmp_path))
    change(app)
    runner = web.AppRunner(app)
    try:
        with pytest.raises(RouterChanged):
            await runner.setup()
    finally:
        await app.cleanup()  # what start-up opened before the check refused
