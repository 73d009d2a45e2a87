"""Apps: how a device installs each one (``wire.fleet.AppSpec``): its bundle, where it goes,
and the commands around the switch. Deployments name an app; the agent runs exactly what
the app's definition here says, never a command from anywhere else.

Creating an app again with the same fields is a success (a retry after a time-out); the
same name with other fields is a 409 unless it is replaced on purpose (``PUT``). What may
stop a deletion (a deployment that uses the app) is the rollout side's to say, through
``add_delete_check``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from repository.db import Database
from repository.entries import now_ms
from repository.errors import BadRequest, Conflict, NotFound
from wire.fleet import AppSpec, HealthCheck

APP_FIELDS = frozenset({"name", "bundle", "install_dir", "pre_install", "restart", "health", "keep"})
HEALTH_FIELDS = frozenset({"command", "url", "timeout"})
_COLUMNS = "name, bundle, install_dir, pre_install, restart, health_command, health_url, health_timeout, keep"

# Raises (a Conflict) when the app named may not be deleted now.
DeleteCheck = Callable[[str], Awaitable[None]]


def parse_app(body: dict[str, Any], name: str | None = None) -> AppSpec:
    """An app definition from a request body, strictly: unknown fields refused, a health check
    with exactly one of a command or a URL. ``name``: the one in the URL, which the body may repeat."""
    if name is not None:
        body = {"name": name, **body}
        if body["name"] != name:
            raise BadRequest(f"Invalid app name: the body says {body['name']!r}, the URL {name!r}")
    if unknown := sorted(set(body) - APP_FIELDS):
        raise BadRequest(f"Unknown field {unknown[0]!r}; an app has {', '.join(sorted(APP_FIELDS))}")
    health = body.get("health")
    if isinstance(health, dict):
        if unknown := sorted(set(health) - HEALTH_FIELDS):
            raise BadRequest(f"Unknown field 'health.{unknown[0]}'; a health check has command, url, timeout")
        if (health.get("command") is None) == (health.get("url") is None):
            raise BadRequest("Invalid health: give a command or a url, one of them")
    spec = AppSpec.from_json(body)  # its InvalidInput is a 400 naming the field
    if (
        spec.health is not None
        and spec.health.url is not None
        and not spec.health.url.startswith(("http://", "https://"))
    ):
        raise BadRequest("Invalid health url: must start with http:// or https://")
    return spec


def app_json(spec: AppSpec) -> dict[str, Any]:
    return asdict(spec)


def _spec(row: Any) -> AppSpec:
    name, bundle, install_dir, pre_install, restart, command, url, timeout, keep = row
    health = None if command is None and url is None else HealthCheck(command, url, timeout)
    return AppSpec(name, bundle, install_dir, pre_install, restart, health, keep)


def _row(spec: AppSpec, now: int) -> dict[str, Any]:
    health = spec.health or HealthCheck()  # none: NULL command and url (the timeout column is NOT NULL)
    fields = {k: v for k, v in asdict(spec).items() if k != "health"}
    return {
        **fields,
        "health_command": health.command,
        "health_url": health.url,
        "health_timeout": health.timeout,
        "now": now,
    }


class AppStore:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._delete_checks: list[DeleteCheck] = []

    def add_delete_check(self, check: DeleteCheck) -> None:
        """``check(name)`` runs before an app is deleted and raises to stop it (a deployment uses it)."""
        self._delete_checks.append(check)

    async def get_app(self, name: str) -> AppSpec | None:
        return await self._database.read(self._get, name)

    def _get(self, name: str) -> AppSpec | None:
        row = self._database.db.execute(f"SELECT {_COLUMNS} FROM fleet_apps WHERE name = :name", {"name": name})
        found = row.fetchone()
        return None if found is None else _spec(found)

    async def list(self) -> list[AppSpec]:
        rows = await self._database.read(
            lambda: self._database.db.execute(f"SELECT {_COLUMNS} FROM fleet_apps ORDER BY name").fetchall()
        )
        return [_spec(r) for r in rows]

    async def create(self, spec: AppSpec) -> bool:
        """Store a new app; True when it is new, False when the same one is there already (409 if another)."""
        return await self._database.run(self._put, spec, False, now_ms())

    async def put(self, spec: AppSpec) -> bool:
        """Create or replace the app; True when it is new. Devices get the new definition with
        their next action (what they installed stays as it was installed)."""
        return await self._database.run(self._put, spec, True, now_ms())

    def _put(self, spec: AppSpec, replace: bool, now: int) -> bool:
        db = self._database.db
        with db.atomic():
            existing = self._get(spec.name)
            if existing == spec:
                return False
            if existing is not None and not replace:
                raise Conflict(f"App {spec.name!r} exists with other settings; replace it with PUT")
            if existing is None:
                db.execute(
                    f"INSERT INTO fleet_apps ({_COLUMNS}, created, modified) VALUES (:name, :bundle, :install_dir,"
                    " :pre_install, :restart, :health_command, :health_url, :health_timeout, :keep, :now, :now)",
                    _row(spec, now),
                )
                return True
            db.execute(
                "UPDATE fleet_apps SET bundle = :bundle, install_dir = :install_dir, pre_install = :pre_install,"
                " restart = :restart, health_command = :health_command, health_url = :health_url,"
                " health_timeout = :health_timeout, keep = :keep, modified = :now WHERE name = :name",
                _row(spec, now),
            )
            return False

    async def delete(self, name: str) -> None:
        for check in self._delete_checks:
            await check(name)
        cursor = await self._database.run(
            self._database.db.execute, "DELETE FROM fleet_apps WHERE name = :name", {"name": name}
        )
        if not cursor.rowcount:
            raise NotFound(f"No app {name!r}")
