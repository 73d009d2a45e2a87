"""Listings of a remote repo come from its upstream (the smart remote's behaviour).

The storage API on a remote repo's folder (its info, ``?list``) answers what the upstream
lists, with the upstream's URLs turned into this node's, kept for
``retrievalCachePeriodSecs`` and asked again after. With ``originAbsenceDetection`` a
fresh listing also drops cached files the upstream no longer lists. Offline, or with the
upstream down, the listing is what the cache holds (the catalog's own answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from cachetools import LRUCache

from repository.errors import NotFound
from repository.http.storage_api import base_url
from repository.paths import parent_of

from .config import RemoteConfig
from .errors import UpstreamFailed, UpstreamMissing, UpstreamTimeout
from .store import RemoteStore
from .upstream import Upstream

LISTINGS_KEPT = 10_000
MAX_LISTING_BYTES = 64 * 1024 * 1024

Drop = Callable[[list[tuple[str, str]]], Awaitable[None]]


class Listings:
    def __init__(self, store: RemoteStore, upstream: Upstream, drop: Drop) -> None:
        self._store = store
        self._upstream = upstream
        self._drop = drop
        self._kept: LRUCache[tuple[str, str, str], tuple[float, bytes]] = LRUCache(LISTINGS_KEPT)

    async def answer(
        self, request: web.Request, config: RemoteConfig, path: str, chain: list[str]
    ) -> web.Response | None:
        """The upstream's listing of ``path``, as this node's; None where the catalog answers instead."""
        if config.offline:
            return None
        query = request.query_string
        key = (config.key, path, query)
        kept = self._kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < config.retrieval_cache_secs:
            return _json(kept[1])
        try:
            async with self._upstream.storage(config, path, query, chain) as resp:
                raw = await _whole_body(resp, MAX_LISTING_BYTES)
        except UpstreamMissing:
            if config.sync.origin_absence_detection:
                await self._drop_absent(config, path, None, deep=True)
            self._kept.pop(key, None)
            raise NotFound() from None
        except (UpstreamFailed, UpstreamTimeout):
            return None  # the upstream is down: the cache's own view
        if raw is None:
            return None
        try:
            listing = json.loads(raw)
        except ValueError:
            return None
        body = _as_ours(raw, config, base_url(request))
        self._kept[key] = (time.monotonic(), body)
        if config.sync.origin_absence_detection and isinstance(listing, dict):
            await self._notice_absent(config, path, listing, "deep" in request.query)
        return _json(body)

    async def _notice_absent(self, config: RemoteConfig, path: str, listing: dict[str, Any], deep: bool) -> None:
        if "children" in listing and isinstance(listing["children"], list):
            names = {c.get("uri", "").lstrip("/") for c in listing["children"] if isinstance(c, dict)}
            await self._drop_absent(config, path, names, deep=False)
        elif "files" in listing and isinstance(listing["files"], list):
            names = {f.get("uri", "").lstrip("/") for f in listing["files"] if isinstance(f, dict)}
            await self._drop_absent(config, path, names, deep=deep)

    async def _drop_absent(self, config: RemoteConfig, path: str, listed: set[str] | None, *, deep: bool) -> None:
        """Drop cached files under ``path`` the upstream's listing lacks (all of them when ``listed`` is None)."""
        prefix = f"{path}/" if path else ""
        gone = []
        for f in await self._store.files_under(config.key, path):
            if not f.path.startswith(prefix):
                continue
            if not deep and parent_of(f.path) != path:
                continue
            if listed is None or f.path[len(prefix) :] not in listed:
                gone.append((f.repo, f.path))
        if gone:
            await self._drop(gone)


async def _whole_body(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None past ``limit`` bytes.

    A listing arrives in as many pieces as the upstream wrote it (a deep listing is streamed
    file by file), and one ``read(n)`` returns only what has arrived so far: the rest would
    be lost and the listing taken for unreadable.
    """
    body = bytearray()
    async for piece in resp.content.iter_any():
        body += piece
        if len(body) > limit:
            return None
    return bytes(body)


def _as_ours(raw: bytes, config: RemoteConfig, ours: str) -> bytes:
    """The upstream's listing with its URLs and repo key turned into this node's."""
    text = raw.decode("utf-8", "replace")
    theirs, repo = config.base_url, config.upstream_repo
    text = text.replace(f"{theirs}/api/storage/{repo}", f"{ours}/api/storage/{config.key}")
    text = text.replace(f"{theirs}/{repo}/", f"{ours}/{config.key}/")
    listing = json.loads(text)
    if isinstance(listing, dict) and listing.get("repo") == repo:
        listing["repo"] = config.key
    return json.dumps(listing).encode()


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")
