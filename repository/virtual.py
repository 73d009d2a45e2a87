"""Virtual repositories: one key over an ordered list of member repos, resolved first hit wins.

What lives here is what the artifact API needs to serve a virtual repo, free of any storage:
the configuration's shape and its checks (members known, no cycle, at most ``MAX_MEMBERS``,
no duplicates), the expansion of nested virtual repos into the local (or remote) repos they
stand for, and the merge of the members' listings, in which the first member holding a
path wins and folders are the union. The node keeps the configuration (an edge in its own
table, ``edge/virtual_repos.py``) behind the ``VirtualRepos`` interface.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from wire.errors import InvalidPath
from wire.paths import check_repo_key

from .entries import Repo

# Artifactory sets no limit; this one bounds the work of one download (a lookup per member).
MAX_MEMBERS = 32
VIRTUAL = "VIRTUAL"

T = TypeVar("T")


class VirtualConfigError(ValueError):
    """A configuration that cannot be stored; its message says what is wrong."""


@dataclass(frozen=True)
class VirtualRepo:
    key: str
    members: tuple[str, ...]
    description: str = ""
    anonymous_read: bool = False
    created: int = 0

    def json(self) -> dict[str, object]:
        """Artifactory's configuration of a virtual repo (GET, and the answer to PUT and POST)."""
        return {
            "key": self.key,
            "rclass": "virtual",
            "packageType": "generic",
            "description": self.description,
            "repositories": list(self.members),
            "anonymousRead": self.anonymous_read,
            "repoLayoutRef": "simple-default",
        }

    def as_repo(self) -> Repo:
        """The repo the permission checks judge: targets name the virtual key, as for any repo."""
        return Repo(self.key, VIRTUAL, "generic", self.description, self.anonymous_read, self.created)


class VirtualRepos(ABC):
    """The node's virtual repos, as the artifact API reads them (kept current across processes)."""

    @abstractmethod
    def get(self, key: str) -> VirtualRepo | None:
        """The virtual repo named ``key``, or None when ``key`` is not one."""

    @abstractmethod
    def all(self) -> list[VirtualRepo]:
        """Every virtual repo, by key."""

    def expand(self, key: str) -> list[str]:
        """The non-virtual repos ``key`` resolves through, in order, each once (nested virtual
        repos replaced by their own members)."""
        return expand(key, self.get)


def check_members(
    key: str,
    members: object,
    *,
    exists: Callable[[str], bool],
    lookup: Callable[[str], VirtualRepo | None],
) -> tuple[str, ...]:
    """The member list of virtual repo ``key`` if it may be stored: a list of at most
    ``MAX_MEMBERS`` distinct valid keys of existing repos (``exists``), not ``key`` itself and
    no virtual repo that lists ``key``, however deep (a cycle). Empty is allowed: it resolves
    nothing, as in Artifactory."""
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise VirtualConfigError("'repositories' must be a list of repository keys")
    if len(members) > MAX_MEMBERS:
        raise VirtualConfigError(f"A virtual repository has at most {MAX_MEMBERS} repositories, not {len(members)}")
    seen: set[str] = set()
    for member in members:
        try:
            check_repo_key(member)
        except InvalidPath as exc:
            raise VirtualConfigError(str(exc)) from None
        if member in seen:
            raise VirtualConfigError(f"Repository '{member}' is listed twice")
        seen.add(member)
        if member == key:
            raise VirtualConfigError(f"Virtual repository '{key}' cannot include itself")
        nested = lookup(member)
        if nested is None and not exists(member):
            raise VirtualConfigError(f"Repository '{member}' does not exist")
        if nested is not None and key in _reachable(member, lookup):
            raise VirtualConfigError(f"Including '{member}' in '{key}' would make a cycle")
    return tuple(members)


def _reachable(key: str, lookup: Callable[[str], VirtualRepo | None]) -> set[str]:
    """Every repo key reachable from virtual repo ``key`` through nested members."""
    found: set[str] = set()
    todo = [key]
    while todo:
        repo = lookup(todo.pop())
        for member in repo.members if repo is not None else ():
            if member not in found:
                found.add(member)
                todo.append(member)
    return found


def expand(key: str, lookup: Callable[[str], VirtualRepo | None]) -> list[str]:
    """The non-virtual members of ``key`` in resolution order, depth first, each once. A stored
    configuration has no cycle; the guard only keeps a bad row from looping."""
    order: list[str] = []
    visited: set[str] = set()

    def visit(current: str) -> None:
        visited.add(current)
        repo = lookup(current)
        for member in repo.members if repo is not None else ():
            if member in visited:
                continue
            if lookup(member) is None:
                visited.add(member)
                order.append(member)
            else:
                visit(member)

    visit(key)
    return order


def first_wins(listings: Iterable[Iterable[tuple[str, T]]]) -> list[tuple[str, T]]:
    """The union of the members' ``(name, entry)`` listings, in their order: a name present in
    several keeps the entry of the first member that has it. Sorted by name."""
    merged: dict[str, T] = {}
    for listing in listings:
        for name, entry in listing:
            merged.setdefault(name, entry)
    return sorted(merged.items(), key=lambda item: item[0])


async def merge_sorted(streams: Sequence[AsyncIterator[tuple[str, T]]]) -> AsyncIterator[tuple[str, T]]:
    """The same union as ``first_wins`` over streams each sorted by name, as a stream: one entry
    per stream in memory, so a deep listing of huge members stays flat."""
    heap: list[tuple[str, int, T]] = []

    async def push(index: int) -> None:
        item = await anext(streams[index], None)
        if item is not None:
            heapq.heappush(heap, (item[0], index, item[1]))

    for index in range(len(streams)):
        await push(index)
    last: str | None = None
    while heap:
        name, index, entry = heapq.heappop(heap)
        await push(index)
        if name != last:  # equal names pop in member order: the first member's comes first
            last = name
            yield name, entry
