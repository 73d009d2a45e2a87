"""Rendering a console page, and the one place a console failure becomes an HTML error page."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from repository.tokens import Role
from wire.errors import WireError

from . import keys

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITERS = (Role.admin,)  # as on the API: every change needs an admin


def render(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    """``template`` with what every page shows: who is signed in, whether they may change things,
    and the session's CSRF token for the forms."""
    session = request.get(keys.session)
    base = {
        "session": session,
        "user": session.principal if session else None,
        "may_change": bool(session and session.principal.role in WRITERS),
        "csrf": session.csrf if session else "",
        "sections": request.app[keys.sections],
        "service_name": request.app[keys.service_name],
    }
    return aiohttp_jinja2.render_template(template, request, base | context, status=status)


def console_page(handler: Handler) -> Handler:
    """The handler, with the service's typed errors shown as an HTML page with their status
    (the API answers the same errors as JSON: the same exceptions, mapped for a browser)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except WireError as exc:
            return render(request, "error.html", {"status": exc.status, "message": exc.message}, status=exc.status)

    return wrapped
