"""Enrollment: an enrollment token buys a device its own credential.

The device's tags are its own ``--tag``s overlaid by the token's: the token is the
operator's scope, so a device cannot enroll itself into another site or country than the
token allows. A name is one device: enrolling a name that an active device holds is a 409
(the operator revokes the old device first, e.g. a replaced box); a revoked device's name
may be enrolled again, with any usable token, and the new device replaces it (a new id and
credential; the old one's tags, apps and heartbeats go).
"""

from __future__ import annotations

import secrets
import uuid

from repository.db import Database
from repository.entries import now_ms
from repository.errors import BadRequest, Conflict, Unauthorized
from wire.fleet import MAX_TAGS, EnrollRequest
from wire.timestamps import iso

from .devices import Device, DeviceLookup, credential_sha256
from .enrollment_tokens import EnrollmentTokenStore

CREDENTIAL_PREFIX = "fdc_"
DEVICE_ROWS = ("fleet_device_tags", "fleet_device_apps", "fleet_heartbeats")


class Enroller:
    def __init__(self, database: Database, tokens: EnrollmentTokenStore, lookup: DeviceLookup) -> None:
        self._database = database
        self._tokens = tokens
        self._lookup = lookup

    async def enroll(self, request: EnrollRequest, poll_interval: int) -> tuple[Device, str]:
        """The new device and its credential (256 random bits, only its sha256 kept), polling at
        its group's interval, else at ``poll_interval``. A token unknown, expired or revoked is a
        401 and nothing is stored."""
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        device, replaced = await self._database.run(self._enroll, request, credential, poll_interval, now_ms())
        if replaced:
            self._lookup.changed()
        return device, credential

    def _enroll(self, request: EnrollRequest, credential: str, poll_interval: int, now: int) -> tuple[Device, bool]:
        db = self._database.db
        with db.atomic():
            token = self._tokens.find(request.token)
            if token is None:
                raise Unauthorized("Unknown enrollment token")
            if token.revoked is not None:
                raise Unauthorized("The enrollment token was revoked: ask for a new one")
            if token.expires <= now:
                raise Unauthorized(f"The enrollment token expired at {iso(token.expires)}: ask for a new one")
            tags = {**request.tags, **token.tags}
            if len(tags) > MAX_TAGS:
                raise BadRequest(f"Invalid tags: at most {MAX_TAGS} with the token's")
            old = db.execute(
                "SELECT id, revoked FROM fleet_devices WHERE name = :name", {"name": request.name}
            ).fetchone()
            if old is not None and old[1] is None:
                raise Conflict(f"Device {request.name!r} is enrolled already; revoke it first to enroll it again")
            if old is not None:
                for table in DEVICE_ROWS:
                    db.execute(f"DELETE FROM {table} WHERE device_id = :id", {"id": old[0]})
                db.execute("DELETE FROM fleet_devices WHERE id = :id", {"id": old[0]})
            group_interval = db.scalar("SELECT poll_interval FROM fleet_groups WHERE grp = :grp", {"grp": token.group})
            poll_interval = poll_interval if group_interval is None else group_interval
            device = Device(uuid.uuid4().hex, request.name, token.group, tags, poll_interval, now)
            db.execute(
                "INSERT INTO fleet_devices (id, name, grp, credential_sha256, token_id, enrolled, poll_interval,"
                " agent_version) VALUES (:id, :name, :grp, :sha, :token, :now, :poll, :agent)",
                {
                    "id": device.id,
                    "name": device.name,
                    "grp": device.group,
                    "sha": credential_sha256(credential),
                    "token": token.id,
                    "now": now,
                    "poll": poll_interval,
                    "agent": request.agent_version,
                },
            )
            db.executemany(
                "INSERT INTO fleet_device_tags (device_id, key, value) VALUES (:id, :key, :value)",
                [{"id": device.id, "key": k, "value": v} for k, v in sorted(tags.items())],
            )
            db.execute("UPDATE fleet_enrollment_tokens SET used = used + 1 WHERE id = :id", {"id": token.id})
        return device, old is not None
