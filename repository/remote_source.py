"""What the artifact API asks of a node's remote repos (an edge's, ``edge/remote/``).

A remote repo is a catalog repo of type ``REMOTE`` whose files are fetched from an
upstream on demand; the artifact API hands its downloads, listings and configuration to
the node's ``RemoteRepoSource`` (app key ``keys.remote_repos``) and serves everything
else (the cached files themselves) as for any repo.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from .entries import Repo

REMOTE = "REMOTE"  # the type of a repo that fetches what it lacks from an upstream


class RemoteRepoSource(Protocol):
    async def serve(self, request: web.Request, repo: Repo, path: str) -> web.StreamResponse:
        """GET/HEAD of ``path`` in the remote repo ``repo``, read permission already checked:
        the cached file, or the file fetched from the upstream on a miss."""

    async def listing(self, request: web.Request, repo: Repo, path: str) -> web.StreamResponse | None:
        """The storage API's answer for ``path`` from the upstream; None where the catalog answers."""

    def configuration(self, key: str) -> dict[str, Any] | None:
        """The configuration GET answers for a remote repo (credentials masked); None if unknown."""
