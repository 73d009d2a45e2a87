"""Console pages of release bundles: the list with search, a bundle's page, create (with a dry-run
preview), sign and delete, each through ``BundleService`` as the REST handlers call it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from distribution.api import READERS, _name_version
from distribution.bundle_store import PAGE_SIZE, BundleArtifact
from distribution.bundles import BundleService, parse_bundle_request
from distribution.keys import bundles_key, runner_key, signer_key
from distribution.progress import human_bytes
from repository.console.auth import posted, see_other, signed_in
from repository.console.pages import console_page, render
from repository.errors import BadRequest
from repository.http.auth import reader, require_role
from repository.tokens import Role
from wire.errors import WireError

# a bundle's page lists this many files at most (the API and CLI give all of them)
MAX_LISTED_FILES = 1000


def bundle_url(name: str, version: str) -> str:
    return f"/ui/bundles/{quote(name, safe='')}/{quote(version, safe='')}"


def _service(request: web.Request) -> BundleService:
    return request.app[bundles_key]


async def _first(pages: AsyncIterator[list[BundleArtifact]], limit: int) -> list[BundleArtifact]:
    """The first ``limit`` artifacts; the pages' reader is closed at once, not left to the collector."""
    listed: list[BundleArtifact] = []
    async with aclosing(pages):  # type: ignore[type-var]
        async for page in pages:
            listed.extend(page[: limit - len(listed)])
            if len(listed) >= limit:
                break
    return listed


@console_page
async def bundle_list(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, *READERS)
    search = request.query.get("q", "")[:256]
    raw = request.query.get("start", "0")
    start = int(raw) if raw.isdigit() and len(raw) < 10 else 0
    bundles, total = await _service(request).store.page(None, start, search)
    context = {"bundles": bundles, "total": total, "start": start, "page_size": PAGE_SIZE, "q": search}
    return render(request, "bundles.html", context | {"url_of": bundle_url, "human_bytes": human_bytes})


@console_page
async def bundle_page(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, *READERS)
    name, version = _name_version(request)
    service = _service(request)
    bundle = await service.get(name, version)
    files = await _first(service.store.artifact_pages(name, version), MAX_LISTED_FILES)
    keys = {k.fingerprint: k.alias for k in await asyncio.to_thread(request.app[signer_key].keys)}
    history = await request.app[runner_key].jobs.history(name, version)
    context = {
        "bundle": bundle,
        "files": files,
        "more_files": bundle.artifacts_count - len(files),
        "signed_alias": keys.get(bundle.signed_by or ""),
        "aliases": sorted(keys.values()),
        "history": history,
        "sbom": await service.store.sbom(name, version),
        "url": bundle_url(name, version),
        "api_url": f"/distribution/api/v1/release_bundle/{quote(name, safe='')}/{quote(version, safe='')}",
        "human_bytes": human_bytes,
    }
    return render(request, "bundle.html", context)


def _request_body(form: MultiDictProxy[str], dry_run: bool) -> dict[str, Any]:
    """The form as the API's create body, so the API's own parser validates it."""
    kind, text = form.get("kind", "pattern"), form.get("query", "").strip()
    if kind not in ("pattern", "aql"):
        raise BadRequest("The query is a 'pattern' or an 'aql' query")
    query: dict[str, str] = {kind: text}
    if props := form.get("props", "").strip():  # the file spec's "props", checked by the spec's parser
        query["props"] = props
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "version": form.get("version", "").strip(),
        "description": form.get("description", ""),
        "spec": {"queries": [query]},
        "dry_run": dry_run,
        "sign_immediately": not dry_run and form.get("sign") == "on",
    }
    return body


@console_page
async def new_bundle(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    require_role(request, Role.admin)
    return render(request, "bundle_new.html", {"form": {}, "preview": None})


@console_page
async def create_bundle(request: web.Request) -> web.StreamResponse:
    """``action=preview`` is the API's dry run (nothing stored); ``action=create`` stores it."""
    form = await posted(request)
    user = require_role(request, Role.admin).subject
    dry_run = form.get("action") == "preview"
    service = _service(request)
    try:
        bundle_request = parse_bundle_request(_request_body(form, dry_run))
        answer = await service.create(bundle_request, user, reader(request))
    except WireError as exc:  # a bad spec or a conflict: the form again, with what is wrong
        context: dict[str, Any] = {"form": form, "preview": None, "error": exc.message}
        return render(request, "bundle_new.html", context, status=exc.status)
    try:
        if dry_run:
            pages = service.store.staged_pages(answer.staged) if answer.staged else None
            files = await _first(pages, MAX_LISTED_FILES) if pages else []
            context = {"form": form, "preview": answer.bundle, "files": files, "human_bytes": human_bytes}
            return render(request, "bundle_new.html", context)
        if bundle_request.sign_immediately:
            await service.sign(bundle_request.name, bundle_request.version, None)
    finally:
        await service.discard(answer)
    return see_other(bundle_url(bundle_request.name, bundle_request.version))


@console_page
async def sign_bundle(request: web.Request) -> web.StreamResponse:
    form = await posted(request)
    require_role(request, Role.admin)
    name, version = _name_version(request)
    await _service(request).sign(name, version, form.get("alias") or None)
    return see_other(bundle_url(name, version))


@console_page
async def delete_bundle(request: web.Request) -> web.StreamResponse:
    await posted(request)
    require_role(request, Role.admin)
    await _service(request).delete(*_name_version(request))
    return see_other("/ui/bundles")
