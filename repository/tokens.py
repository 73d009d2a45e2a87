"""API tokens: issued once in clear, stored only as a SHA-256 of the secret.

Secrets are 256 random bits, so a fast hash is enough to make a stolen database
useless for logging in; a slow password hash would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from .catalog import now_ms
from .db import Database

TOKEN_PREFIX = "edt_"


class Role(StrEnum):
    reader = "reader"
    deployer = "deployer"
    distributor = "distributor"
    admin = "admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role | None  # None: anonymous

    @property
    def authenticated(self) -> bool:
        return self.role is not None


ANONYMOUS = Principal("anonymous", None)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: Role
    subject: str
    description: str
    created: int
    expires: int | None
    revoked: int | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class TokenStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(
        self, role: Role, subject: str, description: str = "", expires_in: int | None = None
    ) -> tuple[TokenInfo, str]:
        """Issue a token; the secret is answered here and never again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = now_ms()
        info = TokenInfo(
            id=uuid.uuid4().hex,
            role=role,
            subject=subject,
            description=description,
            created=created,
            expires=created + expires_in * 1000 if expires_in else None,
            revoked=None,
        )
        await self._database.run(self._insert, info, _hash(secret))
        return info, secret

    def _insert(self, info: TokenInfo, token_hash: str) -> None:
        self._database.db.execute(
            "INSERT INTO tokens (id, token_hash, role, subject, description, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [info.id, token_hash, info.role.value, info.subject, info.description, info.created, info.expires],
        )

    async def resolve(self, secret: str) -> Principal | None:
        """The principal a presented secret stands for, or None if unknown, expired or revoked."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        row = await self._database.run(
            lambda: self._database.db.execute(
                "SELECT subject, role, expires, revoked FROM tokens WHERE token_hash = ?", [_hash(secret)]
            ).fetchone()
        )
        if row is None:
            return None
        subject, role, expires, revoked = row
        if revoked is not None or (expires is not None and expires <= now_ms()):
            return None
        return Principal(subject, Role(role))

    async def revoke(self, token_id: str) -> bool:
        """Revoke by id; answers False when no live token has that id."""
        cursor = await self._database.run(
            self._database.db.execute,
            "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
            [now_ms(), token_id],
        )
        return cursor.rowcount > 0

    async def list(self) -> list[TokenInfo]:
        rows = await self._database.run(
            lambda: self._database.db.execute(
                "SELECT id, role, subject, description, created, expires, revoked FROM tokens ORDER BY created"
            ).fetchall()
        )
        return [TokenInfo(r[0], Role(r[1]), *r[2:]) for r in rows]
