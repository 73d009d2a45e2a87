"""Users of an edge: name, password (scrypt), role and groups; kept in memory, changed through here.

Passwords are hashed with scrypt (N=2^14, r=8, p=1: about 16 MiB and tens of
milliseconds per check, off the event loop). A password that checked out is
remembered as a keyed hash for this process only, so a client sending basic auth
with every request pays the slow check once, until the user changes.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field

from cachetools import LRUCache

from repository.catalog import now_ms
from repository.db import Database
from repository.permissions import ANONYMOUS_USER
from repository.tokens import TOKEN_PREFIX, Principal, Role

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
VERIFIED_CACHE_ENTRIES = 10_000
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
GROUP_RE = NAME_RE
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
RESERVED_NAMES = frozenset({ANONYMOUS_USER})


class UserError(ValueError):
    """A user definition that cannot be stored; the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    email: str = ""
    groups: tuple[str, ...] = ()
    created: int = 0
    modified: int = 0
    password_hash: str = field(default="", repr=False)

    def principal(self) -> Principal:
        return Principal(self.name, self.role, groups=frozenset(self.groups))


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or name in RESERVED_NAMES:
        raise UserError(f"Invalid user name {name!r}: letters, digits and . _ @ - (at most 64), not 'anonymous'")
    return name


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"'password' must be a string of {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if password.startswith(TOKEN_PREFIX):
        raise UserError(f"'password' may not start with {TOKEN_PREFIX!r}: that marks an API token")
    return password


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _decoy_hash() -> str:
    """Checked against when the user does not exist, so a wrong name costs as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


class UserStore:
    """Every user in memory (users are few); each change writes sqlite, then the copy."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._users: dict[str, User] = {}
        self._verified: LRUCache[bytes, tuple[str, int]] = LRUCache(VERIFIED_CACHE_ENTRIES)
        self._cache_key = secrets.token_bytes(32)
        database.copies.register(self.load)  # another process changed a user

    async def load(self) -> None:
        rows = await self._database.read(
            lambda: self._database.db.execute(
                "SELECT name, role, email, groups, created, modified, password_hash FROM users"
            ).fetchall()
        )
        self._users = {r[0]: User(r[0], Role(r[1]), r[2], tuple(json.loads(r[3])), *r[4:]) for r in rows}
        self._verified.clear()

    # -- the UserDirectory the authenticator asks --------------------------------

    def principal(self, name: str) -> Principal | None:
        user = self._users.get(name)
        return user.principal() if user else None

    async def authenticate(self, name: str, password: str) -> Principal | None:
        user = self._users.get(name)
        key = hmac.new(self._cache_key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        if user is not None and self._verified.get(key) == (user.name, user.modified):
            return user.principal()
        stored = user.password_hash if user else None
        ok = await asyncio.to_thread(lambda: verify_password(password, stored or _decoy_hash()))
        if not ok or user is None or self._users.get(name) is not user:
            return None
        self._verified[key] = (user.name, user.modified)
        return user.principal()

    # -- administration --------------------------------------------------------

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def list(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.name)

    async def put(
        self,
        name: str,
        *,
        role: Role,
        email: str,
        groups: tuple[str, ...],
        password: str | None,
    ) -> tuple[User, bool]:
        """Create or replace a user; a replacement without a password keeps the old one.

        Answers the user and whether it was created.
        """
        check_name(name)
        for group in groups:
            if not GROUP_RE.fullmatch(group):
                raise UserError(f"Invalid group name {group!r}")
        previous = self._users.get(name)
        if password is None and previous is None:
            raise UserError("'password' is required to create a user")
        password_hash = (
            await asyncio.to_thread(hash_password, check_password(password))
            if password is not None
            else previous.password_hash  # type: ignore[union-attr]
        )
        stamp = max(now_ms(), previous.modified + 1) if previous else now_ms()
        user = User(
            name,
            role,
            email,
            tuple(dict.fromkeys(groups)),
            previous.created if previous else stamp,
            stamp,
            password_hash,
        )
        await self._database.run(self._upsert, user)
        self._users[name] = user
        self._database.changed()
        return user, previous is None

    def _upsert(self, u: User) -> None:
        self._database.db.execute(
            "INSERT INTO users (name, email, password_hash, role, groups, created, modified)"
            " VALUES (:name, :email, :password_hash, :role, :groups, :created, :modified)"
            " ON CONFLICT (name) DO UPDATE SET email = excluded.email, password_hash = excluded.password_hash,"
            " role = excluded.role, groups = excluded.groups, modified = excluded.modified",
            {
                "name": u.name,
                "email": u.email,
                "password_hash": u.password_hash,
                "role": u.role.value,
                "groups": json.dumps(list(u.groups)),
                "created": u.created,
                "modified": u.modified,
            },
        )

    async def delete(self, name: str) -> bool:
        if name not in self._users:
            return False
        await self._database.run(self._database.db.execute, "DELETE FROM users WHERE name = :name", {"name": name})
        self._users.pop(name, None)
        self._database.changed()
        return True
