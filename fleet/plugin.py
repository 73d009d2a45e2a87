"""The fleet control plane as a plugin of the Distribution service (``distribution/plugins.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cli import fleet as cli
from .runtime_cli import runtime

if TYPE_CHECKING:
    from aiohttp import web

commands = (runtime,)


def __getattr__(name: str) -> Any:
    """``migrations``, imported when the service asks for them: the tables behind them are
    declared with SQLAlchemy, which no CLI command needs."""
    if name == "migrations":
        from .schema import migrations

        return migrations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def setup_app(app: web.Application) -> None:
    """The fleet's routes and background work (``fleet/app.py``), imported only when the service
    sets itself up: the ``distribution`` CLI loads this plugin for its commands alone."""
    from .app import setup_app as setup

    setup(app)


__all__ = ["cli", "commands", "setup_app"]  # and ``migrations``, by ``__getattr__``
