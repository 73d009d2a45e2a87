"""The console as a plugin of the Distribution service (``distribution/plugins.py``): its sessions'
table, its templates and its routes, added to the service's app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

SECTIONS = (
    ("Bundles", "/ui/bundles"),
    ("Edges", "/ui/edges"),
    ("Keys", "/ui/keys"),
    ("Webhooks", "/ui/webhooks"),
    ("Fleet", "/ui/fleet"),
)


def setup_app(app: web.Application) -> None:
    """Imports what it sets up only when called: the ``distribution`` CLI loads every plugin for
    its commands (this one has none), and importing the console would slow every command down."""
    from distribution.keys import settings_key
    from repository.console.setup import setup_console

    from .routes import setup_console_routes

    setup_console(app, app[settings_key], "Distribution", "console", SECTIONS)
    setup_console_routes(app)


def __getattr__(name: str) -> Any:
    """``migrations``, imported when the service asks for them: the console's tables are declared
    with SQLAlchemy, which no CLI command needs."""
    if name == "migrations":
        from repository.console.schema import console_migrations

        return (console_migrations,)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["setup_app"]  # and ``migrations``, by ``__getattr__``
