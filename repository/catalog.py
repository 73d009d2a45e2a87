"""Repos and the index of artifacts: (repo, path) -> blob, with folders for fast listings.

Every query of repos, folders and artifacts lives here or, for changes of many entries
at once (a bundle's), in ``repository.bulk``. Each public coroutine runs one synchronous
function on a database thread: reads a client waits for on the reader thread, changes on
the writer thread, multi-step ones as one transaction so they are all-or-nothing, and one
at a time across every process on the database (``write_lock.one_writer``).

Readers never see what a bulk change is still publishing, nor the entries of an owner
being removed (``VISIBLE_ARTIFACT`` and friends); writers see every row, so a path a
bundle is publishing is taken even before it shows.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import asdict, replace
from typing import Any, TypeVar

from cachetools import LRUCache

from .bulk import BulkIndex
from .db import Database
from .entries import (  # re-exported: the catalog's callers know these types by it
    ARTIFACT_COLUMNS,
    IN_PAGE,
    ROW_COLUMNS,
    Artifact,
    Folder,
    Listing,
    Repo,
    artifact_of,
    insert_artifacts,
    now_ms,
)
from .errors import Conflict, NotFound, PathOwned
from .paths import ancestors, name_of, parent_of
from .sql import Sql
from .write_lock import one_writer

DEEP_LIST_PAGE = 1000
ARTIFACT_CACHE_ENTRIES = 50_000

T = TypeVar("T")

# What readers may see (SQL over the unaliased table): nothing a bulk change is still
# publishing, and no entry of an owner whose entries are being removed.
VISIBLE_ARTIFACT = (
    "NOT EXISTS (SELECT 1 FROM bulk_changes c WHERE c.key = artifacts.pending"
    " OR (c.action = 'unpublish' AND c.owner = artifacts.owner))"
)
VISIBLE_FOLDER = "(folders.pending IS NULL OR NOT EXISTS (SELECT 1 FROM bulk_changes c WHERE c.key = folders.pending))"
VISIBLE_REPO = "(repos.pending IS NULL OR NOT EXISTS (SELECT 1 FROM bulk_changes c WHERE c.key = repos.pending))"
_REPO_COLUMNS = "key, type, package_type, description, anonymous_read, created"
# A file's row written whole over the one at its path, if any (as visible as a new one).
_PUT_ARTIFACT = (
    insert_artifacts()
    + " ON CONFLICT (repo, path) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ROW_COLUMNS if c not in ("repo", "path"))
    + ", pending = NULL"
)


def _repo(row: tuple[Any, ...]) -> Repo:
    key, type_, package_type, description, anonymous_read, created = row
    return Repo(key, type_, package_type, description, bool(anonymous_read), created)


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
        # goes through this object, which drops what it changes from the cache and tells
        # the node's other processes (repository/generation.py), which drop all of theirs.
        self._artifacts: LRUCache[tuple[str, str], Artifact] = LRUCache(ARTIFACT_CACHE_ENTRIES)
        self._writes = 0
        self.bulk = BulkIndex(self, database)
        database.copies.register(self.forget_all)

    @property
    def database(self) -> Database:
        return self._database

    @property
    def _db(self) -> Sql:
        return self._database.db

    # -- the cache of hot entries -------------------------------------------

    async def write(self, fn: Callable[..., T], *args: object, changed: Callable[[T], Iterable[tuple[str, str]]]) -> T:
        """Run the change ``fn(*args)`` on the writer thread, then forget the cached entries at
        the paths ``changed`` names from its result. Reads run beside writes, so a read that
        started before the change ended must not cache what it found: every read compares the
        write count before and after, and the count moves before and after every change."""
        self._writes += 1
        try:
            result = await self._database.run(fn, *args)
        finally:
            self._writes += 1
            self._database.changed()
        self.forget(changed(result))
        return result

    def forget(self, paths: Iterable[tuple[str, str]]) -> None:
        for key in paths:
            self._artifacts.pop(key, None)

    def forget_owner(self, owner: str) -> None:
        """Drop every cached entry of ``owner`` (one pass over the cache, when its entries hide)."""
        self._writes += 1
        self.forget([key for key, artifact in self._artifacts.items() if artifact.owner == owner])
        self._database.changed()

    def forget_repos(self) -> None:
        self._writes += 1
        self._repos = None
        self._database.changed()

    def forget_all(self) -> None:
        """Another process changed the catalog: every copy goes, and reads under way do not keep theirs."""
        self._writes += 1
        self._artifacts.clear()
        self._repos = None

    # -- repos --------------------------------------------------------------

    async def ensure_repo(self, repo: Repo, *, update: bool = False) -> Repo:
        """Create a repo if it is missing. An existing one keeps its settings unless ``update``."""
        self._repos = None
        try:
            return await self._database.run(self._ensure_repo, repo, update)
        finally:
            self._repos = None
            self._database.changed()

    def _ensure_repo(self, repo: Repo, update: bool) -> Repo:
        """A repo made here is visible at once, even one a bulk change made and still hides."""
        row = asdict(repo) | {"created": repo.created or now_ms()}
        row["anonymous_read"] = int(repo.anonymous_read)
        settings = (
            ", type = excluded.type, package_type = excluded.package_type,"
            " description = excluded.description, anonymous_read = excluded.anonymous_read"
            if update
            else ""
        )
        self._db.execute(
            f"INSERT INTO repos ({_REPO_COLUMNS})"
            " VALUES (:key, :type, :package_type, :description, :anonymous_read, :created)"
            f" ON CONFLICT (key) DO UPDATE SET pending = NULL{settings}",
            row,
        )
        found = self._get_repo(repo.key)
        assert found is not None
        return found

    async def remove_repo(self, key: str) -> None:
        """Remove a repo that holds no files, its folders with it; Conflict while it holds any."""
        self._repos = None
        try:
            await self._database.run(self._remove_repo, key)
        finally:
            self._repos = None
            self._database.changed()

    def _remove_repo(self, key: str) -> None:
        with one_writer(self._db):
            if self._db.execute("SELECT 1 FROM artifacts WHERE repo = :key LIMIT 1", {"key": key}).fetchone():
                raise Conflict(f"Repository '{key}' still holds files")
            self._db.execute("DELETE FROM folders WHERE repo = :key", {"key": key})
            self._db.execute("DELETE FROM repos WHERE key = :key", {"key": key})

    async def get_repo(self, key: str) -> Repo | None:
        """Repos are few and read on every request: answered from memory after the first call.

        Every repo change goes through this catalog, so the copy is refreshed on write; other
        processes' changes drop it too (``forget_all``).
        """
        repos = self._repos
        if repos is None:
            generation = self._writes
            repos = {r.key: r for r in await self.list_repos()}
            if generation == self._writes:  # no change raced the read
                self._repos = repos
        return repos.get(key)

    def cached_repos(self) -> dict[str, Repo] | None:
        """Every repo by key when this process holds them, without a coroutine (a download's usual
        case); None when it does not, and ``get_repo`` must read them."""
        return self._repos

    def _get_repo(self, key: str) -> Repo | None:
        row = self._db.execute(
            f"SELECT {_REPO_COLUMNS} FROM repos WHERE key = :key AND {VISIBLE_REPO}", {"key": key}
        ).fetchone()
        return _repo(row) if row else None

    async def list_repos(self) -> list[Repo]:
        return await self._database.read(self._list_repos)

    def _list_repos(self) -> list[Repo]:
        rows = self._db.execute(f"SELECT {_REPO_COLUMNS} FROM repos WHERE {VISIBLE_REPO} ORDER BY key")
        return [_repo(r) for r in rows.fetchall()]

    # -- artifacts ----------------------------------------------------------

    def cached_artifact(self, repo: str, path: str) -> Artifact | None:
        """The entry at a path when this process holds it, without a coroutine (the download's
        usual case); None when it does not, and ``get_artifact`` must look."""
        return self._artifacts.get((repo, path))

    async def get_artifact(self, repo: str, path: str) -> Artifact | None:
        cached = self._artifacts.get((repo, path))
        if cached is not None:
            return cached
        generation = self._writes
        found = await self._database.read(self._get_artifact, repo, path)
        if found is not None and generation == self._writes:  # no write raced the read
            self._artifacts[(repo, path)] = found
        return found

    def _get_artifact(self, repo: str, path: str) -> Artifact | None:
        """The entry at a path as readers see it."""
        row = self._db.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE repo = :repo AND path = :path AND {VISIBLE_ARTIFACT}",
            {"repo": repo, "path": path},
        ).fetchone()
        return artifact_of(row) if row else None

    def _stored_artifact(self, repo: str, path: str) -> Artifact | None:
        """The entry at a path, visible or not: what a write must respect."""
        row = self._db.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE repo = :repo AND path = :path",
            {"repo": repo, "path": path},
        ).fetchone()
        return artifact_of(row) if row else None

    async def get_folder(self, repo: str, path: str) -> Folder | None:
        """The folder at ``path``; the repo root ('') always exists."""
        return await self._database.read(self._get_folder, repo, path)

    def _get_folder(self, repo: str, path: str) -> Folder | None:
        if path == "":
            r = self._get_repo(repo)
            return Folder(repo, "", r.created, "system") if r else None
        row = self._db.execute(
            "SELECT repo, path, created, created_by FROM folders"
            f" WHERE repo = :repo AND path = :path AND {VISIBLE_FOLDER}",
            {"repo": repo, "path": path},
        ).fetchone()
        return Folder(*row) if row else None

    async def holders(self, algorithm: str, value: str) -> AsyncGenerator[Artifact, None]:
        """Every artifact with these bytes (by ``sha256`` or ``sha1``), in (repo, path) order, a page
        at a time: deploy-by-checksum looks for one its caller may read."""
        if algorithm not in ("sha256", "sha1"):
            raise ValueError(algorithm)
        after = ("", "")
        while True:
            page = await self._database.read(self._holders, algorithm, value.lower(), after)
            for artifact in page:
                yield artifact
            if len(page) < DEEP_LIST_PAGE:
                return
            after = (page[-1].repo, page[-1].path)

    def _holders(self, algorithm: str, value: str, after: tuple[str, str]) -> list[Artifact]:
        rows = self._db.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE {algorithm} = :value AND (repo, path) > (:repo, :path)"
            f" AND {VISIBLE_ARTIFACT} ORDER BY repo, path LIMIT :limit",
            {"value": value, "repo": after[0], "path": after[1], "limit": DEEP_LIST_PAGE},
        )
        return [artifact_of(r) for r in rows]

    async def put_artifact(self, artifact: Artifact) -> Artifact:
        """Index a file, creating its folders; overwriting a file keeps its created time.

        Refused with 409 where the path is a folder, an ancestor is a file, or the file there
        has another owner (a release bundle's file is never replaced by an upload).
        """
        return await self.write(self._put_artifact, artifact, changed=lambda stored: [(stored.repo, stored.path)])

    def _put_artifact(self, artifact: Artifact) -> Artifact:
        with one_writer(self._db):
            self._check_no_clash(artifact.repo, artifact.path)
            self._insert_folders(artifact.repo, ancestors(artifact.path), artifact.modified, artifact.modified_by)
            previous = self._stored_artifact(artifact.repo, artifact.path)
            if previous is not None:
                check_owner(previous, artifact.owner)
                artifact = replace(artifact, created=previous.created, created_by=previous.created_by)
            self._db.execute(_PUT_ARTIFACT, artifact.row())
        return artifact

    async def make_folder(self, repo: str, path: str, user: str) -> Folder:
        """Create a folder and its parents (Artifactory's ``PUT repo/path/``); existing is fine."""
        return await self._database.run(self._make_folder, repo, path, user)

    def _make_folder(self, repo: str, path: str, user: str) -> Folder:
        with one_writer(self._db):
            if self._stored_artifact(repo, path) is not None:
                raise Conflict(f"Cannot create folder '{path}': a file with that name exists")
            self._check_ancestors_are_folders(repo, path)
            self._insert_folders(repo, [*ancestors(path), path], now_ms(), user)
            folder = self._get_folder(repo, path)
        assert folder is not None
        return folder

    def _insert_folders(self, repo: str, paths: list[str], created: int, user: str) -> None:
        """Make folders, visible at once (one a bulk change made and still hides, too)."""
        for folder in paths:
            self._db.execute(
                "INSERT INTO folders (repo, path, parent, name, created, created_by)"
                " VALUES (:repo, :path, :parent, :name, :created, :user)"
                " ON CONFLICT (repo, path) DO UPDATE SET pending = NULL WHERE folders.pending IS NOT NULL",
                {"repo": repo, "path": folder, "parent": parent_of(folder), "name": name_of(folder),
                 "created": created, "user": user},
            )  # fmt: skip

    def _check_no_clash(self, repo: str, path: str) -> None:
        if self._db.execute(
            "SELECT 1 FROM folders WHERE repo = :repo AND path = :path", {"repo": repo, "path": path}
        ).fetchone():
            raise Conflict(f"Cannot deploy file '{path}': a folder with that name exists")
        self._check_ancestors_are_folders(repo, path)

    def _check_ancestors_are_folders(self, repo: str, path: str) -> None:
        for folder in ancestors(path):
            if self._stored_artifact(repo, folder) is not None:
                raise Conflict(f"Cannot store '{path}': '{folder}' is a file")

    async def delete(self, repo: str, path: str, *, owner: str) -> list[Artifact]:
        """Remove a file, or a folder with everything below it; answers what was removed.

        Only ``owner``'s files: where the file, or any file below the folder, has another
        owner, nothing is removed (409).
        """
        return await self.write(self._delete, repo, path, owner, changed=lambda gone: [(a.repo, a.path) for a in gone])

    def _delete(self, repo: str, path: str, owner: str) -> list[Artifact]:
        with one_writer(self._db):
            single = self._stored_artifact(repo, path)
            if single is not None:
                check_owner(single, owner)
                self._db.execute(
                    "DELETE FROM artifacts WHERE repo = :repo AND path = :path", {"repo": repo, "path": path}
                )
                return [single]
            if self._get_folder(repo, path) is None:
                raise NotFound()
            lo, hi = _subtree(path)
            below = {"repo": repo, "lo": lo, "hi": hi}
            removed = [
                artifact_of(r)
                for r in self._db.execute(
                    f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE repo = :repo AND path >= :lo AND path < :hi", below
                )
            ]
            for artifact in removed:
                check_owner(artifact, owner)
            self._db.execute("DELETE FROM artifacts WHERE repo = :repo AND path >= :lo AND path < :hi", below)
            self._db.execute("DELETE FROM folders WHERE repo = :repo AND path >= :lo AND path < :hi", below)
            if path:
                self._db.execute(
                    "DELETE FROM folders WHERE repo = :repo AND path = :path", {"repo": repo, "path": path}
                )
            return removed

    # -- listings -----------------------------------------------------------

    async def children(self, repo: str, path: str) -> Listing:
        return await self._database.read(self._children, repo, path)

    def _children(self, repo: str, path: str) -> Listing:
        folders = [
            Folder(*r)
            for r in self._db.execute(
                "SELECT repo, path, created, created_by FROM folders WHERE repo = :repo AND parent = :path"
                f" AND {VISIBLE_FOLDER} ORDER BY name",
                {"repo": repo, "path": path},
            )
        ]
        files = [
            artifact_of(r)
            for r in self._db.execute(
                f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE repo = :repo AND folder = :path AND {VISIBLE_ARTIFACT}"
                " ORDER BY name",
                {"repo": repo, "path": path},
            )
        ]
        return Listing(folders, files)

    async def walk_pages(self, repo: str, path: str) -> AsyncIterator[list[Artifact]]:
        """Every file below a folder in path order, a page at a time: memory stays flat."""
        lo, hi = _subtree(path)
        after = ""
        while True:
            page = await self._database.read(self._files_page, repo, lo, hi, after)
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
            artifact_of(r)
            for r in self._db.execute(
                f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE repo = :repo AND path {op} :start AND path < :hi"
                f" AND {VISIBLE_ARTIFACT} ORDER BY path LIMIT :limit",
                {"repo": repo, "start": start, "hi": hi, "limit": DEEP_LIST_PAGE},
            )
        ]

    # -- blobs and bulk changes -----------------------------------------------

    async def blob_sizes(self, sha256s: list[str]) -> dict[str, int]:
        """The size of each of these blobs that some index entry references, visible or not (so
        storage holds it, and a collect leaves it). Read on the reader thread a page at a time,
        so neither a garbage collection nor a client waits for the other, or for the writer.

        The reader sees every committed write. That is enough for a collect: whatever adds a
        reference to a blob does it under the index lock (``ArtifactService``), which a collect
        holds too, or holds a pin on the blob meanwhile (a bundle's pages: its transaction)."""
        sizes: dict[str, int] = {}
        for start in range(0, len(sha256s), IN_PAGE):
            sizes.update(await self._database.read(self._blob_sizes, sha256s[start : start + IN_PAGE]))
        return sizes

    def _blob_sizes(self, page: list[str]) -> dict[str, int]:
        rows = self._db.execute("SELECT DISTINCT sha256, size FROM artifacts WHERE sha256 IN :shas", {"shas": page})
        return dict(rows.fetchall())

    async def conflicts(self, targets: list[tuple[str, str, str]]) -> list[str]:
        """``repo/path`` of each ``(repo, path, sha256)`` that could not be published as it is
        (``BulkIndex.conflicts``)."""
        return await self.bulk.conflicts(targets)

    async def publish(
        self, artifacts: list[Artifact], repos: list[Repo], *, extra: Callable[[], None] | None = None
    ) -> None:
        """Index many files at once, all visible or none (``BulkIndex.publish``)."""
        await self.bulk.publish(artifacts, repos, extra=extra)
