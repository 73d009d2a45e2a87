"""Credentials of pull-mode edges: minted by the service, kept as a sha256, scoped to one edge's pull calls.

A pull-mode edge calls the service (it is never called), so the service mints the credential
it calls with: ``<edge name>.<64 hex digits>``, answered once (at registration, or when it is
rotated) and stored only as its sha256. It is no token of the service's own: it rides in
``wire.pull.CREDENTIAL_HEADER``, every other API answers it as it answers no credential
(401), and a pull call for another edge than its own is a 403. Rotating mints a new one and
the old one stops working at once; revoking leaves the edge with none until the next rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from repository.db import Database
from repository.errors import Conflict, Forbidden, NotFound, Unauthorized
from repository.sql import Sql
from wire.pull import CREDENTIAL_HEADER, SECRET_HEX, credential_edge

from .edges import Edge, EdgeStore


def _digest(credential: str) -> str:
    # a credential is 256 random bits: a plain sha256 of it cannot be reversed or guessed
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


class PullCredentials:
    def __init__(self, database: Database) -> None:
        self._database = database
        self.edges = EdgeStore(database)

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def mint(self, name: str) -> str:
        """A new credential for pull-mode edge ``name``, replacing any it had; answered only here."""
        edge = await self.edges.get(name)
        if edge is None:
            raise NotFound(f"Edge '{name}' is not registered")
        if not edge.pulls:
            raise Conflict(f"Edge '{name}' is a push-mode edge: the service calls it with its token")
        credential = f"{name}.{secrets.token_hex(SECRET_HEX // 2)}"
        await self._set(name, _digest(credential))
        return credential

    async def revoke(self, name: str) -> None:
        """The edge's credential stops working; it gets a new one by ``mint``."""
        edge = await self.edges.get(name)
        if edge is None or not edge.pulls:
            raise NotFound(f"No pull-mode edge '{name}'")
        await self._set(name, None)

    async def _set(self, name: str, digest: str | None) -> None:
        await self._database.run(
            self._db.execute,
            "UPDATE edges SET credential_sha256 = :digest WHERE name = :name",
            {"digest": digest, "name": name},
        )

    async def check(self, edge_name: str, credential: str | None) -> Edge:
        """The edge whose pull calls ``edge_name``'s path names, if ``credential`` is its own: 401
        for none or a wrong one, 403 for another pull-mode edge's."""
        if not credential:
            raise Unauthorized(f"A pull call needs the edge's credential in {CREDENTIAL_HEADER}")
        owner = credential_edge(credential)
        row = await self._database.run(
            lambda: self._db.execute(
                "SELECT credential_sha256 FROM edges WHERE name = :name AND mode = 'pull'", {"name": owner}
            ).fetchone()
        )
        if row is None or row[0] is None or not hmac.compare_digest(row[0], _digest(credential)):
            raise Unauthorized("The edge credential is not valid (revoked, rotated, or never minted)")
        if owner != edge_name:
            raise Forbidden(f"The credential of edge '{owner}' may not act for edge '{edge_name}'")
        edge = await self.edges.get(owner)
        if edge is None:  # removed meanwhile
            raise Unauthorized("The edge credential is not valid (revoked, rotated, or never minted)")
        return edge
