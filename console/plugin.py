"""The console as a plugin of the Distribution service (``distribution/plugins.py``): its table,
its templates and its routes, added to the service's app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web

from distribution.keys import settings_key
from repository.http.setup import database

from . import keys
from .routes import setup_console_routes
from .schema import console_migrations
from .sessions import SessionStore

migrations = (console_migrations,)


def setup_app(app: web.Application) -> None:
    # autoescape: every value a page shows (a bundle named <script>...) renders as text
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("console", "templates"), autoescape=True)
    settings = app[settings_key]
    app[keys.secure_cookies] = (settings.console_public_url or "").startswith("https://")
    app.cleanup_ctx.append(sessions_ctx)
    setup_console_routes(app)


async def sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    app[keys.sessions] = SessionStore(app[database], app[settings_key].console_session_hours * 3600 * 1000)
    yield


__all__ = ["migrations", "setup_app"]
