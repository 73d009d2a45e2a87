"""The console as a plugin of the Distribution service (``distribution/plugins.py``): its sessions'
table, its templates and its routes, added to the service's app."""

from __future__ import annotations

from aiohttp import web

from distribution.keys import settings_key
from repository.console.schema import console_migrations
from repository.console.setup import setup_console

from .routes import setup_console_routes

migrations = (console_migrations,)
SECTIONS = (
    ("Bundles", "/ui/bundles"),
    ("Edges", "/ui/edges"),
    ("Keys", "/ui/keys"),
    ("Webhooks", "/ui/webhooks"),
    ("Fleet", "/ui/fleet"),
)


def setup_app(app: web.Application) -> None:
    setup_console(app, app[settings_key], "Distribution", "console", SECTIONS)
    setup_console_routes(app)


__all__ = ["migrations", "setup_app"]
