"""Handlers of pull mode: the calls a pull-mode edge makes (wire/pull.py), and its credential's rotation.

Every pull call names its edge and carries that edge's credential (``PullCredentials.check``);
nothing else is accepted on these paths, and the credential is accepted nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from repository.errors import NotFound
from repository.http.auth import require_role
from repository.http.json_body import read_json_object
from repository.http.ranges import parse_range
from repository.http.responses import json_response
from repository.http.setup import database
from repository.tokens import Role
from storage_backends import BlobNotFound
from wire import protocol, pull

from .api import _name_version
from .edges import Edge
from .keys import bundles_key, runner_key
from .pull_edges import PullCredentials
from .pull_work import PullWork

pull_work_key = web.AppKey("pull_work", PullWork)
pull_credentials_key = web.AppKey("pull_credentials", PullCredentials)


async def _caller(request: web.Request) -> Edge:
    edge = request.match_info["edge"]
    return await request.app[pull_credentials_key].check(edge, request.headers.get(pull.CREDENTIAL_HEADER))


def _distribution_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"No distribution {raw!r}")
    return int(raw)


async def work(request: web.Request) -> web.Response:
    edge = await _caller(request)
    return json_response(pull.work_body(await request.app[pull_work_key].work(edge)))


async def job_state(request: web.Request) -> web.Response:
    edge = await _caller(request)
    state = await request.app[pull_work_key].state(edge, _distribution_id(request))
    return json_response(pull.job_state_body(state))


async def report(request: web.Request) -> web.Response:
    edge = await _caller(request)
    dist_id = _distribution_id(request)
    parsed = pull.parse_report(await read_json_object(request))
    return json_response(pull.job_state_body(await request.app[pull_work_key].report(edge, dist_id, parsed)))


async def manifest(request: web.Request) -> web.StreamResponse:
    """The exact signed bytes, streamed a stored chunk at a time, the signature in a header."""
    edge = await _caller(request)
    signed = await request.app[pull_work_key].manifest(edge, *_name_version(request))
    headers = protocol.start_headers(signed.size, signed.signature)
    response = web.StreamResponse(headers=headers)
    response.content_length = signed.size
    await response.prepare(request)
    async for chunk in request.app[bundles_key].store.manifest_chunks(signed):
        await response.write(chunk)
    await response.write_eof()
    return response


async def blob(request: web.Request) -> web.StreamResponse:
    """A blob of a bundle distributed to the calling edge, whole or from a ``Range`` (a resume);
    any other blob is a 404, whether the service holds it or not."""
    edge = await _caller(request)
    sha256 = request.match_info["sha256"]
    storage = request.app[bundles_key].artifacts.storage
    if not protocol.SHA256_RE.fullmatch(sha256) or not await request.app[pull_work_key].holds_blob(edge, sha256):
        raise NotFound(f"No blob {sha256} in a release bundle distributed to edge {edge.name}")
    try:
        size = (await storage.stat(sha256)).size
    except BlobNotFound:
        raise NotFound(f"Blob {sha256} is missing from this service's storage") from None
    response = web.StreamResponse(headers={"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
    start, length = 0, size
    if "Range" in request.headers:
        window = parse_range(request.headers["Range"], size)
        start, length = window.start, window.length
        response.set_status(206)
        response.headers["Content-Range"] = window.content_range(size)
    response.content_length = length
    await response.prepare(request)
    async for chunk in await storage.read(sha256, start, length):
        await response.write(chunk)
    await response.write_eof()
    return response


async def rotate_credential(request: web.Request) -> web.Response:
    """A new credential for a pull-mode edge, answered this once; the old one stops working."""
    require_role(request, Role.admin)
    name = request.match_info["edge"]
    credential = await request.app[pull_credentials_key].mint(name)
    return json_response({"name": name, "credential": credential}, status=201)


async def revoke_credential(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await request.app[pull_credentials_key].revoke(request.match_info["edge"])
    return web.Response(status=204)


def setup_pull(app: web.Application, v1: str) -> None:
    """Pull mode's state (built once the runner is) and its routes, in one block."""

    async def pull_ctx(app: web.Application) -> AsyncIterator[None]:
        app[pull_work_key] = PullWork(app[runner_key], app[database])
        app[pull_credentials_key] = PullCredentials(app[database])
        yield

    app.cleanup_ctx.append(pull_ctx)
    edge = v1 + "/pull/{edge}"
    app.router.add_routes(
        [
            web.get(edge + "/work", work, name="pull_work"),
            web.get(edge + "/jobs/{id}", job_state, name="pull_job"),
            web.post(edge + "/jobs/{id}", report, name="pull_report"),
            web.get(edge + "/manifests/{name}/{version}", manifest, name="pull_manifest"),
            web.get(edge + "/blobs/{sha256}", blob, name="pull_blob"),
            web.post(v1 + "/edges/{edge}/credential", rotate_credential, name="edge_credential_rotate"),
            web.delete(v1 + "/edges/{edge}/credential", revoke_credential, name="edge_credential_revoke"),
        ]
    )
