"""An enrolled device as the control plane knows it, and how its calls are identified.

A device sends its credential in ``wire.fleet.DEVICE_TOKEN_HEADER``; only the sha256 of a
credential is stored. A missing, unknown or revoked credential is a 401 whose message
the agent logs before it stops (a revoked device must not keep calling).

Every check-in starts here, so the answer for a known credential comes from memory: tens
of thousands of devices calling every 30 s must not cost a database round trip each just
to say who they are. The copy is bounded (``CACHE_ENTRIES``) and dropped whenever a device
changes, in this process at once and in the others serving the same database through its
change counter (``repository/generation.py``), so a revocation is refused at the next call
everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cachetools import LRUCache

from repository.db import Database
from repository.errors import Unauthorized
from wire.fleet import DEVICE_TOKEN_HEADER

# Devices whose identity is kept in memory: a fleet of this size checks in without a read each.
CACHE_ENTRIES = 65_536


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
    """Devices by credential (kept in memory) and by id (the queries every device call and
    rollout starts from). ``last_seen`` of a device from memory is the one it had when it
    was read: the fleet list reads the table."""

    COLUMNS = "id, name, grp, poll_interval, enrolled, last_seen, revoked"

    def __init__(self, database: Database) -> None:
        self._database = database
        self._by_credential: LRUCache[str, Device] = LRUCache(CACHE_ENTRIES)
        self._changes = 0
        database.copies.register(self.forget)  # another process revoked or changed a device

    def forget(self) -> None:
        """Drop every copy: after a change of any device here, or elsewhere."""
        self._changes += 1
        self._by_credential.clear()

    def changed(self) -> None:
        """After a commit that changed a device (revoked, re-enrolled, its interval): this
        process forgets at once, the others before their next request."""
        self.forget()
        self._database.changed()

    async def by_credential(self, credential: str) -> Device | None:
        copies = self._database.copies
        if copies.stale():
            await copies.wait()
        sha = credential_sha256(credential)
        found = self._by_credential.get(sha)
        if found is None:
            changes = self._changes
            found = await self._database.read(self._one, "credential_sha256 = :key", sha)
            if found is not None and changes == self._changes:  # no change raced the read
                self._by_credential[sha] = found
        return found

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
