"""Upstreams for remote repos on loopback: a relay in front of a real edge, and a liar.

``relay_app`` forwards every call to a real edge with all its headers (checksums
included), counts the downloads it passed, can flip one byte of the bodies it
returns, and can send storage API answers in two pieces. ``liar_app`` serves files
whose announced size or checksum is not what it sends, or sends them slowly forever.
Both run in a ``ThreadedServer``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.fault_servers import HOP_HEADERS, flip_byte

session_key = web.AppKey("session", aiohttp.ClientSession)


@dataclass
class Relay:
    target: str
    flip: bool = False  # damage one byte of every download body passed on
    halves: bool = False  # send storage API answers in two pieces, a pause between them
    gets: list[str] = field(default_factory=list)  # paths of the GETs passed on
    authorizations: list[str] = field(default_factory=list)  # Authorization headers seen

    def downloads_of(self, path: str) -> int:
        return sum(1 for p in self.gets if p.endswith(path))


relay_key = web.AppKey("relay", Relay)


async def _relay(request: web.Request) -> web.StreamResponse:
    relay = request.app[relay_key]
    if request.method == "GET":
        relay.gets.append(request.path)
    relay.authorizations.append(request.headers.get("Authorization", ""))
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    body = await request.read()
    async with request.app[session_key].request(
        request.method, relay.target + request.path_qs, headers=headers, data=body or None, allow_redirects=False
    ) as resp:
        data = await resp.read()
        answer = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
    if relay.flip and request.method == "GET" and resp.status == 200 and data:
        data = flip_byte(data, len(data) // 2)
    if request.method == "HEAD":
        response = web.StreamResponse(status=resp.status, headers=answer)
        response.content_length = int(resp.headers.get("Content-Length", "0"))
        return response
    if relay.halves and request.path.startswith("/artifactory/api/storage/"):
        return await _in_halves(request, resp.status, answer, data)
    return web.Response(status=resp.status, body=data, headers=answer)


async def _in_halves(request: web.Request, status: int, headers: dict[str, str], data: bytes) -> web.StreamResponse:
    """The body as a streaming server sends a long answer: its first half, then the rest later."""
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    await asyncio.sleep(0.5)
    await response.write(data[len(data) // 2 :])
    await response.write_eof()
    return response


def relay_app(relay: Relay) -> Callable[[], web.Application]:
    def make() -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app[relay_key] = relay

        async def session_ctx(app: web.Application) -> AsyncIterator[None]:
            app[session_key] = aiohttp.ClientSession(auto_decompress=False, trust_env=False)
            yield
            await app[session_key].close()

        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/{tail:.*}", _relay)
        return app

    return make


@dataclass(frozen=True)
class Lie:
    """A file as the liar serves it: announced as ``announced`` bytes, but ``sent`` is what goes out."""

    announced: bytes
    sent: bytes
    slow: bool = False  # send a byte every 0.2 s, forever
    checksum: bool = True  # announce the sha256 of ``announced``


liar_key = web.AppKey("lies", dict)


async def _lie(request: web.Request) -> web.StreamResponse:
    lie: Lie | None = request.app[liar_key].get(request.match_info["tail"])
    if lie is None:
        return web.json_response({"errors": [{"status": 404, "message": "Unable to find item"}]}, status=404)
    headers = {"X-Checksum-Sha256": hashlib.sha256(lie.announced).hexdigest()} if lie.checksum else {}
    response = web.StreamResponse(headers=headers)
    response.content_length = len(lie.announced)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    if lie.slow:
        while True:
            await response.write(b"x")
            await asyncio.sleep(0.2)
    await response.write(lie.sent[: len(lie.announced)])
    if len(lie.sent) < len(lie.announced):  # then the connection ends short of what was announced
        assert request.transport is not None
        request.transport.close()
        return response
    await response.write_eof()
    return response


def liar_app(lies: dict[str, Lie]) -> Callable[[], web.Application]:
    def make() -> web.Application:
        app = web.Application()
        app[liar_key] = lies
        app.router.add_get("/artifactory/lies/{tail:.*}", _lie)
        return app

    return make
