"""The fleet's part of the Distribution service's app: the device side (enrollment, check-in,
the fleet list, apps), the rollout side (deployments, feedback, download sources) and the
runtime inventory (what devices run, traced back to bundle versions)."""

from __future__ import annotations

from aiohttp import web

from .device_setup import setup_devices
from .rollout_setup import setup_rollouts
from .runtime_setup import setup_runtime


def setup_app(app: web.Application) -> None:
    setup_devices(app)
    setup_rollouts(app)
    setup_runtime(app)
