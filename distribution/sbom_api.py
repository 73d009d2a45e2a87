"""``GET /distribution/api/v1/release_bundle/{name}/{version}/sbom``: a bundle's CycloneDX SBOM,
the exact bytes whose sha256 and size its signed manifest names."""

from __future__ import annotations

from aiohttp import web

from repository.http.auth import require_role
from repository.http.responses import blob_response
from wire.manifest import ManifestSbom
from wire.protocol import SBOM_MEDIA_TYPE

from .api import READERS, _name_version, _service


async def requested_sbom(request: web.Request) -> tuple[str, str, ManifestSbom]:
    """The name, version and SBOM of the bundle the path names (the API's and the console's):
    any valid principal may read it, as the bundle; 404 for an unknown bundle or one made before
    SBOMs existed."""
    require_role(request, *READERS)
    service = _service(request)
    name, version = _name_version(request)
    await service.get(name, version)
    return name, version, await service.sboms.find(name, version)


async def bundle_sbom(request: web.Request) -> web.StreamResponse:
    _, _, sbom = await requested_sbom(request)
    storage = _service(request).sboms.storage
    return await blob_response(request, storage, sbom.sha256, sbom.size, SBOM_MEDIA_TYPE)
