"""The fleet's app keys, and the contract between the device side and the rollout side."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from wire.fleet import Action, Heartbeat

from .apps import AppStore
from .device_store import DeviceStore
from .devices import Device, DeviceLookup
from .enrollment import Enroller
from .enrollment_tokens import EnrollmentTokenStore
from .heartbeats import HeartbeatWriter
from .signing_keys import KeysDocument


class ActionSource(Protocol):
    """What a device should do now (``fleet/rollout_setup.py`` provides it): asked at every
    check-in, after the heartbeat is stored, so it sees what the device just reported."""

    async def actions_for(self, device: Device, heartbeat: Heartbeat) -> list[Action]: ...


device_lookup_key = web.AppKey("fleet_device_lookup", DeviceLookup)
action_source_key = web.AppKey("fleet_action_source", ActionSource)
# how apps install: ``await app[app_store_key].get_app(name)`` for the rollout side
app_store_key = web.AppKey("fleet_app_store", AppStore)
enrollment_tokens_key = web.AppKey("fleet_enrollment_tokens", EnrollmentTokenStore)
enroller_key = web.AppKey("fleet_enroller", Enroller)
device_store_key = web.AppKey("fleet_device_store", DeviceStore)
heartbeat_writer_key = web.AppKey("fleet_heartbeat_writer", HeartbeatWriter)
keys_document_key = web.AppKey("fleet_keys_document", KeysDocument)
