"""What a device should do at check-in: the ``ActionSource`` of the rollout side.

The deployments that still have work (``done = 0``) are kept in memory, reloaded when this
process changes one and when another process did (``database.copies``: the shared change
counter on one machine, change notices between PostgreSQL replicas). A check-in with no
such deployment reads nothing; otherwise it reads the device's rows of those deployments,
one indexed read (``fleet_targets_by_device``).

For each of its rows a device gets:

- ``INSTALL`` while the deployment runs and the row's phase has started, until the device
  reports a terminal state; a device that already began keeps getting the same action
  (same id: a retry is the same action) while the deployment is paused or halted, where
  devices not started yet wait;
- nothing, and the row ``rejected``, when the version it runs (its heartbeat) is newer than
  the deployment's and the deployment does not allow a downgrade;
- ``CANCEL`` of its install when the deployment was canceled or rolled back while the
  device was in the middle of it;
- ``ROLLBACK`` to the version it ran before (``None``: it ran none) once the deployment was
  rolled back and the device had installed it, until it reports the rollback finished.

A device that was offline gets the same when it checks in again: its row waited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distribution.webhook_events import Publisher
from repository.db import Database
from wire.fleet import Action, ActionKind, Heartbeat, is_downgrade

from .devices import Device
from .rollout_feedback import CANCELED, OPEN, PENDING, ROLLED_BACK, RUNNING, TERMINAL, Deployments
from .rollout_store import Deployment, DeploymentStore, action_id

MAX_ACTIONS = 64  # what one check-in answer may carry (wire.fleet.CheckIn)
STOPPED = (CANCELED, ROLLED_BACK)


class RolloutActions:
    def __init__(self, database: Database, store: DeploymentStore, publish: Publisher | None = None) -> None:
        self._database = database
        self._store = store
        self._publish = publish
        self.active: dict[int, Deployment] = {}
        database.copies.register(self.load)  # another process changed a deployment

    async def load(self) -> None:
        self.active = {d.id: d for d in await self._store.active()}

    async def changed(self) -> None:
        """After this process changed a deployment: its own view first, then everyone's."""
        await self.load()
        self._database.changed()

    async def actions_for(self, device: Device, heartbeat: Heartbeat) -> list[Action]:
        copies = self._database.copies
        if copies.stale():
            await copies.wait()
        active = self.active
        if not active:
            return []
        rows = await self._database.read(self._rows, device.id, sorted(active))
        actions: list[Action] = []
        rejected: list[tuple[int, int, str]] = []
        for dep_id, seq, phase, state, by_device, previous, rb_state in rows:
            dep = active.get(dep_id)
            if dep is None:
                continue
            install = action_id(dep_id, seq)
            if rb_state in OPEN:
                actions.append(_action(dep, action_id(dep_id, seq, True), ActionKind.ROLLBACK, previous))
            if state == PENDING:
                if dep.state != RUNNING or phase > dep.phase:
                    continue
                running = heartbeat.apps.get(dep.app)
                if not dep.allow_downgrade and running is not None and is_downgrade(running.version, dep.version):
                    message = f"Runs {running.version}, newer than {dep.version}; the deployment allows no downgrade"
                    rejected.append((dep_id, seq, message))
                    continue
                actions.append(_action(dep, install, ActionKind.INSTALL, dep.version))
            elif state not in TERMINAL:
                kind = ActionKind.CANCEL if dep.state in STOPPED else ActionKind.INSTALL
                actions.append(_action(dep, install, kind, dep.version))
            elif dep.state in STOPPED and not by_device and _still_busy(heartbeat, install):
                # canceled before it reported, yet it says it is working on it: stop it
                actions.append(_action(dep, install, ActionKind.CANCEL, dep.version))
        if rejected:
            changed = await self._database.run(self._reject, rejected)
            if changed:
                await self.changed()
        return actions[:MAX_ACTIONS]

    def _rows(self, device_id: str, ids: list[int]) -> Sequence[Any]:
        return self._database.db.execute(
            "SELECT deployment_id, seq, phase, state, by_device, previous, rb_state FROM fleet_targets"
            " WHERE device_id = :device AND deployment_id IN :ids ORDER BY deployment_id",
            {"device": device_id, "ids": ids},
        ).fetchall()

    def _reject(self, rejected: list[tuple[int, int, str]]) -> bool:
        db = self._database.db
        with db.atomic():
            machine = Deployments(db, self._publish)
            return any([machine.reject(dep_id, seq, message) for dep_id, seq, message in rejected])


def _still_busy(heartbeat: Heartbeat, install: str) -> bool:
    report = heartbeat.action
    return report is not None and report.action_id == install and report.state.value not in TERMINAL


def _action(dep: Deployment, action: str, kind: ActionKind, version: str | None) -> Action:
    return Action(action, kind, str(dep.id), dep.app_spec, version, dep.allow_downgrade, dep.window)
