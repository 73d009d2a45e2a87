"""One fetch of a file from an upstream into the blob store, verified before it is kept.

The bytes are hashed while written (the store's writer) and checked against what the
upstream announced (``X-Checksum-Sha256``, else ``-Sha1`` and ``-Md5``, and
``Content-Length``) before the blob is published; anything else keeps nothing. An
upstream that sends none of the three checksums is refused before a byte is read:
an unverified file is never cached or served.

One client may watch the bytes as they arrive (a ``Tap``): it gets every chunk but
the last, which is handed over only once the whole file is verified, so a client of a
lying upstream sees its transfer cut short, never a complete wrong file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from storage_backends import DigestMismatch, Digests, StorageBackend

from .config import RemoteConfig
from .errors import UpstreamFailed, UpstreamTimeout
from .upstream import Upstream

CHUNK = 256 * 1024
TAP_DEPTH = 16  # chunks a watching client may lag behind the upstream before the fetch waits for it
CHECKSUM_HEADERS = {"sha256": "X-Checksum-Sha256", "sha1": "X-Checksum-Sha1", "md5": "X-Checksum-Md5"}


@dataclass(frozen=True)
class Announced:
    """What the upstream said of the file before its bytes: checked against them after."""

    size: int | None
    checksums: dict[str, str]
    mime_type: str | None


def checksums_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The checksums an upstream's answer names, by algorithm."""
    return {k: headers[h].strip().lower() for k, h in CHECKSUM_HEADERS.items() if headers.get(h)}


def announced(resp: aiohttp.ClientResponse, config: RemoteConfig) -> Announced:
    checksums = checksums_of(resp.headers)
    if not checksums:
        raise UpstreamFailed(
            f"The upstream of remote repository '{config.key}' sent no checksum (X-Checksum-Sha256): not served"
        )
    return Announced(resp.content_length, checksums, resp.headers.get("Content-Type"))


class Tap:
    """The chunks of a fetch, for the one client that watches it arrive."""

    def __init__(self) -> None:
        self.announced: asyncio.Future[Announced] = asyncio.get_running_loop().create_future()
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(TAP_DEPTH)
        self._watched = False
        self._left = False

    def watch(self) -> bool:
        """Whether the caller is the one watcher (the first to ask)."""
        if self._watched:
            return False
        self._watched = True
        return True

    async def put(self, chunk: bytes | None) -> None:
        if self._watched and not self._left:
            await self._chunks.put(chunk)

    async def get(self) -> bytes | None:
        return await self._chunks.get()

    def leave(self) -> None:
        """The watcher went away: the fetch goes on for the others, feeding nobody."""
        self._left = True
        while not self._chunks.empty():
            self._chunks.get_nowait()

    def start(self, info: Announced) -> None:
        if not self.announced.done():
            self.announced.set_result(info)

    def fail(self, exc: BaseException) -> None:
        if not self.announced.done():
            self.announced.set_exception(exc)
            self.announced.exception()  # retrieved here: the fetch's own waiters report it


async def fetch_blob(
    upstream: Upstream,
    storage: StorageBackend,
    config: RemoteConfig,
    path: str,
    chain: list[str],
    *,
    tap: Tap,
    max_bytes: int,
    deadline: float,
) -> Digests:
    """Fetch ``path`` whole into the store within ``deadline`` seconds; the stored blob's digests.
    UpstreamFailed/UpstreamTimeout (nothing kept) when that cannot be done."""
    try:
        async with asyncio.timeout(deadline):
            return await _fetch(upstream, storage, config, path, chain, tap, max_bytes)
    except TimeoutError:
        error: BaseException = UpstreamTimeout(
            f"The upstream of remote repository '{config.key}' did not send '{path}' within {deadline:g} s"
        )
        tap.fail(error)
        raise error from None
    except BaseException as exc:
        tap.fail(exc)
        raise
    finally:
        with contextlib.suppress(Exception):
            await tap.put(None)


async def _fetch(
    upstream: Upstream, storage: StorageBackend, config: RemoteConfig, path: str, chain: list[str], tap: Tap, limit: int
) -> Digests:
    async with upstream.open(config, path, chain) as resp:
        info = announced(resp, config)
        if info.size is not None and info.size > limit:
            raise UpstreamFailed(f"'{path}' is {info.size} bytes, more than a remote repo's cache may hold")
        tap.start(info)
        async with await storage.writer() as writer:
            async for chunk in resp.content.iter_chunked(CHUNK):
                if writer.size + len(chunk) > limit or (info.size is not None and writer.size + len(chunk) > info.size):
                    raise UpstreamFailed(f"The upstream sent more bytes of '{path}' than it announced")
                await writer.write(chunk)
                await tap.put(chunk)
            try:
                digests = await writer.commit(expected=info.checksums, expected_size=info.size)
            except DigestMismatch as exc:
                raise UpstreamFailed(
                    f"The upstream sent '{path}' with {exc.field} {exc.actual}, not the {exc.expected} it announced:"
                    " nothing kept"
                ) from None
    return digests
