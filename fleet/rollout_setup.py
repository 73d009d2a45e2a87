"""The rollout side of the fleet: deployments, feedback and download sources."""

from __future__ import annotations

from aiohttp import web


def setup_rollouts(app: web.Application) -> None:
    """Filled by the rollout engine."""
