"""A bundle's SBOM in the console: its components as a page, and the document itself as a download,
both for a console session with the reader role (the REST path wants a token, which a browser
holding only a session does not have). The bytes are the ones ``GET .../sbom`` answers, found
through the same ``BundleSboms``; the page shows the sha256 the signed manifest names."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from distribution.api import _service
from distribution.progress import human_bytes
from distribution.sbom_api import requested_sbom
from repository.console.auth import signed_in
from repository.console.pages import console_page, render
from repository.http.responses import blob_response
from wire.protocol import SBOM_MEDIA_TYPE

from .bundle_views import MAX_LISTED_FILES, bundle_url


@dataclass(frozen=True)
class SbomComponent:
    name: str
    version: str
    purl: str
    sha256: str
    depth: int  # 0 for a bundle's file, 1 and more for what an embedded SBOM says the file holds


def components_of(document: dict[str, Any], limit: int) -> tuple[list[SbomComponent], int]:
    """The first ``limit`` components, each followed by those nested in it, and how many there are."""
    listed: list[SbomComponent] = []
    total = 0
    stack = [(c, 0) for c in reversed(document.get("components") or [])]
    while stack:
        component, depth = stack.pop()
        total += 1
        if len(listed) < limit:
            hashes = {h.get("alg"): h.get("content", "") for h in component.get("hashes") or []}
            listed.append(
                SbomComponent(
                    str(component.get("name", "")),
                    str(component.get("version", "")),
                    str(component.get("purl", "")),
                    str(hashes.get("SHA-256", "")),
                    depth,
                )
            )
        stack.extend((c, depth + 1) for c in reversed(component.get("components") or []))
    return listed, total


async def _document(request: web.Request, sha256: str, size: int) -> dict[str, Any]:
    """The stored SBOM, parsed off the loop (it is at most ``sbom_max_bytes``)."""
    sboms = _service(request).sboms
    async with aclosing(await sboms.storage.read(sha256, 0, size)) as chunks:
        data = b"".join([chunk async for chunk in chunks])
    document: dict[str, Any] = await asyncio.to_thread(json.loads, data)
    return document


@console_page
async def sbom_page(request: web.Request) -> web.StreamResponse:
    await signed_in(request)
    name, version, sbom = await requested_sbom(request)
    document = await _document(request, sbom.sha256, sbom.size)
    components, total = components_of(document, MAX_LISTED_FILES)
    context = {
        "spec_version": document.get("specVersion", ""),
        "name": name,
        "version": version,
        "sbom": sbom,
        "components": components,
        "more": total - len(components),
        "url": bundle_url(name, version),
        "human_bytes": human_bytes,
    }
    return render(request, "sbom.html", context)


@console_page
async def sbom_download(request: web.Request) -> web.StreamResponse:
    """The SBOM as a file to save, named for its bundle, with the API's content type."""
    await signed_in(request)
    name, version, sbom = await requested_sbom(request)
    filename = f"{name}-{version}.cdx.json"
    storage = _service(request).sboms.storage
    return await blob_response(request, storage, sbom.sha256, sbom.size, SBOM_MEDIA_TYPE, attachment=filename)
