"""The edge's virtual repositories: kept in the ``virtual_repos`` table, read from memory.

Every process of the node holds the whole set (a handful of rows) and reloads it when another
process changed it (``database.copies``, as users and permission targets do), so a change of
members made through one worker is what every worker resolves by on its next request.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.virtual import VirtualRepo, VirtualRepos

_COLUMNS = "key, members, description, anonymous_read, created"


def _virtual(row: tuple[Any, ...]) -> VirtualRepo:
    key, members, description, anonymous_read, created = row
    return VirtualRepo(key, tuple(json.loads(members)), description, bool(anonymous_read), created)


class VirtualRepoStore(VirtualRepos):
    def __init__(self, database: Database) -> None:
        self._database = database
        self._repos: dict[str, VirtualRepo] = {}
        database.copies.register(self.load)  # another process changed a virtual repo

    async def load(self) -> None:
        rows = await self._database.read(
            lambda: self._database.db.execute(f"SELECT {_COLUMNS} FROM virtual_repos").fetchall()
        )
        self._repos = {row[0]: _virtual(row) for row in rows}

    def get(self, key: str) -> VirtualRepo | None:
        return self._repos.get(key)

    def all(self) -> list[VirtualRepo]:
        return sorted(self._repos.values(), key=lambda r: r.key)

    def listing(self, member: str) -> list[str]:
        """The virtual repos that list ``member`` directly."""
        return [r.key for r in self.all() if member in r.members]

    async def put(self, repo: VirtualRepo) -> VirtualRepo:
        """Create or replace (a replaced one keeps its creation time); the checks are the caller's."""
        previous = self._repos.get(repo.key)
        stamp = now_ms()
        stored = replace(repo, created=previous.created if previous is not None else stamp)
        await self._database.run(
            self._database.db.execute,
            "INSERT INTO virtual_repos (key, members, description, anonymous_read, created, modified)"
            " VALUES (:key, :members, :description, :anonymous_read, :created, :modified)"
            " ON CONFLICT (key) DO UPDATE SET members = excluded.members, description = excluded.description,"
            " anonymous_read = excluded.anonymous_read, modified = excluded.modified",
            {
                "key": stored.key,
                "members": json.dumps(list(stored.members)),
                "description": stored.description,
                "anonymous_read": int(stored.anonymous_read),
                "created": stored.created,
                "modified": stamp,
            },
        )
        self._repos = {**self._repos, stored.key: stored}
        self._database.changed()
        return stored

    async def delete(self, key: str) -> None:
        await self._database.run(self._database.db.execute, "DELETE FROM virtual_repos WHERE key = :key", {"key": key})
        self._repos = {k: r for k, r in self._repos.items() if k != key}
        self._database.changed()
