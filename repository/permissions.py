"""Who may do what where: roles as coarse defaults, permission targets to narrow and grant.

The rule, in order (README, "Roles and permission targets"):

1. The admin role may do everything.
2. Anonymous callers may only read, and only in repos that allow anonymous reads.
3. Where a permission target covers the path (its repositories match the repo, an
   include pattern matches the path and no exclude pattern does), only what the
   covering targets grant counts: to the caller's user name, to one of its groups,
   or to ``anonymous``. The role's defaults do not apply there.
4. Elsewhere the role's defaults apply: reader and distributor read, deployer
   reads and deploys (``write``); delete and manage are the admin's.

Evaluation is in memory: targets are few and change rarely, and a download asks once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .catalog import Repo
from .tokens import Principal, Role

ANONYMOUS_USER = "anonymous"
ANY_REPO = frozenset({"ANY", "ANY LOCAL"})
# Decisions remembered while targets exist (a hot file is asked about again and again);
# forgotten whenever the targets change, and all at once when this many are held.
DECISION_CACHE_ENTRIES = 100_000


class Action(StrEnum):
    read = "read"
    write = "write"  # deploy
    delete = "delete"
    manage = "manage"  # read the audit trail of the repos the target names
    annotate = "annotate"  # accepted for Artifactory's vocabulary; nothing on an edge needs it


# Whether the caller may read this path of this repo: what a download of it would decide.
Readable = Callable[[Repo, str], bool]

# Artifactory's UI and v1 API say "deploy" where v2 says "write".
ACTION_ALIASES = {"deploy": Action.write}

ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.reader: frozenset({Action.read}),
    Role.distributor: frozenset({Action.read}),
    Role.deployer: frozenset({Action.read, Action.write, Action.annotate}),
    Role.admin: frozenset(Action),
}


def parse_action(name: str) -> Action:
    """An action by its Artifactory name; ValueError names the ones accepted."""
    if name in ACTION_ALIASES:
        return ACTION_ALIASES[name]
    try:
        return Action(name)
    except ValueError:
        accepted = ", ".join([*Action.__members__, *ACTION_ALIASES])
        raise ValueError(f"unknown action {name!r}; expected one of {accepted}") from None


def ant_pattern(pattern: str) -> re.Pattern[str]:
    """Artifactory's Ant-style path pattern as a regex: ``**`` spans folders, ``*`` and ``?`` do not.

    A pattern ending in ``/`` means everything below that folder.
    """
    if pattern.endswith("/"):
        pattern += "**"
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True)
class PermissionTarget:
    name: str
    # repo keys, fnmatch patterns over keys (``releases-*``), or ANY / ANY LOCAL
    repositories: tuple[str, ...]
    include_patterns: tuple[str, ...] = ("**",)
    exclude_patterns: tuple[str, ...] = ()
    users: Mapping[str, frozenset[Action]] = field(default_factory=dict)
    groups: Mapping[str, frozenset[Action]] = field(default_factory=dict)
    _includes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _excludes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        includes = tuple(ant_pattern(p) for p in self.include_patterns if p) or (ant_pattern("**"),)
        object.__setattr__(self, "_includes", includes)
        object.__setattr__(self, "_excludes", tuple(ant_pattern(p) for p in self.exclude_patterns if p))

    def names_repo(self, repo: str) -> bool:
        return any(r in ANY_REPO or fnmatch.fnmatchcase(repo, r) for r in self.repositories)

    def covers_path(self, path: str) -> bool:
        return any(p.fullmatch(path) for p in self._includes) and not any(p.fullmatch(path) for p in self._excludes)

    def grants(self, principal: Principal, action: Action) -> bool:
        user = principal.subject if principal.authenticated else ANONYMOUS_USER
        if action in self.users.get(user, ()):
            return True
        return principal.authenticated and any(action in self.groups.get(g, ()) for g in principal.groups)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # what decided it, for the audit trail: "role deployer", "target 'releases'", ...
    rule: str


_ALLOWED_BY_ROLE = {role: Decision(True, f"role {role.value}") for role in Role}


class Permissions:
    """The node's permission targets, replaced as a whole when one changes."""

    def __init__(self, targets: Iterable[PermissionTarget] = ()) -> None:
        self.replace(targets)

    def replace(self, targets: Iterable[PermissionTarget]) -> None:
        self._targets = tuple(targets)
        self._by_repo: dict[str, tuple[PermissionTarget, ...]] = {}
        self._decisions: dict[tuple[Principal, Action, Repo, str], Decision] = {}
        # an anonymous read allowed by the repo alone, by repo key: the decision every anonymous
        # download asks for, made once rather than per request (only repos that allow it get here)
        self._open_reads: dict[str, Decision] = {}

    @property
    def targets(self) -> tuple[PermissionTarget, ...]:
        return self._targets

    def for_repo(self, repo: str) -> tuple[PermissionTarget, ...]:
        found = self._by_repo.get(repo)
        if found is None:
            found = self._by_repo[repo] = tuple(t for t in self._targets if t.names_repo(repo))
        return found

    def decide(self, principal: Principal, action: Action, repo: Repo, path: str) -> Decision:
        if not self._targets:
            return self._decide(principal, action, repo, path)
        key = (principal, action, repo, path)
        found = self._decisions.get(key)
        if found is None:
            if len(self._decisions) >= DECISION_CACHE_ENTRIES:
                self._decisions = {}
            found = self._decisions[key] = self._decide(principal, action, repo, path)
        return found

    def _decide(self, principal: Principal, action: Action, repo: Repo, path: str) -> Decision:
        if principal.role is Role.admin:
            return _ALLOWED_BY_ROLE[Role.admin]
        if not principal.authenticated:
            if action is not Action.read:
                return Decision(False, f"anonymous may not {action.value}")
            if not repo.anonymous_read:
                return Decision(False, f"repo '{repo.key}' has anonymous read off")
        covering = [t for t in self.for_repo(repo.key) if t.covers_path(path)] if self._targets else []
        if covering:
            for target in covering:
                if target.grants(principal, action):
                    return Decision(True, f"target '{target.name}'")
            names = ", ".join(f"'{t.name}'" for t in covering)
            return Decision(False, f"target {names} grants no {action.value} to '{principal.subject}'")
        if principal.role is None:
            found = self._open_reads.get(repo.key)
            if found is None:
                found = self._open_reads[repo.key] = Decision(True, f"repo '{repo.key}' allows anonymous read")
            return found
        if action in ROLE_ACTIONS[principal.role]:
            return _ALLOWED_BY_ROLE[principal.role]
        return Decision(False, f"role {principal.role.value} has no {action.value}")

    def may_manage_repo(self, principal: Principal, repo: str) -> bool:
        """Admins, and callers some target naming ``repo`` grants ``manage``."""
        if principal.role is Role.admin:
            return True
        return any(t.grants(principal, Action.manage) for t in self.for_repo(repo))
