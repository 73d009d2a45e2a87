"""What the index holds (repos, entries, folders) and how an entry's row reads back: the
types every query of the catalog answers with (``repository.catalog``, ``repository.bulk``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .paths import name_of, parent_of

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

    @cached_property
    def derived(self) -> dict[Any, Any]:
        """What is worked out from this entry to serve it (its response headers, say), kept with
        it: an entry never changes, and the catalog's cache drops it when its path is written."""
        return {}

    def row(self) -> dict[str, Any]:
        """The row's columns by name (spelled out: ``asdict`` deep-copies, ten times slower)."""
        return {
            "repo": self.repo, "path": self.path, "folder": parent_of(self.path), "name": self.name,
            "sha256": self.sha256, "sha1": self.sha1, "md5": self.md5, "size": self.size,
            "mime_type": self.mime_type, "created": self.created, "created_by": self.created_by,
            "modified": self.modified, "modified_by": self.modified_by, "owner": self.owner,
            "properties": json.dumps(self.properties, sort_keys=True),
        }  # fmt: skip


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


ARTIFACT_COLUMNS = (
    "repo, path, sha256, sha1, md5, size, mime_type, created, created_by, modified, modified_by, owner, properties"
)
# The columns of ``Artifact.row()``, in its order.
ROW_COLUMNS = (
    "repo", "path", "folder", "name", "sha256", "sha1", "md5", "size", "mime_type",
    "created", "created_by", "modified", "modified_by", "owner", "properties",
)  # fmt: skip


def insert_artifacts(*extra: str) -> str:
    """``INSERT INTO artifacts`` of an ``Artifact.row()`` (and the ``extra`` columns), named parameters."""
    columns = (*ROW_COLUMNS, *extra)
    return f"INSERT INTO artifacts ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def artifact_of(row: tuple[Any, ...]) -> Artifact:
    values = list(row)
    values[-1] = json.loads(values[-1])
    return Artifact(*values)
