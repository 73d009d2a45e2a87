"""Where remote repos' configurations and their caches' bookkeeping are kept (the edge's database).

Configurations are few and read on every request to a remote repo: each process holds
them in memory, reloaded when any process changes one (``database.copies``). Uses of
cached files are counted in memory and written in batches (``flush_uses``), so a cached
hit costs no database write.
"""

from __future__ import annotations

from collections.abc import Iterable

from repository.catalog import now_ms
from repository.db import Database

from .config import RemoteConfig
from .lru import CachedFile

_UPSERT_USE = (
    "INSERT INTO remote_cache (repo, path, size, last_used, checked) VALUES (:repo, :path, :size, :used, :used)"
    " ON CONFLICT (repo, path) DO UPDATE SET size = excluded.size, last_used = excluded.last_used,"
    " checked = excluded.checked"
)


class RemoteStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._configs: dict[str, RemoteConfig] = {}
        self._uses: dict[tuple[str, str], int] = {}
        database.copies.register(self.load)  # another process changed a remote repo

    async def load(self) -> None:
        rows = await self._database.read(
            lambda: self._database.db.execute("SELECT key, config FROM remote_repos").fetchall()
        )
        self._configs = {key: RemoteConfig.from_stored(text) for key, text in rows}

    def config(self, key: str) -> RemoteConfig | None:
        return self._configs.get(key)

    async def save(self, config: RemoteConfig) -> None:
        await self._database.run(
            self._database.db.execute,
            "INSERT INTO remote_repos (key, config, updated) VALUES (:key, :config, :updated)"
            " ON CONFLICT (key) DO UPDATE SET config = excluded.config, updated = excluded.updated",
            {"key": config.key, "config": config.stored(), "updated": now_ms()},
        )
        self._configs[config.key] = config
        self._database.changed()

    async def remove(self, key: str) -> None:
        def remove() -> None:
            with self._database.db.atomic() as db:
                db.execute("DELETE FROM remote_repos WHERE key = :key", {"key": key})
                db.execute("DELETE FROM remote_cache WHERE repo = :key", {"key": key})

        await self._database.run(remove)
        self._configs.pop(key, None)
        self._database.changed()

    async def cached(self, repo: str, path: str, size: int) -> None:
        """A file fetched into the cache now: used and checked now."""
        await self._database.run(
            self._database.db.execute, _UPSERT_USE, {"repo": repo, "path": path, "size": size, "used": now_ms()}
        )

    async def checked_at(self, repo: str, path: str) -> int:
        """When the cached file was last fetched or found unchanged upstream (epoch ms); 0: never."""
        row = await self._database.read(
            lambda: self._database.db.execute(
                "SELECT checked FROM remote_cache WHERE repo = :repo AND path = :path", {"repo": repo, "path": path}
            ).fetchone()
        )
        return int(row[0]) if row else 0

    async def mark_checked(self, repo: str, path: str) -> None:
        await self._database.run(
            self._database.db.execute,
            "UPDATE remote_cache SET checked = :now WHERE repo = :repo AND path = :path",
            {"repo": repo, "path": path, "now": now_ms()},
        )

    def used(self, repo: str, path: str) -> None:
        self._uses[(repo, path)] = now_ms()

    async def flush_uses(self) -> None:
        uses, self._uses = self._uses, {}
        if not uses:
            return
        rows = [{"repo": r, "path": p, "used": t} for (r, p), t in uses.items()]
        await self._database.run(
            self._database.db.executemany,
            "UPDATE remote_cache SET last_used = CASE WHEN :used > last_used THEN :used ELSE last_used END"
            " WHERE repo = :repo AND path = :path",
            rows,
        )

    async def files(self) -> list[CachedFile]:
        """Every cached file of every remote repo, least recently used first."""
        rows = await self._database.read(
            lambda: self._database.db.execute(
                "SELECT repo, path, size, last_used FROM remote_cache ORDER BY last_used, repo, path"
            ).fetchall()
        )
        return [CachedFile(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    async def files_under(self, repo: str, path: str) -> list[CachedFile]:
        """The cached files of ``repo`` at or below ``path`` ("" for all of them)."""
        lo, hi = (f"{path}/", f"{path}0") if path else ("", "\uffff")  # '0' sorts right after '/'
        rows = await self._database.read(
            lambda: self._database.db.execute(
                "SELECT repo, path, size, last_used FROM remote_cache"
                " WHERE repo = :repo AND (path = :path OR (path >= :lo AND path < :hi))",
                {"repo": repo, "path": path, "lo": lo, "hi": hi},
            ).fetchall()
        )
        return [CachedFile(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    async def forget(self, entries: Iterable[tuple[str, str]]) -> None:
        rows = [{"repo": r, "path": p} for r, p in entries]
        if rows:
            await self._database.run(
                self._database.db.executemany, "DELETE FROM remote_cache WHERE repo = :repo AND path = :path", rows
            )
