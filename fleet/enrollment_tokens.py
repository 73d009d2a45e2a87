"""Enrollment tokens: what an operator hands to devices so that each buys a credential of its own.

A token is scoped (the group and tags every device enrolled with it gets), expires, and can
be revoked; many devices may use it until then. Its secret is answered once, at creation,
and only its sha256 is kept, as with API tokens: 256 random bits need no slow hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from repository.db import Database
from repository.entries import now_ms
from repository.errors import BadRequest, NotFound
from wire.fleet import check_name, check_tags
from wire.timestamps import iso

TOKEN_PREFIX = "fet_"
MAX_EXPIRES_IN = 365 * 24 * 3600
DURATION_RE = re.compile(r"([1-9][0-9]{0,8})([smhd]?)")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
TOKEN_FIELDS = frozenset({"group", "tags", "expires_in"})
_COLUMNS = "id, grp, tags, expires, revoked, created, created_by, used"


def token_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_duration(value: object, where: str = "expires_in") -> int:
    """Seconds: a positive integer, or a string of one with a unit (``90s``, ``30m``, ``24h``,
    ``7d``), at most a year: a token lives as long as a batch of devices takes to install."""
    if type(value) is int:
        seconds = value
    elif isinstance(value, str) and (match := DURATION_RE.fullmatch(value)):
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    else:
        raise BadRequest(f"Invalid {where}: seconds as an integer, or a duration like 90s, 30m, 24h or 7d")
    if not 1 <= seconds <= MAX_EXPIRES_IN:
        raise BadRequest(f"Invalid {where}: must be 1 second to {MAX_EXPIRES_IN // 86400} days")
    return seconds


@dataclass(frozen=True)
class EnrollmentToken:
    id: str
    group: str
    tags: dict[str, str]
    expires: int
    revoked: int | None
    created: int
    created_by: str
    used: int = 0  # devices enrolled with it

    def state(self, now: int) -> str:
        if self.revoked is not None:
            return "revoked"
        return "expired" if self.expires <= now else "active"

    def to_json(self, now: int) -> dict[str, Any]:
        """Everything but the secret, which no listing ever shows."""
        return {
            "id": self.id,
            "group": self.group,
            "tags": self.tags,
            "expires": iso(self.expires),
            "state": self.state(now),
            "created": iso(self.created),
            "created_by": self.created_by,
            "revoked": None if self.revoked is None else iso(self.revoked),
            "devices_enrolled": self.used,
        }


def _token(row: Any) -> EnrollmentToken:
    id_, grp, tags, expires, revoked, created, created_by, used = row
    return EnrollmentToken(id_, grp, json.loads(tags), expires, revoked, created, created_by, used)


def parse_token_request(body: dict[str, Any]) -> tuple[str, dict[str, str], int]:
    """(group, tags, seconds to live) of ``POST enrollment-tokens``; every problem a 400 naming the field."""
    if unknown := sorted(set(body) - TOKEN_FIELDS):
        raise BadRequest(f"Unknown field {unknown[0]!r}; a token has {', '.join(sorted(TOKEN_FIELDS))}")
    if "group" not in body:
        raise BadRequest("Missing field 'group'")
    if "expires_in" not in body:
        raise BadRequest("Missing field 'expires_in': seconds, or a duration like 24h")
    # a bad name or tag is the wire contract's InvalidInput: a 400 too
    return check_name(body["group"], "group"), check_tags(body.get("tags", {})), parse_duration(body["expires_in"])


class EnrollmentTokenStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(
        self, group: str, tags: dict[str, str], expires_in: int, created_by: str
    ) -> tuple[EnrollmentToken, str]:
        """A new token and its secret, answered here and never again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = now_ms()
        token = EnrollmentToken(uuid.uuid4().hex, group, tags, now + expires_in * 1000, None, now, created_by)
        row = {
            "id": token.id,
            "sha": token_sha256(secret),
            "grp": group,
            "tags": json.dumps(tags, sort_keys=True),
            "expires": token.expires,
            "created": now,
            "created_by": created_by,
        }
        await self._database.run(
            self._database.db.execute,
            "INSERT INTO fleet_enrollment_tokens (id, token_sha256, grp, tags, expires, created, created_by)"
            " VALUES (:id, :sha, :grp, :tags, :expires, :created, :created_by)",
            row,
        )
        return token, secret

    async def list(self) -> list[EnrollmentToken]:
        rows = await self._database.read(
            lambda: self._database.db.execute(
                f"SELECT {_COLUMNS} FROM fleet_enrollment_tokens ORDER BY created, id"
            ).fetchall()
        )
        return [_token(r) for r in rows]

    async def revoke(self, token_id: str) -> None:
        """Revoke: no device enrolls with it from now on (those enrolled keep their credentials).
        Revoking again is a success; an unknown id a 404."""
        await self._database.run(self._revoke, token_id, now_ms())

    def _revoke(self, token_id: str, now: int) -> None:
        db = self._database.db
        with db.atomic():
            found = db.scalar("SELECT id FROM fleet_enrollment_tokens WHERE id = :id", {"id": token_id})
            if found is None:
                raise NotFound(f"No enrollment token {token_id!r}")
            db.execute(
                "UPDATE fleet_enrollment_tokens SET revoked = :now WHERE id = :id AND revoked IS NULL",
                {"id": token_id, "now": now},
            )

    def find(self, secret: str) -> EnrollmentToken | None:
        """The token ``secret`` stands for, whatever its state (on the writer thread, inside
        the enrollment's transaction)."""
        row = self._database.db.execute(
            f"SELECT {_COLUMNS} FROM fleet_enrollment_tokens WHERE token_sha256 = :sha",
            {"sha": token_sha256(secret)},
        ).fetchone()
        return None if row is None else _token(row)
