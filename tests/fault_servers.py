"""Misbehaving peers on loopback: real servers, not mocks.

``proxy_app`` stands in front of a real edge and forwards every call, unless told to
misbehave: answer 5xx a number of times, hang, answer garbage, pass uploads slowly, lose
the answer of a call the edge carried out, damage a request or an answer body by one byte,
or break the connection half-way through an answer. It stands as well in front of the
Distribution service, for a pull-mode edge's calls.
``garbage_app`` answers every request with 200 and a body that is not JSON.
``SilentServer`` accepts connections and never answers. ``s3_proxy_app`` stands in front
of a real S3 server and answers chosen S3 calls with 500/503, stalls them, loses their
answers or damages their bodies by one byte. Each runs in its own thread with its own
event loop, so tests that block (starting processes, ``time.sleep``, boto3) do not stall it.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
FORWARDED_ANSWER_HEADERS = (
    "Content-Type",
    "X-Received-Bytes",
    "Content-Range",
    "WWW-Authenticate",
    "X-Manifest-Signature",
    "Accept-Ranges",
)


def flip_byte(data: bytes, at: int) -> bytes:
    """``data`` with one bit of the byte at ``at`` flipped, as a bad cable or a bad disk does it."""
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@dataclass
class Faults:
    """What the proxy does to the calls it sees; tests change it while the proxy runs."""

    server_errors: int = 0  # answer this many calls with 500 before forwarding again
    hang: bool = False  # hold every call open without answering
    garbage: bool = False  # answer 200 with HTML instead of forwarding
    upload_rate: float | None = None  # bytes per second for blob uploads
    only: str = ""  # misbehave only on paths containing this
    only_method: str = ""  # and, when set, only on calls of this method
    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    upload_bytes: int = 0  # blob bytes forwarded to the edge
    lose_answers: int = 0  # forward this many calls, then close the connection instead of answering
    lost: int = 0  # answers lost so far
    # once an answer is lost, later calls wait for this to be set before they are forwarded
    release: threading.Event | None = None
    damage_bodies: int = 0  # forward this many request bodies damaged by ``damage``
    damage: Callable[[bytes], bytes] = field(default=lambda body: flip_byte(body, len(body) // 2))
    damage_answers: int = 0  # pass on this many answer bodies damaged by ``damage``
    cut_answers: int = 0  # pass on the first half of this many answer bodies, then close the connection
    # called with (method, path, status) once the edge has answered, before the answer is passed on
    on_answer: Callable[[str, str, int], None] | None = None


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
    targeted = faults.only in request.path and faults.only_method in ("", request.method)
    if targeted and faults.hang:
        await asyncio.sleep(3600)
    while targeted and faults.lost and faults.release is not None and not faults.release.is_set():
        await asyncio.sleep(0.02)
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
    body: bytes | AsyncIterator[bytes]
    if targeted and faults.damage_bodies > 0:
        faults.damage_bodies -= 1
        body = faults.damage(await request.read())
    else:
        body = _throttled(request.content, faults) if request.method == "PUT" else await request.read()
    session = request.app[session_key]
    async with session.request(
        request.method, request.app[target_key] + request.path_qs, headers=headers, data=body
    ) as resp:
        data = await resp.read()
        faults.seen.append((request.method, request.path, resp.status))
        if faults.on_answer is not None:
            faults.on_answer(request.method, request.path, resp.status)
        if targeted and faults.lose_answers > 0:  # done by the edge, but the caller never hears of it
            faults.lose_answers -= 1
            faults.lost += 1
            assert request.transport is not None
            request.transport.close()
        answer = {k: resp.headers[k] for k in FORWARDED_ANSWER_HEADERS if k in resp.headers}
        if targeted and faults.damage_answers > 0 and data:
            faults.damage_answers -= 1
            data = faults.damage(data)
        if targeted and faults.cut_answers > 0 and data:
            faults.cut_answers -= 1
            return await _cut(request, resp.status, answer, data)
        return web.Response(status=resp.status, body=data, headers=answer)


async def _cut(request: web.Request, status: int, headers: dict[str, str], data: bytes) -> web.StreamResponse:
    """Announce all of ``data``, send half of it, then drop the connection: a link that breaks mid-answer."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    assert request.transport is not None
    request.transport.close()
    return response


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


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and reads what arrives, but never sends a byte:
    a peer that hangs. ``connections`` counts the connections it accepted."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while await reader.read(64 * 1024):
                pass
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def start(self) -> SilentServer:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="silent-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("silent server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None or self._thread is None:
            return
        server, loop = self._server, self._loop

        async def close() -> None:
            server.close()
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(15)
        self._loop = None


def garbage_app() -> web.Application:
    async def garbage(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>garbage, not an edge</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", garbage)
    return app


# ---------------------------------------------------------------- S3 faults
#
# ``s3_proxy_app`` stands in front of a real S3 server (SeaweedFS in the suite) and forwards
# every request byte for byte, keeping the Host header and the raw query so that SigV4
# signatures made for the proxy's address still verify, unless an ``S3Fault`` names the
# call: then it answers 500/503 the way S3 does, or holds the call without an answer (a
# time-out for the client), or forwards the headers and the first bytes of an object and
# then stops sending.

S3_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
STALL_SECONDS = 3600.0
_S3_HOP_HEADERS = HOP_HEADERS | {"expect"}
_S3_HOP_ANSWER_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def s3_operation(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """The S3 API call a path-style request makes, named as in the S3 API reference."""
    on_bucket = "/" not in path.strip("/")
    if method == "PUT":
        if "x-amz-copy-source" in headers:
            return "UploadPartCopy" if "partNumber" in query else "CopyObject"
        if "partNumber" in query:
            return "UploadPart"
        return "CreateBucket" if on_bucket else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "POST"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteBucket" if on_bucket else "DeleteObject"
    if method == "GET":
        if on_bucket:
            return "ListMultipartUploads" if "uploads" in query else "ListObjectsV2"
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadBucket" if on_bucket else "HeadObject"
    return method


@dataclass
class S3Fault:
    """One misbehaviour for one kind of S3 call."""

    operation: str  # as named by s3_operation: "PutObject", "CompleteMultipartUpload", "GetObject", ...
    status: int | None = 500  # 500 or 503 as S3 answers them; None: hold the call without answering
    times: int = 1  # matching calls that misbehave; 0: every one
    after: int = 0  # matching calls let through first (the third PUT: after=2)
    # instead of ``status``: forward the answer's headers and this many body bytes, then stop sending
    stall_after_bytes: int | None = None
    # forward the call to S3 and answer ``status`` instead of S3's answer: the call is done, its answer lost
    lose_answer: bool = False
    # forward the call with the byte at this offset of its body flipped: damaged on the way to S3
    flip_byte_at: int | None = None
    key_suffix: str = ""  # only calls on an object key ending with this (a blob's sha256, say)
    # DeleteObjects: forward the call, then report S3 could not delete each of its keys ending with
    # this (AccessDenied), as S3 does key by key in a 200 answer
    refuse_keys_ending: str = ""
    matched: int = 0
    hits: int = 0  # calls this fault misbehaved on

    def take(self) -> bool:
        self.matched += 1
        if self.matched <= self.after or (self.times and self.hits >= self.times):
            return False
        self.hits += 1
        return True


@dataclass
class S3Faults:
    """The faults the proxy applies; tests change them while it runs."""

    faults: list[S3Fault] = field(default_factory=list)
    seen: list[tuple[str, int | None]] = field(default_factory=list)  # (operation, status or None: stalled)
    # seconds each call of an operation is held before it is forwarded, so that calls made at
    # once are seen at once; and the most calls of each operation the proxy held at one time
    delays: dict[str, float] = field(default_factory=dict)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)

    def add(self, *faults: S3Fault) -> None:
        self.faults.extend(faults)

    def clear(self) -> None:
        self.faults.clear()
        self.seen.clear()
        self.delays.clear()
        self.most_in_flight.clear()

    def fault_for(self, operation: str, path: str) -> S3Fault | None:
        for fault in list(self.faults):
            if fault.operation == operation and path.endswith(fault.key_suffix) and fault.take():
                return fault
        return None

    def calls(self, operation: str) -> list[int | None]:
        """The answers every call of ``operation`` got, in order."""
        return [status for op, status in self.seen if op == operation]


s3_faults_key = web.AppKey("s3_faults", S3Faults)


def _s3_error(request: web.Request, status: int) -> web.Response:
    code, message = S3_ERRORS[status]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{request.path}</Resource><RequestId>fault-proxy</RequestId></Error>"
    )
    payload = None if request.method == "HEAD" else body.encode()
    return web.Response(status=status, body=payload, content_type="application/xml")


def _s3_upstream(request: web.Request, body: bytes) -> Any:
    """The request as S3 gets it: the client's signed headers (Host included) and raw path."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _S3_HOP_HEADERS}
    headers["Host"] = request.host  # signed by the client: it must reach the server unchanged
    url = URL(request.app[target_key] + request.raw_path, encoded=True)
    return request.app[session_key].request(
        request.method, url, headers=headers, data=io.BytesIO(body) if body else None, allow_redirects=False
    )


async def _s3_forward(request: web.Request) -> web.StreamResponse:
    faults = request.app[s3_faults_key]
    operation = s3_operation(request.method, request.path, request.query, request.headers)
    faults.in_flight[operation] += 1
    faults.most_in_flight[operation] = max(faults.most_in_flight[operation], faults.in_flight[operation])
    try:
        await asyncio.sleep(faults.delays.get(operation, 0.0))
        return await _s3_answer(request, faults, operation)
    finally:
        faults.in_flight[operation] -= 1


async def _s3_answer(request: web.Request, faults: S3Faults, operation: str) -> web.StreamResponse:
    fault = faults.fault_for(operation, request.path)
    body = await request.read()  # a server that stalls has still taken the request
    if fault is not None and fault.flip_byte_at is not None:
        body = flip_byte(body, fault.flip_byte_at)
    elif fault is not None and fault.refuse_keys_ending:
        return await _refusing_keys(request, body, faults, operation, fault.refuse_keys_ending)
    elif fault is not None and fault.stall_after_bytes is None:
        if fault.lose_answer:
            async with _s3_upstream(request, body) as done:
                await done.read()
        faults.seen.append((operation, fault.status))
        if fault.status is None:
            await asyncio.sleep(STALL_SECONDS)
        return _s3_error(request, fault.status or 500)
    async with _s3_upstream(request, body) as upstream:
        faults.seen.append((operation, upstream.status))
        answer = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _S3_HOP_ANSWER_HEADERS:
                answer.headers.add(name, value)
        if upstream.content_length is not None:
            answer.content_length = upstream.content_length
        await answer.prepare(request)
        limit = None if fault is None else fault.stall_after_bytes
        sent = 0
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            if limit is not None:
                chunk = chunk[: limit - sent]
            await answer.write(chunk)
            sent += len(chunk)
            if limit is not None and sent >= limit:
                await asyncio.sleep(STALL_SECONDS)  # the client sees the bytes stop coming
        await answer.write_eof()
        return answer


async def _refusing_keys(
    request: web.Request, body: bytes, faults: S3Faults, operation: str, ending: str
) -> web.Response:
    """S3's answer to a DeleteObjects, with an AccessDenied error added for each key ending with ``ending``."""
    async with _s3_upstream(request, body) as upstream:
        faults.seen.append((operation, upstream.status))
        answer = await upstream.read()
    refused = [key for key in re.findall(r"<Key>(.*?)</Key>", body.decode()) if key.endswith(ending)]
    errors = "".join(
        f"<Error><Key>{key}</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>" for key in refused
    )
    text = answer.decode()
    text = text.replace("</DeleteResult>", errors + "</DeleteResult>") if "</DeleteResult>" in text else text
    return web.Response(status=upstream.status, body=text.encode(), content_type="application/xml")


def s3_proxy_app(target: str, faults: S3Faults) -> Callable[[], web.Application]:
    def make() -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app[s3_faults_key] = faults
        app[target_key] = target.rstrip("/")

        async def session_ctx(app: web.Application) -> AsyncIterator[None]:
            app[session_key] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=120), auto_decompress=False, trust_env=False
            )
            yield
            await app[session_key].close()

        app.cleanup_ctx.append(session_ctx)
        app.router.add_route("*", "/{tail:.*}", _s3_forward)
        return app

    return make
