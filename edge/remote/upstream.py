"""Requests from a remote repo to its upstream: credentials, deadlines, the via header.

Every request names the nodes it passed through in ``X-Artifactory-Via`` (this node's
id added): a node that sees its own id coming in answers 508, so a chain of remotes
that comes back to itself ends at once instead of fetching forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from .config import RemoteConfig
from .errors import LoopDetected, UpstreamFailed, UpstreamMissing, UpstreamTimeout

VIA_HEADER = "X-Artifactory-Via"
MAX_VIA = 32  # nodes a request may pass through; a longer chain is a loop in all but name


def via_chain(headers: Mapping[str, str]) -> list[str]:
    return [n.strip() for n in headers.get(VIA_HEADER, "").split(",") if n.strip()]


def check_no_loop(headers: Mapping[str, str], node_id: str) -> list[str]:
    """The nodes a request passed through; LoopDetected when this node is one of them."""
    chain = via_chain(headers)
    if node_id in chain or len(chain) >= MAX_VIA:
        raise LoopDetected(f"Loop detected: the request already passed through node '{node_id}'")
    return chain


class Upstream:
    """One HTTP client session for every remote repo of the process."""

    def __init__(self, node_id: str, connect_timeout: float) -> None:
        self.node_id = node_id
        self._connect_timeout = connect_timeout
        self._session = aiohttp.ClientSession(auto_decompress=False, trust_env=False)

    async def close(self) -> None:
        await self._session.close()

    def _headers(self, config: RemoteConfig, chain: list[str]) -> dict[str, str]:
        headers = {VIA_HEADER: ", ".join([*chain, self.node_id]), "Accept-Encoding": "identity"}
        if config.access_token:
            headers["Authorization"] = f"Bearer {config.access_token}"
        elif config.username:
            headers["Authorization"] = aiohttp.BasicAuth(config.username, config.password).encode()
        return headers

    def _timeout(self, config: RemoteConfig) -> aiohttp.ClientTimeout:
        idle = config.socket_timeout_ms / 1000
        return aiohttp.ClientTimeout(total=None, sock_connect=min(self._connect_timeout, idle), sock_read=idle)

    def open(
        self, config: RemoteConfig, path: str, chain: list[str], method: str = "GET"
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """The upstream's 200 answer for ``path`` in its repo, its body still to read.

        404: UpstreamMissing; another status or no connection: UpstreamFailed; a deadline
        passed: UpstreamTimeout.
        """
        return self.open_url(config, f"{config.url}/{quote(path, safe='/')}", chain, method)

    def storage(
        self, config: RemoteConfig, path: str, query: str, chain: list[str]
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """The upstream's storage API answer (file or folder info, ``?list``) for ``path`` in its repo."""
        url = f"{config.base_url}/api/storage/{config.upstream_repo}/{quote(path, safe='/')}"
        return self.open_url(config, f"{url}?{query}" if query else url, chain)

    @asynccontextmanager
    async def open_url(
        self, config: RemoteConfig, url: str, chain: list[str], method: str = "GET"
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self._session.request(
                method,
                url,
                headers=self._headers(config, chain),
                timeout=self._timeout(config),
                allow_redirects=True,
            ) as resp:
                if resp.status == 404:
                    raise UpstreamMissing("Unable to find item")
                if resp.status == 508:
                    raise LoopDetected("Loop detected: the upstream chain leads back to a node it passed")
                if resp.status != 200:
                    raise UpstreamFailed(f"The upstream of remote repository '{config.key}' answered {resp.status}")
                yield resp
        except TimeoutError:
            raise UpstreamTimeout(f"The upstream of remote repository '{config.key}' did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(
                f"The upstream of remote repository '{config.key}' failed: {type(exc).__name__}"
            ) from None

    async def post_json(self, config: RemoteConfig, api_path: str, body: Any) -> None:
        """POST ``body`` to the upstream's ``{base}/api/...``: UpstreamMissing when it has no such
        endpoint, UpstreamFailed for any other answer but a 2xx."""
        try:
            async with self._session.post(
                f"{config.base_url}/{api_path}",
                json=body,
                headers=self._headers(config, []),
                timeout=self._timeout(config),
            ) as resp:
                if resp.status in (404, 405):
                    raise UpstreamMissing(f"The upstream has no {api_path} (it answered {resp.status})")
                if not 200 <= resp.status < 300:
                    raise UpstreamFailed(f"The upstream answered {resp.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamFailed(f"The upstream failed: {type(exc).__name__}") from None
