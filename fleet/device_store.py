"""The fleet as operators see it: devices with what they last reported, filtered and paged,
one device with its recent heartbeats, and the changes an operator makes to a device
(revoking it, its poll interval).

A device is online when its last check-in is within ``offline_after`` of its own poll
intervals: three missed heartbeats by default. That is decided in the query, so the
filter and the answer agree and a page of the fleet costs one query, not one per device.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from repository.db import Database
from repository.entries import now_ms
from repository.errors import NotFound
from wire.timestamps import iso

from .devices import DeviceLookup

DEFAULT_PAGE = 100
_ONLINE = "(d.revoked IS NULL AND d.last_seen IS NOT NULL AND d.last_seen >= :now - d.poll_interval * :factor)"
_COLUMNS = (
    "d.id, d.name, d.grp, d.enrolled, d.revoked, d.poll_interval, d.last_seen, d.agent_version, d.heartbeat, " + _ONLINE
)


@dataclass(frozen=True)
class FleetFilter:
    """What the fleet list shows: every condition given must hold."""

    group: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    online: bool | None = None
    app: str | None = None
    version: str | None = None  # of ``app`` when given, else of any app
    after: str | None = None  # the last name of the page before
    limit: int = DEFAULT_PAGE

    def where(self, params: dict[str, Any]) -> str:
        """The SQL conditions, adding their values to ``params``."""
        conditions = []
        if self.group is not None:
            conditions.append("d.grp = :grp")
            params["grp"] = self.group
        for i, (key, value) in enumerate(sorted(self.tags.items())):
            conditions.append(
                "EXISTS (SELECT 1 FROM fleet_device_tags t WHERE t.device_id = d.id"
                f" AND t.key = :tag_key{i} AND t.value = :tag_value{i})"
            )
            params[f"tag_key{i}"], params[f"tag_value{i}"] = key, value
        if self.app is not None or self.version is not None:
            app = " AND a.app = :app" if self.app is not None else ""
            version = " AND a.version = :version" if self.version is not None else ""
            conditions.append(f"EXISTS (SELECT 1 FROM fleet_device_apps a WHERE a.device_id = d.id{app}{version})")
            params.update(app=self.app, version=self.version)
        if self.online is not None:
            conditions.append(_ONLINE if self.online else f"NOT {_ONLINE}")
        if self.after is not None:
            conditions.append("d.name > :after")
            params["after"] = self.after
        return " AND ".join(conditions) or "1 = 1"


def _device_json(row: Any, tags: dict[str, str], apps: dict[str, dict[str, str | None]]) -> dict[str, Any]:
    id_, name, grp, enrolled, revoked, poll, last_seen, agent, heartbeat, online = row
    hb = json.loads(heartbeat) if heartbeat else {}
    return {
        "name": name,
        "id": id_,
        "group": grp,
        "tags": tags,
        "online": bool(online),
        "last_seen": None if last_seen is None else iso(last_seen),
        "enrolled": iso(enrolled),
        "revoked": None if revoked is None else iso(revoked),
        "poll_interval": poll,
        "agent_version": agent,
        **{k: hb.get(k) for k in ("cpu_percent", "memory_total", "memory_used", "disk_total", "disk_free", "uptime")},
        "apps": apps,
        "action": hb.get("action"),
    }


class DeviceStore:
    def __init__(self, database: Database, lookup: DeviceLookup, offline_after: int) -> None:
        self._database = database
        self._lookup = lookup
        self._factor = offline_after * 1000  # poll intervals (s) to ms

    async def page(self, wanted: FleetFilter) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the fleet in name order, and the name to ask ``after`` for the next (None: the last page)."""
        return await self._database.read(self._page, wanted, now_ms())

    def _page(self, wanted: FleetFilter, now: int) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"now": now, "factor": self._factor, "limit": wanted.limit + 1}
        rows = self._database.db.execute(
            f"SELECT {_COLUMNS} FROM fleet_devices d WHERE {wanted.where(params)} ORDER BY d.name LIMIT :limit",
            params,
        ).fetchall()
        more = len(rows) > wanted.limit
        rows = rows[: wanted.limit]
        devices = self._with_details(rows)
        return devices, rows[-1][1] if more else None

    def _with_details(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        if not rows:
            return []
        db, ids = self._database.db, [r[0] for r in rows]
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        for device_id, key, value in db.execute(
            "SELECT device_id, key, value FROM fleet_device_tags WHERE device_id IN :ids ORDER BY key", {"ids": ids}
        ):
            tags[device_id][key] = value
        apps: dict[str, dict[str, dict[str, str | None]]] = {i: {} for i in ids}
        for device_id, app, version, previous in db.execute(
            "SELECT device_id, app, version, previous FROM fleet_device_apps WHERE device_id IN :ids ORDER BY app",
            {"ids": ids},
        ):
            apps[device_id][app] = {"version": version, "previous": previous}
        return [_device_json(r, tags[r[0]], apps[r[0]]) for r in rows]

    async def get(self, name: str) -> dict[str, Any]:
        """One device with its kept heartbeats, newest first; 404 for a name no device has."""
        return await self._database.read(self._get, name, now_ms())

    def _get(self, name: str, now: int) -> dict[str, Any]:
        db = self._database.db
        params = {"now": now, "factor": self._factor, "name": name}
        row = db.execute(f"SELECT {_COLUMNS} FROM fleet_devices d WHERE d.name = :name", params).fetchone()
        if row is None:
            raise NotFound(f"No device {name!r}")
        (device,) = self._with_details([row])
        history = db.execute(
            "SELECT time, body FROM fleet_heartbeats WHERE device_id = :id ORDER BY time DESC", {"id": row[0]}
        ).fetchall()
        device["history"] = [{"time": iso(t), "heartbeat": json.loads(body)} for t, body in history]
        return device

    async def revoke(self, name: str) -> None:
        """The device's next call is a 401, in every process serving the database. Again: a success."""
        await self._change(
            "UPDATE fleet_devices SET revoked = :now WHERE name = :name AND revoked IS NULL", name, now=now_ms()
        )

    async def set_poll_interval(self, name: str, seconds: int) -> None:
        """The interval the device's next check-in is answered with."""
        await self._change(
            "UPDATE fleet_devices SET poll_interval = :seconds WHERE name = :name", name, seconds=seconds
        )

    async def set_group_poll_interval(self, group: str, seconds: int) -> dict[str, Any]:
        """The interval of every device of ``group`` now, and of those enrolled into it later (a
        device's own setting after this wins until the group's is set again)."""
        answer = await self._database.run(self._set_group, group, seconds)
        self._lookup.changed()
        return answer

    def _set_group(self, group: str, seconds: int) -> dict[str, Any]:
        db = self._database.db
        params = {"grp": group, "seconds": seconds}
        with db.atomic():
            db.execute(
                "INSERT INTO fleet_groups (grp, poll_interval) VALUES (:grp, :seconds)"
                " ON CONFLICT (grp) DO UPDATE SET poll_interval = excluded.poll_interval",
                params,
            )
            devices = db.execute("UPDATE fleet_devices SET poll_interval = :seconds WHERE grp = :grp", params).rowcount
        return {"group": group, "poll_interval": seconds, "devices": devices}

    async def groups(self) -> list[dict[str, Any]]:
        """Every group with devices or a poll interval of its own (null: the default), by name."""
        rows = await self._database.read(
            lambda: self._database.db.execute(
                "SELECT g.grp, MAX(s.poll_interval), COUNT(d.id) FROM"
                " (SELECT grp FROM fleet_devices UNION SELECT grp FROM fleet_groups) AS g"
                " LEFT JOIN fleet_groups s ON s.grp = g.grp LEFT JOIN fleet_devices d ON d.grp = g.grp"
                " GROUP BY g.grp ORDER BY g.grp"
            ).fetchall()
        )
        return [{"group": grp, "poll_interval": poll, "devices": count} for grp, poll, count in rows]

    async def _change(self, sql: str, name: str, **values: Any) -> None:
        await self._database.run(self._change_one, sql, name, values)
        self._lookup.changed()

    def _change_one(self, sql: str, name: str, values: dict[str, Any]) -> None:
        db = self._database.db
        with db.atomic():
            if db.scalar("SELECT id FROM fleet_devices WHERE name = :name", {"name": name}) is None:
                raise NotFound(f"No device {name!r}")
            db.execute(sql, {"name": name, **values})
