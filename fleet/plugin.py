"""The fleet control plane as a plugin of the Distribution service (``distribution/plugins.py``)."""

from __future__ import annotations

from .app import setup_app
from .cli import fleet as cli
from .runtime_cli import runtime
from .schema import migrations

commands = (runtime,)

__all__ = ["cli", "commands", "migrations", "setup_app"]
