"""API tokens: issued once in clear, stored only as a SHA-256 of the secret.

Secrets are 256 random bits, so a fast hash is enough to make a stolen database
useless for logging in; a slow password hash would only slow every request.
Resolved tokens are kept in memory so a download does not ask sqlite who is
calling; every change of a token goes through this store, which drops the copies.
Other processes serving the same database say when they revoke one (repository/generation.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from cachetools import LRUCache

from .catalog import now_ms
from .db import Database

TOKEN_PREFIX = "edt_"
RESOLVED_CACHE_ENTRIES = 10_000


class Role(StrEnum):
    reader = "reader"
    deployer = "deployer"
    distributor = "distributor"
    admin = "admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role | None  # None: anonymous
    # the groups of the user behind the identity, for permission targets
    groups: frozenset[str] = field(default_factory=frozenset)
    # the API token the caller presented, if it presented one
    token_id: str | None = None

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


@dataclass(frozen=True)
class _Resolved:
    id: str
    subject: str
    role: Role
    expires: int | None


class TokenStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        # token hash -> the live token it stands for; unknown secrets are not remembered
        self._resolved: LRUCache[str, _Resolved] = LRUCache(RESOLVED_CACHE_ENTRIES)
        self._changes = 0
        database.copies.register(self._forget)

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
            " VALUES (:id, :token_hash, :role, :subject, :description, :created, :expires)",
            {
                "id": info.id,
                "token_hash": token_hash,
                "role": info.role.value,
                "subject": info.subject,
                "description": info.description,
                "created": info.created,
                "expires": info.expires,
            },
        )

    async def resolve(self, secret: str) -> Principal | None:
        """The principal a presented secret stands for, or None if unknown, expired or revoked."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        token_hash = _hash(secret)
        found = self._resolved.get(token_hash)
        if found is None:
            changes = self._changes
            row = await self._database.run(
                lambda: self._database.db.execute(
                    "SELECT id, subject, role, expires FROM tokens WHERE token_hash = :hash AND revoked IS NULL",
                    {"hash": token_hash},
                ).fetchone()
            )
            if row is None:
                return None
            found = _Resolved(row[0], row[1], Role(row[2]), row[3])
            if changes == self._changes:  # no revocation raced the read
                self._resolved[token_hash] = found
        if found.expires is not None and found.expires <= now_ms():
            return None
        return Principal(found.subject, found.role, token_id=found.id)

    async def revoke(self, token_id: str) -> bool:
        """Revoke by id; answers False when no live token has that id."""
        self._forget()
        cursor = await self._database.run(
            self._database.db.execute,
            "UPDATE tokens SET revoked = :now WHERE id = :id AND revoked IS NULL",
            {"now": now_ms(), "id": token_id},
        )
        self._database.changed()
        return cursor.rowcount > 0

    async def revoke_subject(self, subject: str) -> int:
        """Revoke every live token issued for ``subject``; answers how many."""
        self._forget()
        cursor = await self._database.run(
            self._database.db.execute,
            "UPDATE tokens SET revoked = :now WHERE subject = :subject AND revoked IS NULL",
            {"now": now_ms(), "subject": subject},
        )
        self._database.changed()
        return int(cursor.rowcount)

    def _forget(self) -> None:
        self._changes += 1
        self._resolved.clear()

    async def list(self) -> list[TokenInfo]:
        rows = await self._database.run(
            lambda: self._database.db.execute(
                "SELECT id, role, subject, description, created, expires, revoked FROM tokens ORDER BY created, id"
            ).fetchall()
        )
        return [TokenInfo(r[0], Role(r[1]), *r[2:]) for r in rows]
