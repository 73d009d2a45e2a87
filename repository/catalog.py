"""Repos and the index of artifacts: (repo, path) -> blob, with folders for fast listings.

Every query of repos, folders and artifacts lives here. Each public coroutine
runs one synchronous function on the database thread; multi-step changes run
inside ``db.atomic()`` so they are all-or-nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlite_utils
from cachetools import LRUCache

from .db import Database
from .errors import Conflict, NotFound, PathOwned
from .paths import ancestors, name_of, parent_of

DEEP_LIST_PAGE = 1000
ARTIFACT_CACHE_ENTRIES = 50_000
IN_PAGE = 500  # paths per ``IN (...)`` query, well below sqlite's limit on bound parameters


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Repo:
    key: str
    type: str = "LOCAL"
    package_type: str = "generic"
    description: str = ""
    anonymous_read: bool = True
    created: int = 0


@dataclass(frozen=True)
class Artifact:
    repo: str
    path: str
    sha256: str
    sha1: str
    md5: str
    size: int
    mime_type: str
    created: int
    created_by: str
    modified: int
    modified_by: str
    owner: str
    properties: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return name_of(self.path)

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row["folder"] = parent_of(self.path)
        row["name"] = self.name
        row["properties"] = json.dumps(self.properties, sort_keys=True)
        return row


@dataclass(frozen=True)
class Folder:
    repo: str
    path: str
    created: int
    created_by: str


@dataclass(frozen=True)
class Listing:
    folders: list[Folder]
    files: list[Artifact]


_ARTIFACT_COLUMNS = (
    "repo, path, sha256, sha1, md5, size, mime_type, created, created_by, modified, modified_by, owner, properties"
)


def _artifact(row: tuple[Any, ...]) -> Artifact:
    values = list(row)
    values[-1] = json.loads(values[-1])
    return Artifact(*values)


def _repo(row: dict[str, Any]) -> Repo:
    return Repo(
        key=row["key"],
        type=row["type"],
        package_type=row["package_type"],
        description=row["description"],
        anonymous_read=bool(row["anonymous_read"]),
        created=row["created"],
    )


def _pages(keys: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``(repo, paths)`` in pages of at most ``IN_PAGE`` paths, for ``path IN (...)`` queries."""
    by_repo: dict[str, list[str]] = {}
    for repo, path in keys:
        by_repo.setdefault(repo, []).append(path)
    return [(repo, paths[i : i + IN_PAGE]) for repo, paths in by_repo.items() for i in range(0, len(paths), IN_PAGE)]


def check_owner(held: Artifact, owner: str) -> None:
    """Refuse a change by ``owner`` to a file someone else owns (a bundle's, changed by an upload)."""
    if held.owner != owner:
        raise PathOwned(f"'{held.repo}/{held.path}' belongs to {held.owner} and cannot be changed by a direct upload")


def _subtree(path: str) -> tuple[str, str]:
    """The half-open key range of every path strictly below folder ``path`` ('' is the root)."""
    if path == "":
        return "", "\U0010ffff"
    return path + "/", path + "0"  # '0' sorts right after '/'


class Catalog:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._repos: dict[str, Repo] | None = None
        # Hot paths are looked up on every download. Every write of this catalog
        # goes through this object, which drops what it changes from the cache.
        self._artifacts: LRUCache[tuple[str, str], Artifact] = LRUCache(ARTIFACT_CACHE_ENTRIES)
        self._writes = 0

    @property
    def _db(self) -> sqlite_utils.Database:
        return self._database.db

    # -- repos --------------------------------------------------------------

    async def ensure_repo(self, repo: Repo, *, update: bool = False) -> Repo:
        """Create a repo if it is missing. An existing one keeps its settings unless ``update``."""
        self._repos = None
        return await self._database.run(self._ensure_repo, repo, update)

    def _ensure_repo(self, repo: Repo, update: bool) -> Repo:
        row = asdict(repo) | {"created": repo.created or now_ms()}
        row["anonymous_read"] = int(repo.anonymous_read)
        conflict = (
            "DO UPDATE SET type = excluded.type, package_type = excluded.package_type,"
            " description = excluded.description, anonymous_read = excluded.anonymous_read"
            if update
            else "DO NOTHING"
        )
        self._db.execute(
            "INSERT INTO repos (key, type, package_type, description, anonymous_read, created)"
            " VALUES (:key, :type, :package_type, :description, :anonymous_read, :created)"
            f" ON CONFLICT (key) {conflict}",
            row,
        )
        found = self._get_repo(repo.key)
        assert found is not None
        return found

    async def get_repo(self, key: str) -> Repo | None:
        """Repos are few and read on every request: answered from memory after the first call.

        Every repo change goes through this catalog, so the copy is refreshed on write.
        """
        if self._repos is None:
            repos = await self.list_repos()
            self._repos = {r.key: r for r in repos}
        return self._repos.get(key)

    def _get_repo(self, key: str) -> Repo | None:
        rows = list(self._db.query("SELECT * FROM repos WHERE key = ?", [key]))
        return _repo(rows[0]) if rows else None

    async def list_repos(self) -> list[Repo]:
        return await self._database.run(lambda: [_repo(r) for r in self._db.query("SELECT * FROM repos ORDER BY key")])

    # -- artifacts ----------------------------------------------------------

    async def get_artifact(self, repo: str, path: str) -> Artifact | None:
        cached = self._artifacts.get((repo, path))
        if cached is not None:
            return cached
        generation = self._writes
        found = await self._database.run(self._get_artifact, repo, path)
        if found is not None and generation == self._writes:  # no write raced the read
            self._artifacts[(repo, path)] = found
        return found

    def _get_artifact(self, repo: str, path: str) -> Artifact | None:
        row = self._db.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE repo = ? AND path = ?", [repo, path]
        ).fetchone()
        return _artifact(row) if row else None

    async def get_folder(self, repo: str, path: str) -> Folder | None:
        """The folder at ``path``; the repo root ('') always exists."""
        return await self._database.run(self._get_folder, repo, path)

    def _get_folder(self, repo: str, path: str) -> Folder | None:
        if path == "":
            r = self._get_repo(repo)
            return Folder(repo, "", r.created, "system") if r else None
        row = self._db.execute(
            "SELECT repo, path, created, created_by FROM folders WHERE repo = ? AND path = ?", [repo, path]
        ).fetchone()
        return Folder(*row) if row else None

    async def holders(self, algorithm: str, value: str) -> AsyncIterator[Artifact]:
        """Every artifact with these bytes (by ``sha256`` or ``sha1``), in (repo, path) order, a page
        at a time: deploy-by-checksum looks for one its caller may read."""
        if algorithm not in ("sha256", "sha1"):
            raise ValueError(algorithm)
        after = ("", "")
        while True:
            page = await self._database.run(self._holders, algorithm, value.lower(), after)
            for artifact in page:
                yield artifact
            if len(page) < DEEP_LIST_PAGE:
                return
            after = (page[-1].repo, page[-1].path)

    def _holders(self, algorithm: str, value: str, after: tuple[str, str]) -> list[Artifact]:
        rows = self._db.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE {algorithm} = ? AND (repo, path) > (?, ?)"
            " ORDER BY repo, path LIMIT ?",
            [value, *after, DEEP_LIST_PAGE],
        )
        return [_artifact(r) for r in rows]

    async def put_artifact(self, artifact: Artifact) -> Artifact:
        """Index a file, creating its folders; overwriting a file keeps its created time.

        Refused with 409 where the path is a folder, an ancestor is a file, or the file there
        has another owner (a release bundle's file is never replaced by an upload).
        """
        self._writes += 1
        self._artifacts.pop((artifact.repo, artifact.path), None)
        return await self._database.run(self._put_artifact, artifact)

    def _put_artifact(self, artifact: Artifact) -> Artifact:
        with self._db.atomic():
            self._check_no_clash(artifact.repo, artifact.path)
            self._insert_folders(artifact.repo, ancestors(artifact.path), artifact.modified, artifact.modified_by)
            previous = self._get_artifact(artifact.repo, artifact.path)
            if previous is not None:
                check_owner(previous, artifact.owner)
                artifact = replace(artifact, created=previous.created, created_by=previous.created_by)
            row = artifact.row()
            columns = ", ".join(row)
            self._db.execute(
                f"INSERT OR REPLACE INTO artifacts ({columns}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        return artifact

    async def make_folder(self, repo: str, path: str, user: str) -> Folder:
        """Create a folder and its parents (Artifactory's ``PUT repo/path/``); existing is fine."""
        return await self._database.run(self._make_folder, repo, path, user)

    def _make_folder(self, repo: str, path: str, user: str) -> Folder:
        with self._db.atomic():
            if self._get_artifact(repo, path) is not None:
                raise Conflict(f"Cannot create folder '{path}': a file with that name exists")
            self._check_ancestors_are_folders(repo, path)
            self._insert_folders(repo, [*ancestors(path), path], now_ms(), user)
            folder = self._get_folder(repo, path)
        assert folder is not None
        return folder

    def _insert_folders(self, repo: str, paths: list[str], created: int, user: str) -> None:
        for folder in paths:
            self._db.execute(
                "INSERT OR IGNORE INTO folders (repo, path, parent, name, created, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [repo, folder, parent_of(folder), name_of(folder), created, user],
            )

    def _check_no_clash(self, repo: str, path: str) -> None:
        if self._db.execute("SELECT 1 FROM folders WHERE repo = ? AND path = ?", [repo, path]).fetchone():
            raise Conflict(f"Cannot deploy file '{path}': a folder with that name exists")
        self._check_ancestors_are_folders(repo, path)

    def _check_ancestors_are_folders(self, repo: str, path: str) -> None:
        for folder in ancestors(path):
            if self._get_artifact(repo, folder) is not None:
                raise Conflict(f"Cannot store '{path}': '{folder}' is a file")

    async def delete(self, repo: str, path: str, *, owner: str) -> list[Artifact]:
        """Remove a file, or a folder with everything below it; answers what was removed.

        Only ``owner``'s files: where the file, or any file below the folder, has another
        owner, nothing is removed (409).
        """
        self._writes += 1
        self._artifacts.clear()  # a folder delete can touch any number of cached paths
        return await self._database.run(self._delete, repo, path, owner)

    def _delete(self, repo: str, path: str, owner: str) -> list[Artifact]:
        with self._db.atomic():
            single = self._get_artifact(repo, path)
            if single is not None:
                check_owner(single, owner)
                self._db.execute("DELETE FROM artifacts WHERE repo = ? AND path = ?", [repo, path])
                return [single]
            if self._get_folder(repo, path) is None:
                raise NotFound()
            lo, hi = _subtree(path)
            removed = [
                _artifact(r)
                for r in self._db.execute(
                    f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE repo = ? AND path >= ? AND path < ?",
                    [repo, lo, hi],
                )
            ]
            for artifact in removed:
                check_owner(artifact, owner)
            self._db.execute("DELETE FROM artifacts WHERE repo = ? AND path >= ? AND path < ?", [repo, lo, hi])
            self._db.execute("DELETE FROM folders WHERE repo = ? AND path >= ? AND path < ?", [repo, lo, hi])
            if path:
                self._db.execute("DELETE FROM folders WHERE repo = ? AND path = ?", [repo, path])
            return removed

    # -- listings -----------------------------------------------------------

    async def children(self, repo: str, path: str) -> Listing:
        return await self._database.run(self._children, repo, path)

    def _children(self, repo: str, path: str) -> Listing:
        folders = [
            Folder(*r)
            for r in self._db.execute(
                "SELECT repo, path, created, created_by FROM folders WHERE repo = ? AND parent = ? ORDER BY name",
                [repo, path],
            )
        ]
        files = [
            _artifact(r)
            for r in self._db.execute(
                f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE repo = ? AND folder = ? ORDER BY name",
                [repo, path],
            )
        ]
        return Listing(folders, files)

    async def walk_pages(self, repo: str, path: str) -> AsyncIterator[list[Artifact]]:
        """Every file below a folder in path order, a page at a time: memory stays flat."""
        lo, hi = _subtree(path)
        after = ""
        while True:
            page = await self._database.run(self._files_page, repo, lo, hi, after)
            if page:
                yield page
            if len(page) < DEEP_LIST_PAGE:
                return
            after = page[-1].path

    async def walk_files(self, repo: str, path: str) -> AsyncIterator[Artifact]:
        async for page in self.walk_pages(repo, path):
            for artifact in page:
                yield artifact

    def _files_page(self, repo: str, lo: str, hi: str, after: str) -> list[Artifact]:
        start = max(lo, after)
        op = ">" if after and after >= lo else ">="
        return [
            _artifact(r)
            for r in self._db.execute(
                f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE repo = ? AND path {op} ? AND path < ?"
                " ORDER BY path LIMIT ?",
                [repo, start, hi, DEEP_LIST_PAGE],
            )
        ]

    # -- bulk publish (bundles) ---------------------------------------------

    def _invalidate(self) -> None:
        """Forget cached entries and repos; called before *and* after a bulk write, so a read
        queued on the database thread before the write cannot cache what the write replaces."""
        self._writes += 1
        self._artifacts.clear()
        self._repos = None

    async def conflicts(self, targets: list[tuple[str, str, str]]) -> list[str]:
        """``repo/path`` of each ``(repo, path, sha256)`` that could not be published as it is:
        the path holds other bytes, is a folder, or lies below a file."""
        return await self._database.run(self._conflicts, targets)

    def _conflicts(self, targets: list[tuple[str, str, str]]) -> list[str]:
        existing = self._artifacts_at([(repo, path) for repo, path, _ in targets])
        new = [(repo, path) for repo, path, _ in targets if (repo, path) not in existing]
        folders = self._folders_at(new)
        files_above = self._artifacts_at(sorted({(repo, f) for repo, path in new for f in ancestors(path)}))
        found = []
        for repo, path, sha256 in targets:
            held = existing.get((repo, path))
            if held is not None:
                clash = held.sha256 != sha256
            else:
                clash = (repo, path) in folders or any((repo, f) in files_above for f in ancestors(path))
            if clash:
                found.append(f"{repo}/{path}")
        return found

    def _artifacts_at(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Artifact]:
        """The entries at these ``(repo, path)``s, a page of paths per query: a bundle's
        thousand paths cost a few queries, not a thousand."""
        found: dict[tuple[str, str], Artifact] = {}
        for repo, page in _pages(keys):
            rows = self._db.execute(
                f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE repo = ? AND path IN ({', '.join('?' * len(page))})",
                [repo, *page],
            )
            for row in rows.fetchall():
                artifact = _artifact(row)
                found[artifact.repo, artifact.path] = artifact
        return found

    def _folders_at(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of these ``(repo, path)``s that are folders."""
        found: set[tuple[str, str]] = set()
        for repo, page in _pages(keys):
            rows = self._db.execute(
                f"SELECT path FROM folders WHERE repo = ? AND path IN ({', '.join('?' * len(page))})", [repo, *page]
            )
            found.update((repo, path) for (path,) in rows.fetchall())
        return found

    async def blob_sizes(self, sha256s: list[str]) -> dict[str, int]:
        """The size of each of these blobs that some index entry references (so storage holds it)."""
        return await self._database.run(self._blob_sizes, sha256s)

    def _blob_sizes(self, sha256s: list[str]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for start in range(0, len(sha256s), 500):
            page = sha256s[start : start + 500]
            rows = self._db.execute(
                f"SELECT DISTINCT sha256, size FROM artifacts WHERE sha256 IN ({', '.join('?' * len(page))})", page
            )
            sizes.update(dict(rows.fetchall()))
        return sizes

    async def publish(
        self, artifacts: list[Artifact], repos: list[Repo], *, extra: Callable[[], None] | None = None
    ) -> None:
        """Index many files in ONE database transaction: all of them are visible, or none.

        Missing repos are created (existing ones keep their settings). A path that holds
        other bytes, is a folder or lies below a file is refused with 409 and nothing
        changes. A path already holding the same bytes keeps its created time and takes
        the new owner. ``extra`` runs on the database thread inside the same transaction,
        for the caller's own rows that must commit or roll back with the index.
        """
        self._invalidate()
        try:
            await self._database.run(self._publish, artifacts, repos, extra)
        finally:
            self._invalidate()

    def _publish(self, artifacts: list[Artifact], repos: list[Repo], extra: Callable[[], None] | None) -> None:
        with self._db.atomic():
            for made in repos:
                self._ensure_repo(made, False)
            keys = [(a.repo, a.path) for a in artifacts]
            existing = self._artifacts_at(keys)
            new = [key for key in keys if key not in existing]
            folders = self._folders_at(new)
            files = set(keys) | set(self._artifacts_at(sorted({(r, f) for r, p in new for f in ancestors(p)})))
            rows: list[dict[str, Any]] = []
            new_folders: dict[tuple[str, str], tuple[int, str]] = {}
            for artifact in artifacts:
                repo, path = artifact.repo, artifact.path
                previous = existing.get((repo, path))
                if previous is not None:
                    if previous.sha256 != artifact.sha256:
                        raise Conflict(f"Cannot publish '{repo}/{path}': it holds other content")
                    artifact = replace(artifact, created=previous.created, created_by=previous.created_by)
                elif (repo, path) in folders:
                    raise Conflict(f"Cannot deploy file '{path}': a folder with that name exists")
                for folder in ancestors(path):
                    if (repo, folder) in files:  # stored already, or another file of this publish
                        raise Conflict(f"Cannot store '{path}': '{folder}' is a file")
                    new_folders.setdefault((repo, folder), (artifact.modified, artifact.modified_by))
                rows.append(artifact.row())
            self._db.conn.executemany(
                "INSERT OR IGNORE INTO folders (repo, path, parent, name, created, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(repo, f, parent_of(f), name_of(f), *first) for (repo, f), first in new_folders.items()],
            )
            if rows:
                self._db.conn.executemany(
                    f"INSERT OR REPLACE INTO artifacts ({', '.join(rows[0])}) VALUES ({', '.join('?' * len(rows[0]))})",
                    [list(row.values()) for row in rows],
                )
            if extra is not None:
                extra()

    async def unpublish(
        self,
        owner: str,
        paths: list[tuple[str, str]],
        reassign: Mapping[tuple[str, str], str],
        *,
        extra: Callable[[], None] | None = None,
    ) -> list[Artifact]:
        """Remove, in ONE database transaction, the entries at ``paths`` that ``owner`` owns;
        those in ``reassign`` are kept and handed to their new owner instead. Entries now
        owned by someone else are left alone. Answers the removed entries."""
        self._invalidate()
        try:
            return await self._database.run(self._unpublish, owner, paths, reassign, extra)
        finally:
            self._invalidate()

    def _unpublish(
        self,
        owner: str,
        paths: list[tuple[str, str]],
        reassign: Mapping[tuple[str, str], str],
        extra: Callable[[], None] | None,
    ) -> list[Artifact]:
        removed = []
        with self._db.atomic():
            for repo, path in paths:
                found = self._get_artifact(repo, path)
                if found is None or found.owner != owner:
                    continue
                if (repo, path) in reassign:
                    self._db.execute(
                        "UPDATE artifacts SET owner = ? WHERE repo = ? AND path = ?", [reassign[repo, path], repo, path]
                    )
                else:
                    self._db.execute("DELETE FROM artifacts WHERE repo = ? AND path = ?", [repo, path])
                    removed.append(found)
            if extra is not None:
                extra()
        return removed
