"""Each group's runtime sensor settings, answered from memory at every check-in.

A group without a row gets the service's defaults (``fleet_runtime_enabled``,
``fleet_runtime_interval``). The copy is dropped when any group changes, here at once and in
the other processes serving the same database through its change counter, as the device
lookup does (``fleet/devices.py``).
"""

from __future__ import annotations

import json

from repository.db import Database
from wire.runtime import RuntimeSettings


class RuntimePolicy:
    def __init__(self, database: Database, default: RuntimeSettings) -> None:
        self._database = database
        self.default = default
        self._groups: dict[str, RuntimeSettings] = {}
        self._changes = 0
        database.copies.register(self.forget)

    def forget(self) -> None:
        self._changes += 1
        self._groups.clear()

    async def get(self, group: str) -> RuntimeSettings:
        copies = self._database.copies
        if copies.stale():
            await copies.wait()
        found = self._groups.get(group)
        if found is None:
            changes = self._changes
            found = await self._database.read(self._read, group)
            if changes == self._changes:
                self._groups[group] = found
        return found

    def _read(self, group: str) -> RuntimeSettings:
        row = self._database.db.execute(
            "SELECT settings FROM fleet_runtime_groups WHERE grp = :grp", {"grp": group}
        ).fetchone()
        return self.default if row is None else RuntimeSettings.from_json(json.loads(row[0]))

    async def set(self, group: str, settings: RuntimeSettings) -> None:
        await self._database.run(self._write, group, settings)
        self.forget()
        self._database.changed()

    def _write(self, group: str, settings: RuntimeSettings) -> None:
        db = self._database.db
        with db.atomic(serializable=False):
            db.execute("DELETE FROM fleet_runtime_groups WHERE grp = :grp", {"grp": group})
            db.execute(
                "INSERT INTO fleet_runtime_groups (grp, settings) VALUES (:grp, :settings)",
                {"grp": group, "settings": json.dumps(settings.to_json(), sort_keys=True)},
            )
