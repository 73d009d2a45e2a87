"""An enrolled device as the control plane knows it, and how its calls are identified.

A device sends its credential in ``wire.fleet.DEVICE_TOKEN_HEADER``; only the sha256 of a
credential is stored. A missing, unknown or revoked credential is a 401 whose message
the agent logs before it stops (a revoked device must not keep calling).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from repository.db import Database
from repository.errors import Unauthorized
from wire.fleet import DEVICE_TOKEN_HEADER


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    group: str
    tags: dict[str, str] = field(default_factory=dict)
    poll_interval: int = 30
    enrolled: int = 0
    last_seen: int | None = None
    revoked: int | None = None

    @property
    def place(self) -> tuple[str | None, str | None, str | None]:
        """(site, city, country) from its tags: where the nearest edge is looked for."""
        return self.tags.get("site"), self.tags.get("city"), self.tags.get("country")


def credential_sha256(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


class DeviceLookup:
    """Devices by credential and by id (the queries every device call and rollout starts from)."""

    COLUMNS = "id, name, grp, poll_interval, enrolled, last_seen, revoked"

    def __init__(self, database: Database) -> None:
        self._database = database

    async def by_credential(self, credential: str) -> Device | None:
        sha = credential_sha256(credential)
        return await self._database.read(self._one, "credential_sha256 = :key", sha)

    async def by_id(self, device_id: str) -> Device | None:
        return await self._database.read(self._one, "id = :key", device_id)

    def _one(self, where: str, key: str) -> Device | None:
        db = self._database.db
        row = db.execute(f"SELECT {self.COLUMNS} FROM fleet_devices WHERE {where}", {"key": key}).fetchone()
        if row is None:
            return None
        tags = db.execute("SELECT key, value FROM fleet_device_tags WHERE device_id = :id", {"id": row[0]}).fetchall()
        return device_from_row(row, dict(tags))


def device_from_row(row: Any, tags: dict[str, str]) -> Device:
    id_, name, grp, poll_interval, enrolled, last_seen, revoked = row
    return Device(id_, name, grp, tags, poll_interval, enrolled, last_seen, revoked)


async def require_device(request: web.Request, lookup: DeviceLookup) -> Device:
    """The device making this call, or a 401."""
    credential = request.headers.get(DEVICE_TOKEN_HEADER, "")
    if not credential:
        raise Unauthorized(f"A device call needs its credential in {DEVICE_TOKEN_HEADER}")
    device = await lookup.by_credential(credential)
    if device is None:
        raise Unauthorized("Unknown device credential: enroll the device again")
    if device.revoked is not None:
        raise Unauthorized(f"The credential of device {device.name!r} was revoked: enroll the device again")
    return device


def tags_json(tags: dict[str, str]) -> str:
    return json.dumps(tags, sort_keys=True, separators=(",", ":"))
