"""The calls a pull-mode edge makes to the Distribution service (wire/pull.py), outbound only.

Each carries the edge's credential. A call the service cannot answer now (no connection, a
5xx, a time-out) is a ``ServiceUnavailable``: the poller tries again at its next poll. A
refusal (4xx) is a ``ServiceRefused`` with the service's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from wire import protocol, pull
from wire.errors import InvalidInput, WireError

# Bytes of a manifest or a blob read from the service at a time.
CHUNK = 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)


class ServiceUnavailable(WireError):
    """The service cannot be reached or answered a 5xx: nothing is decided, the next poll retries."""

    status = 503


class ServiceRefused(WireError):
    """The service refused a call (4xx); ``status`` is its answer's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(status: int, body: bytes) -> str:
    text = body[:2000].decode("utf-8", "replace")
    with contextlib.suppress(ValueError, TypeError, KeyError, IndexError, AttributeError):
        parsed = json.loads(text)
        text = parsed.get("message") or parsed["errors"][0]["message"]
    return f"the service answered {status}: {text}"


class ServiceClient:
    def __init__(self, session: aiohttp.ClientSession, service_url: str, credential: str) -> None:
        self.session = session
        self.base = service_url.rstrip("/")
        self.edge = pull.credential_edge(credential)
        self.headers = {pull.CREDENTIAL_HEADER: credential}

    @contextlib.asynccontextmanager
    async def _call(
        self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self.session.request(
                method, self.base + path, json=body, headers=self.headers | (headers or {}), timeout=TIMEOUT
            ) as resp:
                if resp.status >= 500:
                    raise ServiceUnavailable(_message(resp.status, await resp.content.read(4096)))
                if resp.status >= 400:
                    raise ServiceRefused(resp.status, _message(resp.status, await resp.content.read(4096)))
                yield resp
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise ServiceUnavailable(f"cannot reach the service at {self.base}: {exc or type(exc).__name__}") from exc

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        async with self._call(method, path, body=body) as resp:
            try:
                return await resp.json()
            except (ValueError, aiohttp.ContentTypeError) as exc:
                raise ServiceUnavailable(f"the service answered {path} with no JSON: {exc}") from None

    async def work(self) -> list[pull.WorkItem]:
        return _parsed(pull.parse_work, await self._json("GET", pull.work_path(self.edge)))

    async def state(self, distribution_id: int) -> pull.JobState:
        return _parsed(pull.parse_job_state, await self._json("GET", pull.job_path(self.edge, distribution_id)))

    async def report(self, distribution_id: int, report: pull.Report) -> pull.JobState:
        body = pull.report_body(report)
        answer = await self._json("POST", pull.job_path(self.edge, distribution_id), body)
        return _parsed(pull.parse_job_state, answer)

    async def manifest_to(self, name: str, version: str, path: Path) -> tuple[str, str]:
        """Stream the signed manifest's bytes to ``path`` (never held whole); answers their
        sha256 and the armored signature."""
        async with self._call("GET", pull.manifest_path(self.edge, name, version)) as resp:
            signature = protocol.signature_from_header(resp.headers.get(protocol.SIGNATURE_HEADER))
            digest = hashlib.sha256()
            with await asyncio.to_thread(open, path, "wb") as out:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
        return digest.hexdigest(), signature

    @contextlib.asynccontextmanager
    async def blob(self, sha256: str, offset: int, size: int) -> AsyncIterator[aiohttp.ClientResponse]:
        """The blob's bytes from ``offset`` (a resume asks for a range, which must come as a 206)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self._call("GET", pull.blob_path(self.edge, sha256), headers=headers) as resp:
            expected = 206 if offset else 200
            if resp.status != expected or resp.content_length != size - offset:
                raise ServiceUnavailable(
                    f"blob {sha256} from byte {offset}: the service answered {resp.status} with"
                    f" {resp.content_length} bytes, not {expected} with {size - offset}"
                )
            yield resp


def _parsed(parse: Any, body: Any) -> Any:
    try:
        return parse(body)
    except InvalidInput as exc:
        raise ServiceUnavailable(f"the service's answer breaks the pull protocol: {exc.message}") from None
