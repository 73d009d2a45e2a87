"""The artifact API's routes, added to each service's own route table.

Order matters: the fixed ``api/`` routes come before the catch-all item routes,
and an unknown ``api/`` call is a 404, never mistaken for a repo named "api".
"""

from __future__ import annotations

from aiohttp import web

from repository.errors import MethodNotAllowed, NotFound

from . import access_api, deploy, download, keys, metrics, properties_api, scrub_api, storage_api, system
from .download import artifact_location


async def api_not_found(request: web.Request) -> web.Response:
    """An unknown ``api/`` call is a 404; a known one with a method it does not have, a 405."""
    allowed = await _allowed_before(request)
    if allowed:
        raise _method_not_allowed(request, allowed)
    raise NotFound("Unknown API call")


async def other_method(request: web.Request) -> web.Response:
    """MOVE, POST, PATCH... on an item: read-only repos refuse with 403, others with 405."""
    repo, _ = artifact_location(request)
    request.app[keys.policy].check_writable(repo)
    raise _method_not_allowed(request, await _allowed_before(request))


async def _allowed_before(request: web.Request) -> set[str]:
    """The methods the routes before this fallback's have for the request's path (its ``Allow``)."""
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is own:
            break
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return allowed


def _method_not_allowed(request: web.Request, allowed: set[str]) -> MethodNotAllowed:
    methods = ", ".join(sorted(allowed))
    return MethodNotAllowed(
        f"Method {request.method} is not allowed here; allowed: {methods}", headers={"Allow": methods}
    )


def artifact_routes() -> list[web.AbstractRouteDef]:
    return [
        web.get("/artifactory/api/system/ping", system.ping, name="ping"),
        web.get("/artifactory/api/system/readiness", system.readiness, name="readiness"),
        web.get("/metrics", metrics.scrape, name="metrics"),
        web.get("/artifactory/api/system/version", system.version, name="version"),
        web.get("/artifactory/api/repositories", system.repositories, name="repositories"),
        web.get("/artifactory/api/repositories/{key}", system.repository, name="repository"),
        web.get("/artifactory/api/storage/{tail:[\\s\\S]+}", storage_api.storage_info, name="storage_info"),
        web.put("/artifactory/api/storage/{tail:[\\s\\S]+}", properties_api.set_properties, name="properties_set"),
        web.delete(
            "/artifactory/api/storage/{tail:[\\s\\S]+}", properties_api.delete_properties, name="properties_delete"
        ),
        web.patch("/artifactory/api/metadata/{tail:[\\s\\S]+}", properties_api.update_metadata, name="metadata_update"),
        web.get("/artifactory/api/search/prop", properties_api.search_by_property, name="property_search"),
        web.get("/artifactory/api/scrub", scrub_api.scrub_status, name="scrub_status"),
        web.post("/artifactory/api/scrub", scrub_api.scrub_start, name="scrub_start"),
        web.route("*", "/artifactory/api/{tail:[\\s\\S]*}", api_not_found, name="api_not_found"),
        web.post("/access/api/v1/tokens", access_api.create_token, name="token_create"),
        web.get("/access/api/v1/tokens", access_api.list_tokens, name="token_list"),
        web.delete("/access/api/v1/tokens/{token_id}", access_api.revoke_token, name="token_revoke"),
        web.get("/artifactory/{tail:[\\s\\S]+}", download.download, name="download"),
        web.put("/artifactory/{tail:[\\s\\S]+}", deploy.deploy, name="deploy"),
        web.delete("/artifactory/{tail:[\\s\\S]+}", deploy.delete, name="delete"),
        web.route("*", "/artifactory/{tail:[\\s\\S]+}", other_method, name="other_method"),
    ]
