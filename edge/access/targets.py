"""Permission targets in Artifactory's v2 JSON shape: validated, stored, and loaded for evaluation.

```
{"name": "releases",
 "repo": {"repositories": ["releases-*"], "include-patterns": ["**"], "exclude-patterns": [],
          "actions": {"users": {"alice": ["read", "write"]}, "groups": {"ci": ["read"]}}}}
```

Every change is written to sqlite, then the node's ``Permissions`` are replaced as
a whole, so a request sees either the old targets or the new ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from repository.catalog import now_ms
from repository.db import Database
from repository.permissions import ANONYMOUS_USER, ANY_REPO, Action, Permissions, PermissionTarget, parse_action

TARGET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REPO_PATTERN_RE = re.compile(r"[A-Za-z0-9*?\[\]!._-]{1,64}")
PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 1024
MAX_PRINCIPALS = 1000
_TOP_KEYS = {"name", "repo"}
_REPO_KEYS = {"repositories", "include-patterns", "exclude-patterns", "actions"}


class TargetError(ValueError):
    """A permission target that cannot be stored; the message names the field."""


def check_target_name(name: str) -> str:
    if not TARGET_NAME_RE.fullmatch(name):
        raise TargetError(f"Invalid permission target name {name!r}: letters, digits and . _ - (at most 64)")
    return name


def parse_target(name: str, body: Mapping[str, Any]) -> PermissionTarget:
    """A target from its JSON; any field that is not as documented is refused, naming it."""
    check_target_name(name)
    unknown = sorted(set(body) - _TOP_KEYS)
    if unknown:
        raise TargetError(f"Unknown field '{unknown[0]}': an edge has repository permission targets only")
    if body.get("name", name) != name:
        raise TargetError("'name' in the body differs from the name in the URL")
    repo = body.get("repo")
    if not isinstance(repo, dict):
        raise TargetError("'repo' must be an object with 'repositories'")
    unknown = sorted(set(repo) - _REPO_KEYS)
    if unknown:
        raise TargetError(f"Unknown field 'repo.{unknown[0]}'")
    repositories = _strings(repo.get("repositories"), "repo.repositories", allow_empty_items=False)
    if not repositories:
        raise TargetError("'repo.repositories' must name at least one repository (or ANY)")
    for key in repositories:
        if key not in ANY_REPO and not REPO_PATTERN_RE.fullmatch(key):
            raise TargetError(f"Invalid repository or pattern {key!r} in 'repo.repositories'")
    includes = _strings(repo.get("include-patterns", ["**"]), "repo.include-patterns")
    excludes = _strings(repo.get("exclude-patterns", []), "repo.exclude-patterns")
    actions = repo.get("actions", {})
    if not isinstance(actions, dict) or set(actions) - {"users", "groups"}:
        raise TargetError("'repo.actions' must be an object with 'users' and/or 'groups'")
    return PermissionTarget(
        name=name,
        repositories=tuple(dict.fromkeys(repositories)),
        include_patterns=tuple(p for p in includes if p) or ("**",),
        exclude_patterns=tuple(p for p in excludes if p),
        users=_grants(actions.get("users", {}), "repo.actions.users"),
        groups=_grants(actions.get("groups", {}), "repo.actions.groups"),
    )


def _strings(value: Any, where: str, *, allow_empty_items: bool = True) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise TargetError(f"'{where}' must be a list of at most {MAX_PATTERNS} strings")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_PATTERN_LENGTH or (not item and not allow_empty_items):
            raise TargetError(f"'{where}' must hold strings of 1 to {MAX_PATTERN_LENGTH} characters")
        if any(ord(ch) < 32 for ch in item):
            raise TargetError(f"'{where}' may not hold control characters")
    return value


def _grants(value: Any, where: str) -> dict[str, frozenset[Action]]:
    if not isinstance(value, dict) or len(value) > MAX_PRINCIPALS:
        raise TargetError(f"'{where}' must be an object of names to action lists")
    grants: dict[str, frozenset[Action]] = {}
    for who, names in value.items():
        if not PRINCIPAL_RE.fullmatch(who):
            raise TargetError(f"Invalid name {who!r} in '{where}'")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TargetError(f"'{where}.{who}' must be a list of actions")
        try:
            actions = frozenset(parse_action(n) for n in names)
        except ValueError as exc:
            raise TargetError(f"'{where}.{who}': {exc}") from None
        if who == ANONYMOUS_USER and where.endswith("users") and actions - {Action.read}:
            raise TargetError("'anonymous' may only be granted read")
        grants[who] = actions
    return grants


def target_json(target: PermissionTarget) -> dict[str, Any]:
    def actions(grants: Mapping[str, frozenset[Action]]) -> dict[str, list[str]]:
        return {who: sorted(a.value for a in acts) for who, acts in sorted(grants.items())}

    return {
        "name": target.name,
        "repo": {
            "include-patterns": list(target.include_patterns),
            "exclude-patterns": list(target.exclude_patterns),
            "repositories": list(target.repositories),
            "actions": {"users": actions(target.users), "groups": actions(target.groups)},
        },
    }


class TargetStore:
    """The node's permission targets: sqlite for keeping, ``Permissions`` for deciding."""

    def __init__(self, database: Database, permissions: Permissions) -> None:
        self._database = database
        self.permissions = permissions
        database.copies.register(self.load)  # another process changed a target

    async def load(self) -> None:
        rows = await self._database.read(
            lambda: self._database.db.execute("SELECT name, body FROM permission_targets ORDER BY name").fetchall()
        )
        self.permissions.replace(parse_target(name, json.loads(body)) for name, body in rows)

    def get(self, name: str) -> PermissionTarget | None:
        return next((t for t in self.permissions.targets if t.name == name), None)

    async def put(self, target: PermissionTarget) -> bool:
        """Create or replace; answers whether it was created."""
        created = self.get(target.name) is None
        body = json.dumps(target_json(target), sort_keys=True)
        stamp = now_ms()
        await self._database.run(
            self._database.db.execute,
            "INSERT INTO permission_targets (name, body, created, modified) VALUES (:name, :body, :stamp, :stamp)"
            " ON CONFLICT (name) DO UPDATE SET body = excluded.body, modified = excluded.modified",
            {"name": target.name, "body": body, "stamp": stamp},
        )
        self.permissions.replace([*(t for t in self.permissions.targets if t.name != target.name), target])
        self._database.changed()
        return created

    async def delete(self, name: str) -> bool:
        if self.get(name) is None:
            return False
        await self._database.run(
            self._database.db.execute, "DELETE FROM permission_targets WHERE name = :name", {"name": name}
        )
        self.permissions.replace(t for t in self.permissions.targets if t.name != name)
        self._database.changed()
        return True
