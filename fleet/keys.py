"""The fleet's app keys, and the contract between the device side and the rollout side."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from wire.fleet import Action, Heartbeat

from .devices import Device, DeviceLookup


class ActionSource(Protocol):
    """What a device should do now (``fleet/rollout_setup.py`` provides it): asked at every
    check-in, after the heartbeat is stored, so it sees what the device just reported."""

    async def actions_for(self, device: Device, heartbeat: Heartbeat) -> list[Action]: ...


device_lookup_key = web.AppKey("fleet_device_lookup", DeviceLookup)
action_source_key = web.AppKey("fleet_action_source", ActionSource)
