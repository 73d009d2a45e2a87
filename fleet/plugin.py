"""The fleet control plane as a plugin of the Distribution service (``distribution/plugins.py``)."""

from __future__ import annotations

from .app import setup_app
from .cli import fleet as cli
from .schema import migrations

__all__ = ["cli", "migrations", "setup_app"]
