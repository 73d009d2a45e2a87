"""The remote repos' typed app key."""

from __future__ import annotations

from aiohttp import web

from .service import RemoteRepos

remote_repos_key = web.AppKey("remote_repos", RemoteRepos)
