"""Misbehaving peers on loopback, for the Distribution service to push to: real HTTP servers, not mocks.

``FaultyProxy`` stands in front of a real edge and forwards every call, unless told to
misbehave: answer 5xx a number of times, hang, answer garbage, or pass uploads slowly.
``garbage_server`` answers every request with 200 and a body that is not JSON. Each runs
in its own thread with its own event loop, so tests that block (starting processes,
``time.sleep``) do not stall it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
FORWARDED_ANSWER_HEADERS = ("Content-Type", "X-Received-Bytes", "Content-Range", "WWW-Authenticate")


@dataclass
class Faults:
    """What the proxy does to the calls it sees; tests change it while the proxy runs."""

    server_errors: int = 0  # answer this many calls with 500 before forwarding again
    hang: bool = False  # hold every call open without answering
    garbage: bool = False  # answer 200 with HTML instead of forwarding
    upload_rate: float | None = None  # bytes per second for blob uploads
    only: str = ""  # misbehave only on paths containing this
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    upload_bytes: int = 0  # blob bytes forwarded to the edge


class ThreadedServer:
    """An aiohttp app served on 127.0.0.1 from a thread of its own."""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self._make_app = make_app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._runner = web.AppRunner(self._make_app(), shutdown_timeout=1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            self.port = self._runner.addresses[0][1]

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        runner, loop = self._runner, self._loop

        async def cleanup() -> None:
            await runner.cleanup()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(cleanup(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(15)
        self._loop = None


faults_key = web.AppKey("faults", Faults)
target_key = web.AppKey("target", str)
session_key = web.AppKey("session", aiohttp.ClientSession)


async def _throttled(content: aiohttp.StreamReader, faults: Faults) -> AsyncIterator[bytes]:
    async for chunk in content.iter_chunked(64 * 1024):
        faults.upload_bytes += len(chunk)
        if faults.upload_rate:
            await asyncio.sleep(len(chunk) / faults.upload_rate)
        yield chunk


async def _forward(request: web.Request) -> web.StreamResponse:
    faults = request.app[faults_key]
    targeted = faults.only in request.path
    if targeted and faults.hang:
        await asyncio.sleep(3600)
    if targeted and faults.server_errors > 0:
        faults.server_errors -= 1
        faults.seen.append((request.method, request.path, 500))
        return web.json_response({"errors": [{"status": 500, "message": "proxy says: overloaded"}]}, status=500)
    if targeted and faults.garbage:
        faults.seen.append((request.method, request.path, 200))
        return web.Response(text="<html>this is not JSON</html>", content_type="text/html")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    body = _throttled(request.content, faults) if request.method == "PUT" else await request.read()
    session = request.app[session_key]
    async with session.request(
        request.method, request.app[target_key] + request.path_qs, headers=headers, data=body
    ) as resp:
        data = await resp.read()
        faults.seen.append((request.method, request.path, resp.status))
        answer = {k: resp.headers[k] for k in FORWARDED_ANSWER_HEADERS if k in resp.headers}
        return web.Response(status=resp.status, body=data, headers=answer)


def proxy_app(target: str, faults: Faults) -> Callable[[], web.Application]:
    def make() -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app[faults_key] = faults
        app[target_key] = target.rstrip("/")

        async def session_ctx(app: web.Application) -> AsyncIterator[None]:
            app[session_key] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600), trust_env=False)
            yield
            await app[session_key].close()

        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/{tail:.*}", _forward)
        return app

    return make


def garbage_app() -> web.Application:
    async def garbage(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>garbage, not an edge</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", garbage)
    return app
