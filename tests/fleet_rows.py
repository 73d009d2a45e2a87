"""Devices, apps and distribution records as rows, for the rollout side's tests.

The device side (enrollment, check-in) fills these tables in a running fleet; the rollout
side only reads them, so its tests write the rows themselves: a device with its tags, its
installed apps and a credential whose sha256 is stored, an app, an edge's Completed record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from repository.catalog import now_ms
from repository.db import Database
from repository.http.setup import database
from wire.fleet import device_headers


def _database(where: web.Application | Database) -> Database:
    return where if isinstance(where, Database) else where[database]


def credential_of(name: str) -> str:
    return f"credential-of-{name}"


def device_auth(name: str) -> dict[str, str]:
    """The headers of a call made by device ``name``."""
    return device_headers(credential_of(name))


async def add_device(
    app: web.Application | Database,
    name: str,
    group: str = "pos",
    tags: dict[str, str] | None = None,
    apps: dict[str, str | None] | None = None,
    revoked: bool = False,
) -> str:
    """An enrolled device (id ``dev-<name>``) with its tags and the app versions it reports."""
    db = _database(app)
    device_id = f"dev-{name}"
    at = now_ms()

    def insert() -> None:
        with db.db.atomic():
            db.db.execute(
                "INSERT INTO fleet_devices (id, name, grp, credential_sha256, token_id, enrolled, revoked,"
                " poll_interval, last_seen) VALUES (:id, :name, :grp, :sha, 'token', :at, :revoked, 30, :at)",
                {
                    "id": device_id,
                    "name": name,
                    "grp": group,
                    "sha": hashlib.sha256(credential_of(name).encode()).hexdigest(),
                    "at": at,
                    "revoked": at if revoked else None,
                },
            )
            db.db.executemany(
                "INSERT INTO fleet_device_tags (device_id, key, value) VALUES (:id, :key, :value)",
                [{"id": device_id, "key": k, "value": v} for k, v in (tags or {}).items()],
            )
            db.db.executemany(
                "INSERT INTO fleet_device_apps (device_id, app, version) VALUES (:id, :app, :version)",
                [{"id": device_id, "app": k, "version": v} for k, v in (apps or {}).items()],
            )

    await db.run(insert)
    return device_id


async def add_devices(app: web.Application | Database, count: int, group: str = "pos", **fields: Any) -> list[str]:
    return [await add_device(app, f"{group}-{n:05d}", group, **fields) for n in range(count)]


async def add_app(app: web.Application | Database, name: str = "till", bundle: str = "app") -> None:
    db = _database(app)
    at = now_ms()
    await db.run(
        db.db.execute,
        "INSERT INTO fleet_apps (name, bundle, install_dir, pre_install, restart, health_command, health_url,"
        " health_timeout, keep, created, modified) VALUES (:name, :bundle, '/opt/till', NULL,"
        " 'systemctl restart till', NULL, 'http://127.0.0.1:9000/health', 30, 3, :at, :at)",
        {"name": name, "bundle": bundle, "at": at},
    )


async def completed_on(app: web.Application | Database, edge: str, service_id: str, bundle: str, version: str) -> None:
    """A distribution record saying ``edge`` holds the bundle version (its job Completed)."""
    db = _database(app)

    def insert() -> None:
        with db.db.atomic():
            dist_id = db.db.scalar(
                "INSERT INTO distributions (friendly_id, type, name, version, rules, on_success, created, finished)"
                " VALUES (1, 'distribute', :name, :version, :rules, 'keep', :at, :at) RETURNING id",
                {"name": bundle, "version": version, "rules": json.dumps([]), "at": now_ms()},
            )
            db.db.execute(
                "INSERT INTO distribution_jobs (distribution_id, edge, service_id, state, total_files, total_bytes)"
                " VALUES (:id, :edge, :service_id, 'Completed', 0, 0)",
                {"id": dist_id, "edge": edge, "service_id": service_id},
            )

    await db.run(insert)
