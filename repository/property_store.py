"""Changing and searching files' properties in the catalog.

A file's properties live in its row's ``properties`` JSON, the one source of truth; the
``properties`` table (migration ``m005_properties``) is derived from it by the database and
serves searches by key and value from an index. A change of a folder with ``recursive``
runs a page of files per transaction, so memory stays flat whatever the number of files;
it is checked over every file first, so a change that breaks a limit anywhere changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import ARTIFACT_COLUMNS, DEEP_LIST_PAGE, VISIBLE_ARTIFACT, Artifact, Catalog, artifact_of
from .errors import BadRequest, NotFound
from .property_syntax import Properties, PropertySyntaxError, check_properties
from .write_lock import one_writer


@dataclass(frozen=True)
class PropertyChange:
    """What to do to each file: replace keys' values (``put``; None removes the key, as
    Artifactory's metadata PATCH says it), and remove keys (``remove``)."""

    put: Mapping[str, list[str] | None] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    def applied(self, props: Mapping[str, list[str]]) -> Properties:
        result = {k: list(v) for k, v in props.items() if k not in self.remove}
        for key, values in self.put.items():
            if values is None:
                result.pop(key, None)
            else:
                result[key] = list(dict.fromkeys(values))
        return result


class PropertyStore:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @property
    def _db(self) -> Any:
        return self._catalog.database.db

    async def change(self, repo: str, path: str, change: PropertyChange, *, recursive: bool) -> int:
        """Apply ``change`` to the file at ``path``, or (``recursive``) to every file below the
        folder at ``path``; answers how many files were changed. 404 when there is nothing there."""
        catalog = self._catalog
        if await catalog.get_artifact(repo, path) is not None:
            return len(await catalog.write(self._change_page, repo, [path], change, changed=_paths(repo)))
        if await catalog.get_folder(repo, path) is None:
            raise NotFound()
        if not recursive:
            raise BadRequest("Folders hold no properties of their own: use recursive=1 to change their files")
        async for page in catalog.walk_pages(repo, path):  # every file first: all or nothing
            for artifact in page:
                _checked(change, artifact)
        changed = 0
        async for page in catalog.walk_pages(repo, path):
            done = await catalog.write(self._change_page, repo, [a.path for a in page], change, changed=_paths(repo))
            changed += len(done)
        return changed

    def _change_page(self, repo: str, paths: list[str], change: PropertyChange) -> list[str]:
        """One transaction: each file's properties read, changed and written back, so a change
        made meanwhile by another writer is never lost."""
        done = []
        with one_writer(self._db):
            rows = self._db.execute(
                f"SELECT {ARTIFACT_COLUMNS} FROM artifacts"
                f" WHERE repo = :repo AND path IN :paths AND {VISIBLE_ARTIFACT}",
                {"repo": repo, "paths": paths},
            ).fetchall()
            for artifact in map(artifact_of, rows):
                props = _checked(change, artifact)
                if props != artifact.properties:
                    self._db.execute(
                        "UPDATE artifacts SET properties = :props WHERE repo = :repo AND path = :path",
                        {"props": json.dumps(props, sort_keys=True), "repo": repo, "path": artifact.path},
                    )
                done.append(artifact.path)
        return done

    async def search(self, criteria: Mapping[str, list[str]], repos: list[str] | None) -> AsyncIterator[Artifact]:
        """Every file that has, for each key of ``criteria``, one of its values, in (repo, path)
        order, a page at a time from the property index."""
        if not criteria:
            return
        after = ("", "")
        while True:
            page = await self._catalog.database.read(self._search_page, dict(criteria), repos, after)
            for artifact in page:
                yield artifact
            if len(page) < DEEP_LIST_PAGE:
                return
            after = (page[-1].repo, page[-1].path)

    def _search_page(
        self, criteria: dict[str, list[str]], repos: list[str] | None, after: tuple[str, str]
    ) -> list[Artifact]:
        params: dict[str, Any] = {"repo": after[0], "path": after[1], "limit": DEEP_LIST_PAGE}
        clauses = []
        for i, (key, values) in enumerate(criteria.items()):
            params[f"k{i}"], params[f"v{i}"] = key, values
            clauses.append(
                f"EXISTS (SELECT 1 FROM properties p WHERE p.repo = artifacts.repo AND p.path = artifacts.path"
                f" AND p.key = :k{i} AND p.value IN :v{i})"
            )
        first_key = (
            "(artifacts.repo, artifacts.path) IN (SELECT repo, path FROM properties WHERE key = :k0 AND value IN :v0)"
        )
        if repos is not None:
            params["repos"] = repos
            clauses.append("artifacts.repo IN :repos")
        rows = self._db.execute(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE {first_key} AND {' AND '.join(clauses)}"
            f" AND (artifacts.repo, artifacts.path) > (:repo, :path) AND {VISIBLE_ARTIFACT}"
            " ORDER BY artifacts.repo, artifacts.path LIMIT :limit",
            params,
        )
        return [artifact_of(r) for r in rows]


def _checked(change: PropertyChange, artifact: Artifact) -> Properties:
    try:
        return check_properties(change.applied(artifact.properties))
    except PropertySyntaxError as exc:
        raise PropertySyntaxError(f"{artifact.repo}/{artifact.path}: {exc.message}") from None


def _paths(repo: str) -> Any:
    return lambda done: [(repo, p) for p in done]
