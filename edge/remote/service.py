"""Smart remote repositories: serve what the cache holds, fetch what it lacks, keep it bounded.

A file a remote repo holds is an ordinary catalog entry in that repo, owned by
``REMOTE_OWNER`` (Artifactory's ``{key}-cache``), served by the normal download path.
A miss is fetched from the upstream once per process (single flight), streamed to the
first client while it is stored, and kept only once verified (``fetch.py``). After
``retrievalCachePeriodSecs`` a cached file is checked upstream again; with
``originAbsenceDetection`` one the upstream no longer has is dropped. A 404 upstream is
remembered for ``missedRetrievalCachePeriodSecs`` (per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from cachetools import LRUCache

from repository.artifacts import ArtifactService
from repository.catalog import Artifact, Repo, now_ms
from repository.errors import NotFound, RepositoryError
from repository.http.download import serve_stored
from storage_backends import content_disposition

from .config import RemoteConfig
from .errors import UpstreamFailed, UpstreamMissing, UpstreamTimeout
from .fetch import Announced, Tap, checksums_of, fetch_blob
from .flights import SingleFlight
from .listings import Listings
from .lru import over_limit
from .stats import HitCounter
from .store import RemoteStore
from .upstream import Upstream, check_no_loop

log = logging.getLogger(__name__)

REMOTE_OWNER = "remote-cache"
FETCHED_BY = "remote"
MISSED_ENTRIES = 100_000


class RemoteRepos:
    def __init__(
        self,
        store: RemoteStore,
        artifacts: ArtifactService,
        upstream: Upstream,
        *,
        max_bytes: int,
        fetch_deadline: float,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.upstream = upstream
        self.max_bytes = max_bytes
        self.fetch_deadline = fetch_deadline
        self.flights: SingleFlight[tuple[str, str], Artifact] = SingleFlight()
        self.hits = HitCounter()
        self._missed: LRUCache[tuple[str, str], float] = LRUCache(MISSED_ENTRIES)
        self._checked: LRUCache[tuple[str, str], int] = LRUCache(MISSED_ENTRIES)
        self._evicting = asyncio.Lock()
        self.listings = Listings(store, upstream, self.drop)

    def configuration(self, key: str) -> dict[str, Any] | None:
        """A remote repo's configuration as GET answers it (credentials masked)."""
        config = self.store.config(key)
        return None if config is None else config.answer()

    async def listing(self, request: web.Request, repo: Repo, path: str) -> web.StreamResponse | None:
        """The storage API's answer from the upstream, for what the cache does not hold as a file."""
        config = self.store.config(repo.key)
        if config is None or (path and await self.artifacts.catalog.get_artifact(repo.key, path) is not None):
            return None
        return await self.listings.answer(request, config, path, check_no_loop(request.headers, self.upstream.node_id))

    async def serve(self, request: web.Request, repo: Repo, path: str) -> web.StreamResponse:
        """GET/HEAD of ``path`` in the remote repo ``repo`` (read permission already checked)."""
        config = self.store.config(repo.key)
        if config is None:
            raise NotFound()
        chain = check_no_loop(request.headers, self.upstream.node_id)
        key = (repo.key, path)
        artifact = await self.artifacts.catalog.get_artifact(repo.key, path) if path else None
        if artifact is not None and not config.offline and await self._stale(config, key):
            artifact = await self._revalidate(config, artifact, chain)
        if artifact is not None:
            self.store.used(repo.key, path)
            if config.sync.statistics and request.method == "GET":
                self.hits.add(config, path)
            return await serve_stored(request, repo.key, path)
        if config.offline or not path or self._missed.get(key, 0) > time.monotonic():
            raise NotFound()
        if request.method == "HEAD":
            return await self._head(config, path, chain)
        tap = Tap()
        task, started = self.flights.join(key, lambda: self._fetch(config, path, chain, tap))
        if started and "Range" not in request.headers and tap.watch():
            return await _watch(request, task, tap, self.upstream.node_id)
        await asyncio.shield(task)
        return await serve_stored(request, repo.key, path)

    async def _fetch(self, config: RemoteConfig, path: str, chain: list[str], tap: Tap) -> Artifact:
        key = (config.key, path)
        try:
            digests = await fetch_blob(
                self.upstream,
                self.artifacts.storage,
                config,
                path,
                chain,
                tap=tap,
                max_bytes=self.max_bytes,
                deadline=self.fetch_deadline,
            )
        except UpstreamMissing:
            self._missed[key] = time.monotonic() + config.missed_cache_secs
            raise
        except (UpstreamFailed, UpstreamTimeout) as exc:
            log.warning("remote repo %s: %s not fetched, nothing kept: %s", config.key, path, exc)
            raise
        artifact = await self.artifacts.index_fetched(config.key, path, digests, FETCHED_BY, REMOTE_OWNER)
        await self.store.cached(config.key, path, digests.size)
        self._checked[key] = now_ms()
        self._missed.pop(key, None)
        await self.evict()
        return artifact

    async def _stale(self, config: RemoteConfig, key: tuple[str, str]) -> bool:
        checked = self._checked.get(key)
        if checked is None:
            checked = self._checked[key] = await self.store.checked_at(*key)
        return now_ms() - checked > config.retrieval_cache_secs * 1000

    async def _revalidate(self, config: RemoteConfig, artifact: Artifact, chain: list[str]) -> Artifact | None:
        """The cached file if the upstream still has it unchanged, or cannot be asked; None when it was
        dropped (changed upstream, or gone with ``originAbsenceDetection``)."""
        key = (config.key, artifact.path)
        try:
            async with self.upstream.open(config, artifact.path, chain, method="HEAD") as resp:
                sha256 = resp.headers.get("X-Checksum-Sha256", "").strip().lower()
        except UpstreamMissing:
            if not config.sync.origin_absence_detection:
                return await self._still_good(key, artifact)
            await self.drop([(config.key, artifact.path)])
            self._missed[key] = time.monotonic() + config.missed_cache_secs
            return None
        except (UpstreamFailed, UpstreamTimeout) as exc:  # the upstream is down: what is cached still serves
            log.info("serving cached %s/%s: %s", config.key, artifact.path, exc)
            return artifact
        if sha256 and sha256 != artifact.sha256:
            await self.drop([(config.key, artifact.path)])
            return None
        return await self._still_good(key, artifact)

    async def _still_good(self, key: tuple[str, str], artifact: Artifact) -> Artifact:
        await self.store.mark_checked(*key)
        self._checked[key] = now_ms()
        return artifact

    async def _head(self, config: RemoteConfig, path: str, chain: list[str]) -> web.StreamResponse:
        """HEAD of a file not cached: the upstream's answer, nothing fetched."""
        try:
            async with self.upstream.open(config, path, chain, method="HEAD") as resp:
                info = Announced(resp.content_length, checksums_of(resp.headers), resp.headers.get("Content-Type"))
                headers = _headers(info, path, self.upstream.node_id)
                size = resp.content_length
        except UpstreamMissing:
            self._missed[(config.key, path)] = time.monotonic() + config.missed_cache_secs
            raise
        response = web.StreamResponse(headers=headers)
        if size is not None:
            response.content_length = size
        return response

    async def drop(self, entries: list[tuple[str, str]]) -> None:
        """Remove cached files from their repos; their blobs go if nothing else (a bundle) holds them."""
        gone: set[str] = set()
        for repo, path in entries:
            with contextlib.suppress(NotFound):
                gone.update(a.sha256 for a in await self.artifacts.catalog.delete(repo, path, owner=REMOTE_OWNER))
            self._checked.pop((repo, path), None)
        await self.store.forget(entries)
        await self.artifacts.collect(gone)

    async def evict(self) -> None:
        """Drop least recently used cached files while the caches hold more than ``max_bytes``."""
        async with self._evicting:
            await self.store.flush_uses()
            victims = over_limit(await self.store.files(), self.max_bytes)
            if victims:
                log.info(
                    "remote caches over %d bytes: dropping %d least recently used files", self.max_bytes, len(victims)
                )
                await self.drop([(v.repo, v.path) for v in victims])

    async def remove_repo(self, key: str) -> None:
        """Forget a remote repo: its configuration and everything its cache holds."""
        await self.drop([(f.repo, f.path) for f in await self.store.files_under(key, "")])
        await self.store.remove(key)

    async def report_forever(self, interval: float) -> None:
        """Write uses for the LRU and send statistics upstream, every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.flush_uses()
                await self.hits.report(self.upstream)
            except Exception:  # a bad round must not end the loop
                log.exception("remote repos' periodic report failed")


async def _watch(request: web.Request, task: asyncio.Task[Artifact], tap: Tap, node_id: str) -> web.StreamResponse:
    """Stream a fetch to the client as it arrives; the last chunk only once the file is verified."""
    try:
        info = await asyncio.shield(tap.announced)
    except RepositoryError:
        await asyncio.shield(task)  # the fetch's own error, with its status
        raise
    response = web.StreamResponse(headers=_headers(info, request.match_info.get("tail", ""), node_id))
    if info.size is not None:
        response.content_length = info.size
    held = b""
    try:
        await response.prepare(request)
        async for chunk in _chunks(tap):
            if held:
                await response.write(held)
            held = chunk
        await asyncio.shield(task)
    except RepositoryError:
        # Not verified: the client's transfer ends short of what was announced, never complete.
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        tap.leave()
    await response.write(held)
    await response.write_eof()
    return response


async def _chunks(tap: Tap) -> AsyncIterator[bytes]:
    while (chunk := await tap.get()) is not None:
        yield chunk


def _headers(info: Announced, path: str, node_id: str) -> dict[str, str]:
    headers = {
        "Content-Type": info.mime_type or "application/octet-stream",
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(path.rsplit("/", 1)[-1] or "file"),
    }
    if node_id:
        headers["X-Artifactory-Id"] = node_id
    if "sha256" in info.checksums:
        headers["ETag"] = f'"{info.checksums["sha256"]}"'
    for name, value in info.checksums.items():
        headers[f"X-Checksum-{name.capitalize()}"] = value
    return headers
