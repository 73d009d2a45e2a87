"""Ping, version and the repositories list: what clients call to discover a node."""

from __future__ import annotations

from aiohttp import web

from repository.catalog import Repo
from repository.errors import NotFound

from . import keys
from .responses import json_response
from .storage_api import base_url


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", content_type="text/plain")


async def version(request: web.Request) -> web.Response:
    policy = request.app[keys.policy]
    return json_response({"version": policy.version, "revision": policy.version, "addons": []})


def _summary(request: web.Request, repo: Repo) -> dict[str, str]:
    return {
        "key": repo.key,
        "type": repo.type,
        "description": repo.description,
        "url": f"{base_url(request)}/{repo.key}",
        "packageType": repo.package_type,
    }


async def repositories(request: web.Request) -> web.Response:
    repos = await request.app[keys.catalog].list_repos()
    return json_response([_summary(request, r) for r in repos])


async def repository(request: web.Request) -> web.Response:
    repo = await request.app[keys.catalog].get_repo(request.match_info["key"])
    if repo is None:
        raise NotFound(f"Repository '{request.match_info['key']}' not found")
    return json_response(
        {
            "key": repo.key,
            "rclass": repo.type.lower(),
            "packageType": repo.package_type,
            "description": repo.description,
            "repoLayoutRef": "simple-default",
        }
    )
