"""Ping, readiness, version and the repositories list: what clients and probes call to discover a node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from repository.catalog import Repo
from repository.errors import NotFound
from repository.remote_source import REMOTE

from . import keys
from .responses import json_response
from .setup import database
from .storage_api import base_url
from .virtual_resolve import virtual_repo

log = logging.getLogger(__name__)

# Seconds each readiness check may take; a probe's own time-out is usually a few seconds.
READINESS_TIMEOUT = 2.0


async def ping(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing else is asked."""
    return web.Response(text="OK", content_type="text/plain")


async def readiness(request: web.Request) -> web.Response:
    """Whether the node can serve: its database and its blob store both answer (and the checks
    the node adds pass), each within READINESS_TIMEOUT. 200 ``{"status":"READY"}`` or 503
    ``{"status":"NOT_READY"}``, with each check's result (``OK``, ``FAILED`` or ``TIMEOUT``);
    why a check failed goes to the log only."""
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "database": request.app[database].check,
        "storage": request.app[keys.storage].check,
    }
    if (more := request.app.get(keys.readiness_checks)) is not None:
        checks.update(more())
    results = await asyncio.gather(*(_check(name, check) for name, check in checks.items()))
    answers = dict(zip(checks, results, strict=True))
    ready = all(r == "OK" for r in results)
    return json_response({"status": "READY" if ready else "NOT_READY", "checks": answers}, status=200 if ready else 503)


async def _check(name: str, check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), READINESS_TIMEOUT)
    except TimeoutError:
        log.warning("readiness: %s gave no answer within %ss", name, READINESS_TIMEOUT)
        return "TIMEOUT"
    except Exception as exc:
        log.warning("readiness: %s failed: %s", name, exc or type(exc).__name__)
        return "FAILED"
    return "OK"


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
    if (virtual := request.app.get(keys.virtual_repos)) is not None:
        repos += [v.as_repo() for v in virtual.all()]
    return json_response([_summary(request, r) for r in repos])


async def repository(request: web.Request) -> web.Response:
    virtual = virtual_repo(request, request.match_info["key"])
    if virtual is not None:
        return json_response(virtual.json())
    repo = await request.app[keys.catalog].get_repo(request.match_info["key"])
    if repo is None:
        raise NotFound(f"Repository '{request.match_info['key']}' not found")
    remote = request.app.get(keys.remote_repos)
    if repo.type == REMOTE and remote is not None and (configuration := remote.configuration(repo.key)) is not None:
        return json_response(configuration)
    return json_response(
        {
            "key": repo.key,
            "rclass": repo.type.lower(),
            "packageType": repo.package_type,
            "description": repo.description,
            "repoLayoutRef": "simple-default",
        }
    )
