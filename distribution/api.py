"""Handlers of ``/distribution/api/v1/``: release bundles and signing keys, JFrog Distribution's shapes.

Writes need an admin token; any valid token may read; the public key is public.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from repository.errors import BadRequest
from repository.http.auth import reader, require_role
from repository.http.json_body import read_json_object
from repository.http.responses import json_response
from repository.tokens import Role
from wire.timestamps import iso

from .bundle_store import PAGE_SIZE, Bundle, BundleArtifact
from .bundles import Answer, BundleService, check_name_version, parse_bundle_request
from .keys import bundles_key, runner_key, signer_key
from .orders import push_keys
from .signing import KeyInfo

READERS = (Role.reader, Role.deployer, Role.distributor, Role.admin)


def bundle_json(b: Bundle) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": b.name,
        "version": b.version,
        "state": b.state,
        "description": b.description,
        "release_notes": b.release_notes,
        "created": iso(b.created),
        "created_by": b.created_by,
        "artifacts_count": b.artifacts_count,
        "artifacts_size": b.artifacts_size,
    }
    if b.signed_by:
        body["signed_by"] = b.signed_by
        body["manifest_sha256"] = b.manifest_sha256
    return body


def artifact_json(a: BundleArtifact) -> dict[str, Any]:
    return {
        "checksum": a.sha256,
        "props": [{"key": k, "values": v} for k, v in sorted(a.properties.items())],
        "sourceRepoPath": a.source,
        "targetRepoPath": a.target,
        "size": a.size,
    }


async def bundle_response(
    request: web.Request,
    bundle: Bundle,
    pages: AsyncIterator[list[BundleArtifact]],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """``bundle_json`` with an ``artifacts`` list, written a page of artifacts at a time: a bundle
    of any size is answered without the whole list in memory."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type, response.charset = "application/json", "utf-8"  # as json_response answers
    await response.prepare(request)
    await response.write(json.dumps(bundle_json(bundle))[:-1].encode() + b', "artifacts": [')
    separator = ""
    async for page in pages:
        await response.write((separator + ", ".join(json.dumps(artifact_json(a)) for a in page)).encode())
        separator = ", "
    await response.write(b"]}\n")
    await response.write_eof()
    return response


def _artifact_pages(service: BundleService, answer: Answer) -> AsyncIterator[list[BundleArtifact]]:
    if answer.staged is not None:
        return service.store.staged_pages(answer.staged)
    return service.store.artifact_pages(answer.bundle.name, answer.bundle.version)


def _signed_headers(bundle: Bundle) -> dict[str, str]:
    return {"X-Checksum-Sha256": bundle.manifest_sha256} if bundle.manifest_sha256 else {}


def _service(request: web.Request) -> BundleService:
    return request.app[bundles_key]


def _name_version(request: web.Request) -> tuple[str, str]:
    name, version = request.match_info["name"], request.match_info["version"]
    check_name_version(name, version)
    return name, version


async def create_bundle(request: web.Request) -> web.StreamResponse:
    user = require_role(request, Role.admin).subject
    bundle_request = parse_bundle_request(await read_json_object(request))
    service = _service(request)
    answer = await service.create(bundle_request, user, reader(request))
    try:
        if bundle_request.dry_run:
            return await bundle_response(request, answer.bundle, _artifact_pages(service, answer))
        bundle = answer.bundle
        if bundle_request.sign_immediately:
            bundle = await service.sign(bundle.name, bundle.version, bundle_request.signing_key_alias)
        pages = _artifact_pages(service, answer)
        return await bundle_response(request, bundle, pages, status=201, headers=_signed_headers(bundle))
    finally:
        await service.discard(answer)


async def update_bundle(request: web.Request) -> web.StreamResponse:
    user = require_role(request, Role.admin).subject
    name, version = _name_version(request)
    bundle_request = parse_bundle_request(await read_json_object(request), name=name, version=version)
    service = _service(request)
    answer = await service.update(bundle_request, user, reader(request))
    try:
        bundle = answer.bundle
        if bundle_request.sign_immediately and not bundle_request.dry_run:
            bundle = await service.sign(name, version, bundle_request.signing_key_alias)
        pages = _artifact_pages(service, answer)
        return await bundle_response(request, bundle, pages, headers=_signed_headers(bundle))
    finally:
        await service.discard(answer)


async def sign_bundle(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    name, version = _name_version(request)
    body = await read_json_object(request) if request.can_read_body else {}
    alias = body.get("signing_key_alias")
    if set(body) - {"signing_key_alias", "storing_repository"} or not all(isinstance(v, str) for v in body.values()):
        raise BadRequest("The sign request takes only 'signing_key_alias' and 'storing_repository' (strings)")
    bundle = await _service(request).sign(name, version, alias)
    return json_response(bundle_json(bundle), headers=_signed_headers(bundle))


async def get_bundle(request: web.Request) -> web.StreamResponse:
    require_role(request, *READERS)
    name, version = _name_version(request)
    service = _service(request)
    bundle = await service.get(name, version)
    pages = service.store.artifact_pages(name, version)
    return await bundle_response(request, bundle, pages, headers=_signed_headers(bundle))


async def list_bundles(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    name = request.match_info.get("name")
    if name is not None:
        check_name_version(name, "0")
    raw = request.query.get("start_pos", "0")
    if not raw.isdigit() or len(raw) > 9:
        raise BadRequest("'start_pos' must be a non-negative integer")
    start = int(raw)
    bundles, total = await _service(request).store.page(name, start)
    headers = {
        "X-RangeLimit-StartPos": str(start),
        "X-RangeLimit-EndPos": str(start + len(bundles)),
        "X-RangeLimit-Total": str(total),
        "X-RangeLimit-PageSize": str(PAGE_SIZE),
    }
    return json_response([bundle_json(b) for b in bundles], headers=headers)


async def delete_bundle(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    await _service(request).delete(*_name_version(request))
    return web.Response(status=204)


async def bundle_manifest(request: web.Request) -> web.StreamResponse:
    """Exactly the signed canonical bytes, so anyone can ``gpg --verify`` them; streamed a chunk
    at a time from the database (a manifest of 100,000 files is tens of MB)."""
    require_role(request, *READERS)
    service = _service(request)
    name, version = _name_version(request)
    signed = await service.signed_manifest(name, version)
    bundle = await service.get(name, version)
    headers = {"Content-Type": "application/json", "X-Checksum-Sha256": bundle.manifest_sha256 or ""}
    response = web.StreamResponse(headers=headers)
    response.content_length = signed.size
    await response.prepare(request)
    async for chunk in service.store.manifest_chunks(signed):
        await response.write(chunk)
    await response.write_eof()
    return response


async def bundle_signature(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    signed = await _service(request).signed_manifest(*_name_version(request))
    return web.Response(text=signed.signature, content_type="application/pgp-signature")


def key_json(key: KeyInfo, public_key: str | None = None) -> dict[str, Any]:
    body = {
        "alias": key.alias,
        "fingerprint": key.fingerprint,
        "default": key.default,
        "created": key.created,
        "algorithm": key.algorithm,
    }
    return body | ({"public_key": public_key} if public_key is not None else {})


async def list_keys(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    signer = request.app[signer_key]
    keys = await asyncio.to_thread(signer.keys)
    exported = [await asyncio.to_thread(signer.export_public, k.alias) for k in keys]
    return json_response({"keys": [key_json(k, p) for k, p in zip(keys, exported, strict=True)]})


async def export_public_key(request: web.Request) -> web.Response:
    """The armored public key (default, or ``?alias=``): what edges import to trust this service.

    Public by nature, so no token is needed.
    """
    alias = request.query.get("alias")
    armored = await asyncio.to_thread(request.app[signer_key].export_public, alias)
    return web.Response(text=armored, content_type="application/pgp-keys")


KEY_UPLOAD_FIELDS = frozenset({"key", "alias", "key_alias", "passphrase", "default", "propagate_to_edge_nodes"})


async def upload_key(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    body = await read_json_object(request)
    unknown = sorted(set(body) - KEY_UPLOAD_FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field '{unknown[0]}'; expected some of {', '.join(sorted(KEY_UPLOAD_FIELDS))}")
    if "alias" in body and "key_alias" in body:
        raise BadRequest("Give 'alias' or its alias 'key_alias', not both")
    key, alias = body.get("key"), body.get("alias", body.get("key_alias"))
    passphrase, make_default = body.get("passphrase"), body.get("default", False)
    propagate = body.get("propagate_to_edge_nodes", False)
    if (
        not isinstance(key, dict)
        or not isinstance(key.get("private_key"), str)
        or set(key) - {"private_key", "public_key"}
        or not isinstance(key.get("public_key", ""), str)
    ):
        raise BadRequest("'key' must hold 'private_key' (an ASCII-armored private key) and at most 'public_key'")
    if not isinstance(alias, str) or not alias:
        raise BadRequest("'alias' (a name for the key) is required")
    if ("passphrase" in body and not isinstance(passphrase, str)) or not isinstance(make_default, bool):
        raise BadRequest("'passphrase' must be a string and 'default' true or false")
    if not isinstance(propagate, bool):
        raise BadRequest("'propagate_to_edge_nodes' must be true or false")
    signer = request.app[signer_key]
    info = await asyncio.to_thread(signer.import_key_pair, alias, key["private_key"], passphrase)
    if make_default:
        await asyncio.to_thread(signer.set_default, alias)
        info = next(k for k in await asyncio.to_thread(signer.keys) if k.alias == alias)
    answer: dict[str, Any] = {"status": "SUCCESS", "details": []}
    if propagate:  # the new public key to every registered edge, as keys/gpg/propagate does
        runner = request.app[runner_key]
        answer = await push_keys(runner, signer, await runner.edges.list(), alias)
    return json_response({"status": answer["status"], "key": key_json(info), "details": answer["details"]}, status=201)


async def set_default_key(request: web.Request) -> web.Response:
    require_role(request, Role.admin)
    signer = request.app[signer_key]
    await asyncio.to_thread(signer.set_default, request.match_info["alias"])
    keys = await asyncio.to_thread(signer.keys)
    return json_response({"keys": [key_json(k) for k in keys]})
