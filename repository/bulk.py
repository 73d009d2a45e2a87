"""Changes of many index entries at once (a bundle's), a page at a time, visible all at once.

One database transaction for a bundle of 100,000 files holds the writer for seconds, and
every write behind it waits. So a bulk change runs as many short transactions, and what
readers see flips in one (``catalog.VISIBLE_ARTIFACT`` says how):

- **publish**: ``begin_publish`` records the change (one row of ``bulk_changes``) and makes
  the repos it needs, hidden; each ``publish_page`` indexes a page of entries and their
  folders, tagged with the change's key, which readers do not see; ``finish`` deletes the
  change's row, and everything it indexed shows at that instant. Cut short (an error, a
  crash), ``abandon`` removes what the pages indexed (``remove_page`` with the key,
  ``drop_pending`` for folders and repos), then ends the change.
- **unpublish**: ``reassign`` hands the paths another owner claims too to that owner while
  they are still visible; ``begin_unpublish`` records the change, and from that instant
  readers see none of the owner's entries; ``remove_page`` deletes them a page at a time;
  ``finish`` ends the change.

The caller knows the paths a change covers (an edge keeps every path a bundle claims) and
runs one change of an owner at a time; writers of single files see every row, so a path a
bundle is publishing is taken before it shows. Readers never wait for any of this.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .db import Database
from .entries import ARTIFACT_COLUMNS, IN_PAGE, Artifact, Repo, artifact_of, insert_artifacts, now_ms
from .errors import Conflict
from .paths import ancestors, name_of, parent_of
from .sql import Sql
from .write_lock import one_writer

if TYPE_CHECKING:
    from .catalog import Catalog

# Entries per short transaction: small enough that a page takes milliseconds (a write
# behind it barely waits), large enough that the per-transaction cost (a WAL sync) is
# spread over many entries.
PAGE = 1000
PUBLISH = "publish"
UNPUBLISH = "unpublish"

Extra = Callable[[], None] | None


@dataclass(frozen=True)
class BulkChange:
    key: str
    owner: str
    action: str
    started: int


def new_key() -> str:
    """A key no change had before, so a folder it made stays visible once it is done."""
    return secrets.token_hex(12)


def pages(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), PAGE):
        yield items[start : start + PAGE]


def _by_repo(keys: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``(repo, paths)`` in pages of at most ``IN_PAGE`` paths, for ``path IN :paths`` queries."""
    by_repo: dict[str, list[str]] = {}
    for repo, path in keys:
        by_repo.setdefault(repo, []).append(path)
    return [(repo, paths[i : i + IN_PAGE]) for repo, paths in by_repo.items() for i in range(0, len(paths), IN_PAGE)]


class BulkIndex:
    def __init__(self, catalog: Catalog, database: Database) -> None:
        self._catalog = catalog
        self._database = database

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def changes(self) -> list[BulkChange]:
        """Every change in progress (after a restart: those a crash cut short)."""
        return await self._database.run(
            lambda: [
                BulkChange(*r)
                for r in self._db.execute("SELECT key, owner, action, started FROM bulk_changes ORDER BY started, key")
            ]
        )

    # -- checks -----------------------------------------------------------------

    async def conflicts(self, targets: list[tuple[str, str, str]]) -> list[str]:
        """``repo/path`` of each ``(repo, path, sha256)`` that could not be published as it is:
        the path holds other bytes (visible or still being published), is a folder, or lies
        below a file. Checked a page at a time, so other writes get in between."""
        found = []
        for page in pages(targets):
            found += await self._database.run(self._conflicts, page)
        return found

    def _conflicts(self, targets: Sequence[tuple[str, str, str]]) -> list[str]:
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
        """The entries at these ``(repo, path)``s, visible or not, a page of paths per query."""
        found: dict[tuple[str, str], Artifact] = {}
        for repo, page in _by_repo(keys):
            rows = self._db.execute(
                f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE repo = :repo AND path IN :paths",
                {"repo": repo, "paths": page},
            )
            for row in rows.fetchall():
                artifact = artifact_of(row)
                found[artifact.repo, artifact.path] = artifact
        return found

    def _folders_at(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of these ``(repo, path)``s that are folders, visible or not."""
        found: set[tuple[str, str]] = set()
        for repo, page in _by_repo(keys):
            rows = self._db.execute(
                "SELECT path FROM folders WHERE repo = :repo AND path IN :paths", {"repo": repo, "paths": page}
            )
            found.update((repo, path) for (path,) in rows.fetchall())
        return found

    # -- publish ------------------------------------------------------------------

    async def begin_publish(self, key: str, owner: str, repos: list[Repo], *, extra: Extra = None) -> None:
        """Start publishing ``owner``'s entries under ``key``; missing repos are made, hidden until
        ``finish`` (existing ones keep their settings). ``extra`` runs in the same transaction."""
        await self._database.run(self._begin_publish, key, owner, repos, extra)

    def _begin_publish(self, key: str, owner: str, repos: list[Repo], extra: Extra) -> None:
        with one_writer(self._db):
            self._begin(key, owner, PUBLISH)
            now = now_ms()
            self._db.executemany(
                "INSERT INTO repos (key, type, package_type, description, anonymous_read, created, pending)"
                " VALUES (:key, :type, :package_type, :description, :anonymous_read, :created, :pending)"
                " ON CONFLICT (key) DO NOTHING",
                [{"key": r.key, "type": r.type, "package_type": r.package_type, "description": r.description,
                  "anonymous_read": int(r.anonymous_read), "created": r.created or now, "pending": key}
                 for r in repos],
            )  # fmt: skip
            if extra is not None:
                extra()

    def _begin(self, key: str, owner: str, action: str) -> None:
        self._db.execute(
            "INSERT INTO bulk_changes (key, owner, action, started) VALUES (:key, :owner, :action, :started)",
            {"key": key, "owner": owner, "action": action, "started": now_ms()},
        )

    async def publish_page(self, key: str, artifacts: Sequence[Artifact], *, extra: Extra = None) -> None:
        """Index a page of entries, hidden until ``finish``; ``extra`` runs in the same transaction.

        A path that holds other bytes, is a folder or lies below a file (stored, or another
        entry of this change) is refused with 409, and this page changes nothing. A path that
        already holds the same bytes keeps its entry as it is: its owner keeps it, and the
        caller records the second claim (an edge's bundle_files).
        """
        await self._database.run_page(self._publish_page, key, artifacts, extra)

    def _publish_page(self, key: str, artifacts: Sequence[Artifact], extra: Extra) -> None:
        with one_writer(self._db):
            if (
                self._db.execute(
                    "SELECT 1 FROM bulk_changes WHERE key = :key AND action = :action", {"key": key, "action": PUBLISH}
                ).fetchone()
                is None
            ):
                raise Conflict("The publish this page belongs to is no longer in progress")
            keys = [(a.repo, a.path) for a in artifacts]
            existing = self._artifacts_at(keys)
            new = [k for k in keys if k not in existing]
            folders = self._folders_at(new)
            files = set(keys) | set(self._artifacts_at(sorted({(r, f) for r, p in new for f in ancestors(p)})))
            rows: list[dict[str, Any]] = []
            new_folders: dict[tuple[str, str], tuple[int, str]] = {}
            for artifact in artifacts:
                repo, path = artifact.repo, artifact.path
                previous = existing.get((repo, path))
                if previous is not None and previous.sha256 != artifact.sha256:
                    raise Conflict(f"Cannot publish '{repo}/{path}': it holds other content")
                if previous is None and (repo, path) in folders:
                    raise Conflict(f"Cannot deploy file '{path}': a folder with that name exists")
                for folder in ancestors(path):
                    if (repo, folder) in files:  # stored already, or another file of this publish
                        raise Conflict(f"Cannot store '{path}': '{folder}' is a file")
                    new_folders.setdefault((repo, folder), (artifact.modified, artifact.modified_by))
                if previous is None:
                    rows.append(artifact.row() | {"pending": key})
            self._db.executemany(
                "INSERT INTO folders (repo, path, parent, name, created, created_by, pending)"
                " VALUES (:repo, :path, :parent, :name, :created, :created_by, :pending)"
                " ON CONFLICT (repo, path) DO NOTHING",
                [{"repo": repo, "path": f, "parent": parent_of(f), "name": name_of(f), "created": created,
                  "created_by": created_by, "pending": key}
                 for (repo, f), (created, created_by) in new_folders.items()],
            )  # fmt: skip
            self._db.executemany(insert_artifacts("pending"), rows)
            if extra is not None:
                extra()

    async def finish(self, key: str, *, extra: Extra = None) -> None:
        """End a change in one short transaction (with ``extra``): a publish shows everything it
        indexed at this instant; an unpublish (its entries removed by now) is over."""
        await self._database.run(self._finish, key, extra)
        self._catalog.forget_repos()

    def _finish(self, key: str, extra: Extra) -> None:
        with one_writer(self._db):
            self._db.execute("DELETE FROM bulk_changes WHERE key = :key", {"key": key})
            if extra is not None:
                extra()

    async def abandon(self, key: str, owner: str, paths: Sequence[tuple[str, str]]) -> None:
        """Undo a publish cut short: remove the entries its pages indexed at ``paths``, then the
        folders and repos it made, then the change itself. One that went through after all (its
        ``finish`` done as the wait for it was cancelled) is left as it is."""
        if key not in {c.key for c in await self.changes()}:
            return
        for page in pages(paths):
            await self.remove_page(owner, page, key=key)
        await self.end_abandoned(key)

    async def end_abandoned(self, key: str, *, extra: Extra = None) -> None:
        """Once an abandoned publish's entries are removed: remove the folders and repos it made,
        a page at a time, then end the change (with ``extra``)."""
        while await self.drop_pending(key):
            pass
        await self.finish(key, extra=extra)

    async def drop_pending(self, key: str) -> int:
        """Delete a page of the folders an abandoned publish made (and, once none is left, the
        repos it made that hold nothing); answers how many folders went."""
        return await self._database.run_page(self._drop_pending, key)

    def _drop_pending(self, key: str) -> int:
        with one_writer(self._db):
            gone = self._db.execute(
                "DELETE FROM folders WHERE (repo, path) IN"
                " (SELECT repo, path FROM folders WHERE pending = :key LIMIT :limit)",
                {"key": key, "limit": PAGE},
            ).rowcount
            if gone < PAGE:
                self._db.execute(
                    "DELETE FROM repos WHERE pending = :key"
                    " AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.repo = repos.key)"
                    " AND NOT EXISTS (SELECT 1 FROM folders f WHERE f.repo = repos.key)",
                    {"key": key},
                )
        return int(gone)

    async def publish(self, artifacts: list[Artifact], repos: list[Repo], *, extra: Extra = None) -> None:
        """Index many entries in pages, shown all at once; ``extra`` runs with the flip. Refused
        anywhere (409), everything the pages indexed is removed again and nothing shows."""
        key, owner = new_key(), artifacts[0].owner if artifacts else ""
        await self.begin_publish(key, owner, repos)
        try:
            for page in pages(artifacts):
                await self.publish_page(key, page)
            await self.finish(key, extra=extra)
        except BaseException:
            await self.abandon(key, owner, [(a.repo, a.path) for a in artifacts])
            raise

    async def reclaim(self) -> int:
        """After a big removal: hand the database's free pages back (``Database.reclaim``)."""
        return await self._database.reclaim()

    # -- unpublish ------------------------------------------------------------------

    async def reassign(self, owner: str, reassign: Mapping[tuple[str, str], str], *, extra: Extra = None) -> None:
        """Hand ``owner``'s entries at these paths to their new owners, still visible: before an
        unpublish hides ``owner``, the paths another owner claims too become that owner's."""
        await self._catalog.write(self._reassign, owner, reassign, extra, changed=lambda _: reassign.keys())

    def _reassign(self, owner: str, reassign: Mapping[tuple[str, str], str], extra: Extra) -> None:
        with one_writer(self._db):
            self._db.executemany(
                "UPDATE artifacts SET owner = :new WHERE repo = :repo AND path = :path AND owner = :owner",
                [{"new": new, "repo": repo, "path": path, "owner": owner} for (repo, path), new in reassign.items()],
            )
            if extra is not None:
                extra()

    async def begin_unpublish(self, key: str, owner: str, *, extra: Extra = None) -> None:
        """From this instant readers see none of ``owner``'s entries (``extra`` runs in the same
        transaction); ``remove_page`` then deletes them, and ``finish`` ends the change."""
        await self._catalog.write(self._begin_unpublish, key, owner, extra, changed=lambda _: ())
        self._catalog.forget_owner(owner)

    def _begin_unpublish(self, key: str, owner: str, extra: Extra) -> None:
        with one_writer(self._db):
            self._begin(key, owner, UNPUBLISH)
            if extra is not None:
                extra()

    async def remove_page(
        self, owner: str, paths: Sequence[tuple[str, str]], *, key: str | None = None, extra: Extra = None
    ) -> list[str]:
        """Delete ``owner``'s entries at a page of paths (with ``key``: only those that change
        indexed), ``extra`` in the same transaction; answers the sha256 of each entry removed."""
        return await self._database.run_page(self._remove_page, owner, paths, key, extra)

    def _remove_page(self, owner: str, paths: Sequence[tuple[str, str]], key: str | None, extra: Extra) -> list[str]:
        which = "owner = :owner" if key is None else "owner = :owner AND pending = :key"
        gone: dict[tuple[str, str], str] = {}
        with one_writer(self._db):
            for repo, page in _by_repo(list(paths)):
                rows = self._db.execute(
                    f"DELETE FROM artifacts WHERE repo = :repo AND path IN :paths AND {which} RETURNING path, sha256",
                    {"repo": repo, "paths": page, "owner": owner, "key": key},
                )
                gone.update(((repo, path), sha256) for path, sha256 in rows.fetchall())
            if extra is not None:
                extra()
        return [gone.pop((repo, path)) for repo, path in paths if (repo, path) in gone]
