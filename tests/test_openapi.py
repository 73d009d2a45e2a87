"""The OpenAPI documents against the real routers: every route is documented, every documented
operation reaches the handler it names, both documents are valid OpenAPI, and each service
serves its own document.

A documented operation names its route by ``x-route`` (or, when they are the same, its
``operationId``); it is resolved by the app's own router from a concrete URL, so a path the
router would send elsewhere (a catch-all, another route) is caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from openapi_spec_validator import validate

from distribution.app import create_app as create_distribution_app
from distribution.settings import DistributionSettings
from edge.app import create_app as create_edge_app
from repository.http.openapi import document_path, load_document
from tests.conftest import ADMIN_TOKEN, make_settings

METHODS = ("get", "head", "put", "post", "delete", "patch", "options")
# A concrete value for each path parameter, valid for its route's pattern.
SAMPLES = {
    "repo": "releases-local",
    "key": "releases-local",
    "path": "app/1.4.0/app-1.4.0.tar.gz",
    "tx_id": "a" * 64,
    "sha256": "b" * 64,
    "child": "leaf-1",
    "name": "app",
    "version": "1.4.0",
    "id": "7",
    "token_id": "tok1",
    "kid": "kid1",
    "alias": "alias1",
    "edge": "us-east-1",
    "action_id": "d7.s1",
    "group": "pos-emea",
}
# Fallbacks, not operations: any method on an unknown /artifactory/api/ call is a 404, and a
# method an item does not support (POST, MOVE, PATCH...) is a 403 on read-only repos, else 405.
FALLBACKS = frozenset({"api_not_found", "other_method"})
# Where the artifact API lives: what the Distribution service serves there, an edge serves alike.
SHARED_PREFIXES = ("/artifactory/", "/access/", "/metrics")


def edge_app(tmp_path: Path) -> web.Application:
    return create_edge_app(make_settings(tmp_path))


def distribution_app(tmp_path: Path) -> web.Application:
    return create_distribution_app(
        DistributionSettings(data_dir=tmp_path / "distribution", port=0, admin_token=ADMIN_TOKEN)
    )


APPS = {"edge": edge_app, "distribution": distribution_app}
CONSOLE = "console_"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, route name) of every operation the router has, without fallbacks and the HEAD
    that aiohttp adds beside each GET."""
    routes = set()
    for route in app.router.routes():
        name = route.resource.name if route.resource is not None else None
        assert name, f"route {route.method} {route.resource} has no name"
        if route.method == "*" and name in FALLBACKS:
            continue
        if name.startswith(CONSOLE):  # the web console's HTML pages are not API operations
            continue
        if route.method == "HEAD" and any(r.method == "GET" for r in route.resource):  # type: ignore[union-attr]
            continue
        routes.add((route.method, name))
    return routes


async def resolved(app: web.Application, method: str, path: str) -> tuple[str, str]:
    match = await app.router.resolve(make_mocked_request(method, concrete(path), app=app))
    assert not isinstance(match.http_exception, web.HTTPException), f"{method} {path}: {match.http_exception}"
    return match.route.method, match.route.resource.name  # type: ignore[union-attr]


@pytest.mark.parametrize("service", APPS)
def test_document_is_valid_openapi_with_unique_operation_ids(service: str) -> None:
    document = load_document(service)
    validate(document)
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("service", APPS)
async def test_every_documented_operation_reaches_the_route_it_names(service: str, tmp_path: Path) -> None:
    app = APPS[service](tmp_path)
    for method, path, operation in operations(load_document(service)):
        route_method, name = await resolved(app, method, path)
        assert name == operation.get("x-route", operation["operationId"]), f"{method} {path} reaches {name}"
        assert route_method in (method, "*") and name not in FALLBACKS, f"{method} {path} reaches {name}"


@pytest.mark.parametrize("service", APPS)
async def test_every_route_of_the_router_is_documented(service: str, tmp_path: Path) -> None:
    app = APPS[service](tmp_path)
    documented = set()
    for method, path, _ in operations(load_document(service)):
        documented.add(await resolved(app, method, path))
    undocumented = router_routes(app) - documented
    assert not undocumented, f"routes missing from {document_path(service).name}: {sorted(undocumented)}"


def test_the_artifact_api_is_described_alike_in_both_documents() -> None:
    edge, distribution = load_document("edge"), load_document("distribution")

    def shared(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(m, p): op for m, p, op in operations(document) if p.startswith(SHARED_PREFIXES)}

    on_edge, on_distribution = shared(edge), shared(distribution)
    assert set(on_distribution) <= set(on_edge)
    assert ("GET", "/artifactory/{repo}/{path}") in on_distribution
    for key, operation in on_distribution.items():
        assert operation == on_edge[key], f"{key} differs between the documents"
        for section, name in sorted(references(operation, edge)):
            assert distribution["components"][section][name] == edge["components"][section][name], name


def references(node: Any, document: dict[str, Any], seen: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    """Every component ``node`` refers to, directly or through other components."""
    seen = set() if seen is None else seen
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            _, _, section, name = ref.split("/")
            if (section, name) not in seen:
                seen.add((section, name))
                references(document["components"][section][name], document, seen)
        for value in node.values():
            references(value, document, seen)
    elif isinstance(node, list):
        for value in node:
            references(value, document, seen)
    return seen


async def test_an_edge_serves_its_document_as_json_without_a_token(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(edge_app(tmp_path))
    resp = await client.get("/artifactory/api/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == load_document("edge")


async def test_the_distribution_service_serves_its_document_as_json_without_a_token(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(distribution_app(tmp_path))
    resp = await client.get("/distribution/api/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == load_document("distribution")


# Bodies a JSON endpoint must refuse with a 4xx, never a 5xx: nesting deeper than Python's
# parser goes, and a charset Python does not know.
HOSTILE_BODIES = {
    "nested too deeply": (b"[" * 100_000, "application/json"),
    "an unknown charset": (b'{"name": "x"}', "application/json; charset=no-such-charset"),
}


@pytest.mark.parametrize("body", HOSTILE_BODIES)
@pytest.mark.parametrize("service", APPS)
async def test_every_json_endpoint_refuses_a_hostile_body_with_a_4xx(
    service: str, body: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await aiohttp_client(APPS[service](tmp_path))
    data, content_type = HOSTILE_BODIES[body]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": content_type}
    tried = 0
    for method, path, operation in operations(load_document(service)):
        if "application/json" not in operation.get("requestBody", {}).get("content", {}):
            continue
        tried += 1
        resp = await client.request(method, concrete(path), data=data, headers=headers)
        assert 400 <= resp.status < 500, f"{method} {path}: {resp.status} {await resp.text()}"
        error = await resp.json()
        assert ("status_code" in error) if path.startswith("/distribution/") else ("errors" in error), error
    assert tried > 5


def test_the_documents_ship_inside_the_package() -> None:
    """setup.cfg lists them as package data, so an installed service (the Docker image) serves them too."""
    import configparser

    config = configparser.ConfigParser()
    config.read(Path(__file__).parent.parent / "setup.cfg")
    patterns = config["options.package_data"]["repository"].split()
    for service in APPS:
        relative = document_path(service).relative_to(Path(__file__).parent.parent / "repository")
        assert any(relative.match(p) for p in patterns), f"{relative} is not package data"


@pytest.mark.parametrize("service", APPS)
async def test_every_documented_path_answers_a_method_it_lacks_with_405_and_allow(
    service: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    """``Allow`` names at least what the document names for the path (a URL such as
    ``signed/keys/rotate`` also fits another route, ``signed/keys/{kid}``), on the edge's one
    writable repo for artifacts: the read-only ones answer every write 403 instead."""
    client = await aiohttp_client(APPS[service](tmp_path))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path, item in load_document(service)["paths"].items():
        documented = {m.upper() for m in METHODS if m in item}
        target = concrete(path).replace("/releases-local/", "/artifactory-edge-uploads/", 1)
        resp = await client.request("TRACE", target, headers=headers)
        assert resp.status == 405, f"TRACE {path}: {resp.status} {await resp.text()}"
        allowed = {m.strip() for m in resp.headers.get("Allow", "").split(",")}
        assert documented <= allowed and "TRACE" not in allowed, f"{path}: Allow {allowed}, documented {documented}"
        error = await resp.json()
        assert (error["status_code"] if path.startswith("/distribution/") else error["errors"][0]["status"]) == 405
