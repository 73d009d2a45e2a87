"""What runs where: the runtime inventory's queries, provenance by the sha256 index of
``bundle_artifacts`` (a lookup per distinct sha256, never a scan of the manifests)."""

from __future__ import annotations

import json
from typing import Any

from repository.db import Database
from repository.errors import NotFound
from repository.sql import Sql
from wire.timestamps import iso

from .runtime_ingest import LOOKUP_CHUNK

MAX_EVENTS = 1000  # events in one answer
MAX_UNKNOWN = 1000  # unknown executables in one answer
MAX_WHERE_DEVICES = 1000  # devices in one answer of where a bundle version runs
MAX_NAMED_DEVICES = 100  # devices named for one unknown executable (all are counted)


def provenance(db: Sql, shas: set[str]) -> dict[str, list[dict[str, str]]]:
    """sha256 -> the (bundle, version, path) of every stored bundle version that lists it."""
    found: dict[str, list[dict[str, str]]] = {}
    wanted = sorted(shas)
    for i in range(0, len(wanted), LOOKUP_CHUNK):
        rows = db.execute(
            "SELECT sha256, name, version, target FROM bundle_artifacts WHERE sha256 IN :shas"
            " ORDER BY sha256, name, version, target",
            {"shas": wanted[i : i + LOOKUP_CHUNK]},
        )
        for sha, name, version, target in rows:
            found.setdefault(sha, []).append({"bundle": name, "version": version, "path": target})
    return found


def _group_clause(group: str | None) -> str:
    return "" if group is None else " AND d.grp = :group"


class RuntimeQueries:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def where(self, bundle: str, version: str, after: str, limit: int) -> list[dict[str, Any]]:
        """The processes of a bundle version's files, for a page of ``limit`` devices by name
        (after ``after``): a device's processes never straddle two pages."""
        return await self._database.read(self._where, bundle, version, after, limit)

    def _where(self, bundle: str, version: str, after: str, limit: int) -> list[dict[str, Any]]:
        db, key = self._database.db, {"name": bundle, "version": version, "after": after, "limit": limit}
        if db.execute("SELECT 1 FROM bundles WHERE name = :name AND version = :version", key).fetchone() is None:
            raise NotFound(f"No release bundle {bundle} {version}")
        rows = db.execute(
            "WITH page AS (SELECT DISTINCT d.id, d.name, d.grp FROM bundle_artifacts a"
            " JOIN fleet_runtime_processes p ON p.ident = a.sha256 JOIN fleet_devices d ON d.id = p.device_id"
            " WHERE a.name = :name AND a.version = :version AND d.name > :after ORDER BY d.name LIMIT :limit)"
            " SELECT page.name, page.grp, p.pid, p.started, p.exe, p.script, a.target, p.username, p.container"
            " FROM page JOIN fleet_runtime_processes p ON p.device_id = page.id"
            " JOIN bundle_artifacts a ON a.sha256 = p.ident AND a.name = :name AND a.version = :version"
            " ORDER BY page.name, p.pid, a.target",
            key,
        )
        names = ("device", "group", "pid", "started", "exe", "script", "path", "user", "container")
        return [{**dict(zip(names, r, strict=True)), "started": iso(r[3])} for r in rows]

    async def device(self, name: str) -> dict[str, Any]:
        return await self._database.read(self._device, name)

    def _device(self, name: str) -> dict[str, Any]:
        db = self._database.db
        row = db.execute(
            "SELECT d.id, d.grp, s.seq, s.updated FROM fleet_devices d"
            " LEFT JOIN fleet_runtime_state s ON s.device_id = d.id WHERE d.name = :name",
            {"name": name},
        ).fetchone()
        if row is None:
            raise NotFound(f"No device {name!r}")
        device_id, group, seq, updated = row
        names = ("pid", "started", "exe", "sha256", "user", "script", "script_sha256", "container", "cmdline", "ident")
        processes = [
            dict(zip(names, r, strict=True))
            for r in db.execute(
                "SELECT pid, started, exe, sha256, username, script, script_sha256, container, cmdline, ident"
                " FROM fleet_runtime_processes WHERE device_id = :id ORDER BY pid",
                {"id": device_id},
            )
        ]
        found = provenance(db, {p["ident"] for p in processes if p["ident"]})
        for p in processes:
            ident = p.pop("ident")
            p["started"] = iso(p["started"])
            p["provenance"] = found.get(ident, []) if ident else []
            p["unknown"] = not p["provenance"]
        return {
            "device": name,
            "group": group,
            "seq": seq or 0,
            "updated": None if updated is None else iso(updated),
            "processes": processes,
            "drift": self._drift(db, "d.id = :id", {"id": device_id}),
        }

    async def changes(self, name: str) -> list[dict[str, Any]]:
        return await self._database.read(self._changes, name)

    def _changes(self, name: str) -> list[dict[str, Any]]:
        db = self._database.db
        if db.execute("SELECT 1 FROM fleet_devices WHERE name = :name", {"name": name}).fetchone() is None:
            raise NotFound(f"No device {name!r}")
        rows = db.execute(
            "SELECT c.seq, c.time, c.body FROM fleet_runtime_changes c JOIN fleet_devices d ON d.id = c.device_id"
            " WHERE d.name = :name ORDER BY c.seq DESC",
            {"name": name},
        )
        return [{"seq": seq, "time": iso(time), **json.loads(body)} for seq, time, body in rows]

    async def unknown(self, group: str | None, after: str, limit: int) -> list[dict[str, Any]]:
        """A page of unknown executables in sha256 order (after ``after``), each with how many
        processes and devices run it and the first ``MAX_NAMED_DEVICES`` of those devices by name."""
        return await self._database.read(self._unknown, group, after, limit)

    def _unknown(self, group: str | None, after: str, limit: int) -> list[dict[str, Any]]:
        db, params = self._database.db, {"group": group, "after": after, "limit": limit}
        found = db.execute(
            "SELECT p.ident, MIN(COALESCE(p.script, p.exe)), COUNT(*), COUNT(DISTINCT p.device_id)"
            " FROM fleet_runtime_processes p JOIN fleet_devices d ON d.id = p.device_id"
            f" WHERE p.ident > :after{_group_clause(group)}"
            " AND NOT EXISTS (SELECT 1 FROM bundle_artifacts a WHERE a.sha256 = p.ident)"
            " GROUP BY p.ident ORDER BY p.ident LIMIT :limit",
            params,
        ).fetchall()
        out = []
        for ident, path, processes, devices in found:
            names = db.execute(
                "SELECT DISTINCT d.name FROM fleet_runtime_processes p JOIN fleet_devices d ON d.id = p.device_id"
                f" WHERE p.ident = :ident{_group_clause(group)} ORDER BY d.name LIMIT :named",
                {"ident": ident, "group": group, "named": MAX_NAMED_DEVICES},
            )
            out.append(
                {
                    "sha256": ident,
                    "path": path,
                    "processes": processes,
                    "device_count": devices,
                    "devices": [r[0] for r in names],
                }
            )
        return out

    async def drift(self, group: str | None) -> list[dict[str, Any]]:
        return await self._database.read(lambda: self._drift(self._database.db, "1 = 1", {"group": group}, group))

    @staticmethod
    def _drift(db: Sql, where: str, params: dict[str, Any], group: str | None = None) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT d.name, r.app, r.version, r.path, r.kind, r.found FROM fleet_runtime_drift r"
            f" JOIN fleet_devices d ON d.id = r.device_id WHERE {where}{_group_clause(group)}"
            " ORDER BY d.name, r.app, r.path",
            params,
        )
        names = ("device", "app", "version", "path", "kind", "found")
        return [{**dict(zip(names, r, strict=True)), "found": iso(r[5])} for r in rows]

    async def events(self, *, kind: str | None, device: str | None, after: int, limit: int) -> list[dict[str, Any]]:
        return await self._database.read(self._events, kind, device, after, limit)

    def _events(self, kind: str | None, device: str | None, after: int, limit: int) -> list[dict[str, Any]]:
        clauses = ["e.id > :after"]
        if kind is not None:
            clauses.append("e.kind = :kind")
        if device is not None:
            clauses.append("d.name = :device")
        rows = self._database.db.execute(
            "SELECT e.id, e.time, d.name, e.kind, e.sha256, e.path, e.detail FROM fleet_runtime_events e"
            f" JOIN fleet_devices d ON d.id = e.device_id WHERE {' AND '.join(clauses)} ORDER BY e.id LIMIT :limit",
            {"after": after, "kind": kind, "device": device, "limit": limit},
        )
        return [
            {"id": i, "time": iso(t), "device": d, "kind": k, "sha256": s, "path": p, **json.loads(detail)}
            for i, t, d, k, s, p, detail in rows
        ]
