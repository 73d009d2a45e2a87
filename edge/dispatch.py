"""Downloads handed to the edge's pipeline without aiohttp's generic dispatch.

For every request aiohttp walks the router's index, then (``Application._handle``) looks up the
app's middleware chain in a cache keyed by the handler and the app stack, and runs it behind a
middleware of its own that records the current app. On a 4 KiB download that costs about a
tenth of the edge's work per request, for an answer known in advance: a GET or HEAD of
``/artifactory/<repo>/<path>`` whose repo segment is not ``api`` can only reach the download
route. So the edge's request handler (``dispatch``) asks that route's resource alone for the
match (the same match, with the same decoded values, the router would have made), gives the
request its match info as ``Application._handle`` does, and runs the app's middlewares around
the download handler. Every other request goes through ``Application._handle`` unchanged.

The match of a download depends on its method and raw target alone, and a frozen match info is
only read from then on (``Application._handle`` sets its current app only where sub-apps are
matched, which ``check_router`` rules out), so the match of each of the last ``MATCHES_REMEMBERED``
targets is kept and shared by the requests that name it again: the same files are asked for
over and over.

Whether the answer really is known in advance is checked when the app starts (``check_router``),
so a route added later under ``/artifactory/`` stops the edge from starting rather than being
shadowed: nothing but the ``/artifactory/api/...`` resources and the catch-all resources of
downloads, deploys and deletes lives there, the download's resource is the first of those, no
sub-app is matched by domain ahead of the index, and every middleware is a new-style one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute, DynamicResource, MatchedSubAppResource, UrlMappingMatchInfo

from repository.http.download import download

PREFIX = "/artifactory/"
API = "/artifactory/api"
CATCH_ALL = "/artifactory/{tail}"
METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})
MATCHES_REMEMBERED = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Downloads:
    app: web.Application
    resource: DynamicResource
    routes: Mapping[str, AbstractRoute]  # its GET and HEAD routes
    run: Handler  # the app's middlewares around the download handler
    # (method, raw target without a query) -> its frozen match
    matches: dict[tuple[str, str], UrlMappingMatchInfo] = field(default_factory=dict)

    def match(self, request: web.BaseRequest) -> UrlMappingMatchInfo | None:
        """The router's match for a download (None for any other request): the same route and
        values, found by the download resource's own pattern, and frozen with the app."""
        method = request.method
        if method not in METHODS or hdrs.EXPECT in request.headers:  # aiohttp answers an Expect first
            return None
        key = (method, request.raw_path)
        found = self.matches.get(key)
        if found is not None:
            return found
        path = request.rel_url.path_safe  # what the router matches
        if not path.startswith(PREFIX) or _api(path) or (matched := self.resource._match(path)) is None:
            return None
        found = UrlMappingMatchInfo(matched, self.routes[method])
        found.add_app(self.app)
        found.freeze()
        if "?" not in key[1]:  # a query (a signed URL's) is seldom asked twice
            if len(self.matches) >= MATCHES_REMEMBERED:
                self.matches.clear()
            self.matches[key] = found
        return found


class RouterChanged(RuntimeError):
    """A route was added where a download was known to be the only match."""


def setup_dispatch(app: web.Application) -> None:
    """Make ``dispatch`` the app's request handler under every server that runs the app (aiohttp's
    servers call ``app._handle``; set in the instance's dict, as ``edge.requests`` sets its
    request factory), once ``check_router`` has found the download route at start."""
    found: list[_Downloads] = []

    async def find(app: web.Application) -> None:
        found.append(check_router(app))

    async def dispatch(request: web.Request) -> web.StreamResponse:
        if found and (match_info := found[0].match(request)) is not None:
            request._match_info = match_info
            return await found[0].run(request)
        return await web.Application._handle(app, request)

    app.on_startup.append(find)
    vars(app)["_handle"] = dispatch


def _api(path: str) -> bool:
    return path.startswith(API) and (len(path) == len(API) or path[len(API)] == "/")


def check_router(app: web.Application) -> _Downloads:
    """The download route's resource and the app's middleware chain around its handler, once the
    router shows that every GET or HEAD under ``/artifactory/`` outside ``api`` reaches it."""
    catch_all: list[DynamicResource] = []
    for resource in app.router.resources():
        canonical = resource.canonical
        if isinstance(resource, MatchedSubAppResource):
            raise RouterChanged(f"a sub-app matched by domain is resolved before the index: {canonical}")
        if not canonical.startswith(PREFIX) or _api(canonical):
            continue
        if canonical != CATCH_ALL or not isinstance(resource, DynamicResource):
            raise RouterChanged(f"{canonical} is routed where downloads are dispatched without the router")
        catch_all.append(resource)
    if not catch_all or catch_all[0].name != "download":
        raise RouterChanged(f"the first resource at {CATCH_ALL} is not the download route")
    routes = {route.method: route for route in catch_all[0] if route.method in METHODS}
    if routes.keys() != METHODS:
        raise RouterChanged(f"the download route does not answer both {' and '.join(sorted(METHODS))}")
    run: Handler = download
    for middleware in reversed(app.middlewares):
        if getattr(middleware, "__middleware_version__", None) != 1:
            raise RouterChanged(f"{middleware!r} is an old-style middleware")
        run = functools.partial(middleware, handler=run)
    return _Downloads(app, catch_all[0], routes, run)
