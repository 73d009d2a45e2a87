"""Console sessions: a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie, the session in the
database (so every worker and replica on the database sees it), a CSRF token per session.

A session holds the identity the credential had at login (role and groups); it ends at logout
or after ``console_session_hours``. The credential itself is never stored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from repository.catalog import now_ms
from repository.db import Database
from repository.sql import Sql
from repository.tokens import Principal, Role


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires: int


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, database: Database, lifetime_ms: int) -> None:
        self._database = database
        self.lifetime_ms = lifetime_ms

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def open(self, principal: Principal) -> tuple[str, Session]:
        """A new session for ``principal``: its id (for the cookie only) and the session."""
        session_id, now = secrets.token_urlsafe(32), now_ms()
        session = Session(principal, secrets.token_urlsafe(32), now + self.lifetime_ms)
        row = {
            "id": _digest(session_id),
            "subject": principal.subject,
            "role": principal.role.value if principal.role else "",
            "groups": json.dumps(sorted(principal.groups)),
            "token_id": principal.token_id,
            "csrf": session.csrf,
            "created": now,
            "expires": session.expires,
        }
        await self._database.run(self._open, row)
        return session_id, session

    def _open(self, row: dict[str, object]) -> None:
        with self._db.atomic():
            # expired sessions go as new ones come: the table stays as large as the sessions alive
            self._db.execute("DELETE FROM console_sessions WHERE expires < :now", {"now": now_ms()})
            self._db.execute(
                "INSERT INTO console_sessions (id_sha256, subject, role, groups, token_id, csrf, created, expires)"
                " VALUES (:id, :subject, :role, :groups, :token_id, :csrf, :created, :expires)",
                row,
            )

    async def get(self, session_id: str) -> Session | None:
        """The live session with this id; None for an unknown, ended or expired one."""
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT subject, role, groups, token_id, csrf, expires FROM console_sessions"
                " WHERE id_sha256 = :id AND expires > :now",
                {"id": _digest(session_id), "now": now_ms()},
            ).fetchone()
        )
        if row is None:
            return None
        subject, role, groups, token_id, csrf, expires = row
        principal = Principal(subject, Role(role), frozenset(json.loads(groups)), token_id)
        return Session(principal, csrf, expires)

    async def close(self, session_id: str) -> None:
        await self._database.run(
            self._db.execute, "DELETE FROM console_sessions WHERE id_sha256 = :id", {"id": _digest(session_id)}
        )
