"""The fleet's part of the Distribution service's app: the device side (enrollment, check-in,
the fleet list, apps) and the rollout side (deployments, feedback, download sources)."""

from __future__ import annotations

from aiohttp import web

from .device_setup import setup_devices
from .rollout_setup import setup_rollouts


def setup_app(app: web.Application) -> None:
    setup_devices(app)
    setup_rollouts(app)
