"""Deployments in the database: made with their devices resolved, read, paused, resumed,
canceled and rolled back. What a device's report changes lives in ``rollout_feedback``.

Targets are resolved once, when the deployment is made, by one ``INSERT ... SELECT`` in the
database (a device row per targeted device, numbered in device-id order, with its phase):
50,000 devices cost no memory here, and a device enrolled later is not part of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from distribution.webhook_events import Publisher
from repository.catalog import now_ms
from repository.db import Database
from repository.errors import Conflict, NotFound
from repository.sql import Sql
from wire.fleet import AppSpec, FeedbackState, HealthCheck, Window
from wire.timestamps import iso

from .rollout_feedback import (
    CANCELED,
    COMPLETED,
    HALTED,
    PAUSED,
    PENDING,
    ROLLED_BACK,
    RUNNING,
    Deployments,
    recount,
    still_open,
)
from .rollout_plan import Amount, DeploymentRequest

PAGE = 100
MAX_PAGE = 1000
_COLUMNS = (
    "id, app, version, bundle, app_spec, targets, phases, success_threshold, halt_on_failures, maintenance_window,"
    " allow_downgrade, state, phase, total, done, message, created, created_by, updated"
)


@dataclass(frozen=True)
class Deployment:
    id: int
    app: str
    version: str
    bundle: str
    app_spec: AppSpec
    targets: dict[str, Any]
    phases: list[str]
    success_threshold: Amount
    halt_on_failures: Amount
    window: Window | None
    allow_downgrade: bool
    state: str
    phase: int
    total: int
    done: bool
    message: str
    created: int
    created_by: str
    updated: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "app": self.app,
            "version": self.version,
            "bundle": self.bundle,
            "state": self.state,
            "current_phase": self.phase + 1,
            "total": self.total,
            "targets": self.targets,
            "phases_asked": self.phases,
            "success_threshold": str(self.success_threshold),
            "halt_on_failures": str(self.halt_on_failures),
            "window": None if self.window is None else asdict(self.window),
            "allow_downgrade": self.allow_downgrade,
            "message": self.message,
            "created": iso(self.created),
            "created_by": self.created_by,
            "updated": iso(self.updated),
        }


def deployment_from_row(row: Any) -> Deployment:
    (id_, app, version, bundle, spec, targets, phases, success, halt, window, downgrade, *rest) = row
    state, phase, total, done, message, created, created_by, updated = rest
    return Deployment(
        id_,
        app,
        version,
        bundle,
        AppSpec.from_json(json.loads(spec)),
        json.loads(targets),
        json.loads(phases),
        Amount.stored(success),
        Amount.stored(halt),
        None if window is None else Window.from_json(json.loads(window)),
        bool(downgrade),
        state,
        phase,
        total,
        bool(done),
        message,
        created,
        created_by,
        updated,
    )


def app_spec(row: Any) -> AppSpec:
    name, bundle, install_dir, pre_install, restart, health_command, health_url, health_timeout, keep = row
    health = None
    if health_command is not None or health_url is not None:
        health = HealthCheck(health_command, health_url, health_timeout)
    return AppSpec(name, bundle, install_dir, pre_install, restart, health, keep)


def _spec_json(spec: AppSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True)


def _selector(request: DeploymentRequest) -> tuple[str, dict[str, Any]]:
    """The WHERE clause over ``fleet_devices d`` that picks the targeted devices."""
    targets = request.targets
    params: dict[str, Any] = {"names": list(targets.devices)} if targets.devices else {}
    chosen = "d.name IN :names" if targets.devices else "0 = 1"
    if targets.groups or targets.tags:
        parts = []
        if targets.groups:
            parts.append("d.grp IN :groups")
            params["groups"] = list(targets.groups)
        for n, (key, value) in enumerate(sorted(targets.tags.items())):
            tag = f"t.device_id = d.id AND t.key = :k{n} AND t.value = :v{n}"
            parts.append(f"EXISTS (SELECT 1 FROM fleet_device_tags t WHERE {tag})")
            params |= {f"k{n}": key, f"v{n}": value}
        chosen = f"({' AND '.join(parts)}) OR {chosen}"
    return f"d.revoked IS NULL AND ({chosen})", params


class DeploymentStore:
    def __init__(self, database: Database, publish: Publisher | None = None) -> None:
        self._database = database
        self._publish = publish

    @property
    def _db(self) -> Sql:
        return self._database.db

    async def app(self, name: str) -> AppSpec:
        row = await self._database.read(
            lambda: self._db.execute(
                "SELECT name, bundle, install_dir, pre_install, restart, health_command, health_url,"
                " health_timeout, keep FROM fleet_apps WHERE name = :name",
                {"name": name},
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"App '{name}' is not defined: create it first (distribution fleet app create)")
        return app_spec(row)

    async def create(self, request: DeploymentRequest, spec: AppSpec, user: str) -> Deployment:
        return await self._database.run(self._create, request, spec, user)

    def _create(self, request: DeploymentRequest, spec: AppSpec, user: str) -> Deployment:
        where, params = _selector(request)
        db = self._db
        with db.atomic():
            if request.targets.devices:
                found = {
                    r[0]
                    for r in db.execute(
                        "SELECT name FROM fleet_devices d WHERE d.name IN :names", {"names": params["names"]}
                    )
                }
                missing = [n for n in request.targets.devices if n not in found]
                if missing:
                    raise NotFound(f"No enrolled device is named '{missing[0]}'")
            total = db.scalar(f"SELECT count(*) FROM fleet_devices d WHERE {where}", params)
            if not total:
                raise Conflict("No enrolled, unrevoked device matches the deployment's targets")
            sizes = request.phase_sizes(total)
            at = now_ms()
            dep_id = db.scalar(
                "INSERT INTO fleet_deployments (app, version, bundle, app_spec, targets, phases, success_threshold,"
                " halt_on_failures, maintenance_window, allow_downgrade, state, phase, total, created, created_by,"
                " updated) VALUES (:app, :version, :bundle, :spec, :targets, :phases, :success, :halt, :window,"
                " :downgrade, :state, 0, :total, :at, :user, :at) RETURNING id",
                {
                    "app": request.app,
                    "version": request.version,
                    "bundle": spec.bundle,
                    "spec": _spec_json(spec),
                    "targets": json.dumps(request.targets.to_json(), sort_keys=True),
                    "phases": json.dumps([str(a) for a in request.phases]),
                    "success": str(request.success_threshold),
                    "halt": str(request.halt_on_failures),
                    "window": None if request.window is None else json.dumps(asdict(request.window)),
                    "downgrade": int(request.allow_downgrade),
                    "state": RUNNING,
                    "total": total,
                    "at": at,
                    "user": user,
                },
            )
            bounds, cases, edge = {}, [], 0
            for n, size in enumerate(sizes[:-1]):
                edge += size
                bounds[f"b{n}"] = edge
                cases.append(f"WHEN s.rn <= :b{n} THEN {n}")
            phase = f"CASE {' '.join(cases)} ELSE {len(sizes) - 1} END" if cases else "0"
            db.execute(
                "INSERT INTO fleet_targets (deployment_id, seq, device_id, phase, state, previous, updated)"
                f" SELECT :dep, s.rn, s.id, {phase}, :pending, s.version, :at FROM ("
                " SELECT ROW_NUMBER() OVER (ORDER BY d.id) AS rn, d.id, a.version FROM fleet_devices d"
                " LEFT JOIN fleet_device_apps a ON a.device_id = d.id AND a.app = :app"
                f" WHERE {where}) s",
                params | bounds | {"dep": dep_id, "pending": PENDING, "at": at, "app": request.app},
            )
            db.executemany(
                "INSERT INTO fleet_phases (deployment_id, phase, size) VALUES (:dep, :phase, :size)",
                [{"dep": dep_id, "phase": n, "size": size} for n, size in enumerate(sizes)],
            )
            return self._get(dep_id)  # type: ignore[return-value]

    async def get(self, dep_id: int) -> Deployment:
        found = await self._database.read(self._get, dep_id)
        if found is None:
            raise NotFound(f"Deployment {dep_id} not found")
        return found

    def _get(self, dep_id: int) -> Deployment | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM fleet_deployments WHERE id = :id", {"id": dep_id}).fetchone()
        return None if row is None else deployment_from_row(row)

    async def active(self) -> list[Deployment]:
        """Every deployment some device still has something to do for (the check-in's view)."""
        rows = await self._database.read(
            lambda: self._db.execute(f"SELECT {_COLUMNS} FROM fleet_deployments WHERE done = 0 ORDER BY id").fetchall()
        )
        return [deployment_from_row(r) for r in rows]

    async def refuse_if_used(self, app: str) -> None:
        """An app's deletion check: refused while a deployment of it has work left."""
        used = [d.id for d in await self.active() if d.app == app]
        if used:
            raise Conflict(f"App {app!r} is used by deployment {used[0]}, which is not done: cancel it first")

    async def page(self, before: int | None, limit: int) -> list[Deployment]:
        """Deployments newest first, ``limit`` of them made before ``before`` (an id)."""
        rows = await self._database.read(
            lambda: self._db.execute(
                f"SELECT {_COLUMNS} FROM fleet_deployments WHERE id < :before ORDER BY id DESC LIMIT :limit",
                {"before": 2**62 if before is None else before, "limit": limit},
            ).fetchall()
        )
        return [deployment_from_row(r) for r in rows]

    async def phase_states(self, dep_id: int) -> list[dict[str, Any]]:
        """Each phase's size and its devices counted by state."""

        def read() -> list[dict[str, Any]]:
            phases = [
                {"phase": p + 1, "size": size, "states": {}}
                for p, size in self._db.execute(
                    "SELECT phase, size FROM fleet_phases WHERE deployment_id = :id ORDER BY phase", {"id": dep_id}
                )
            ]
            for phase, state, count in self._db.execute(
                "SELECT phase, state, count(*) FROM fleet_targets WHERE deployment_id = :id GROUP BY phase, state",
                {"id": dep_id},
            ):
                phases[phase]["states"][state] = count
            return phases

        return await self._database.read(read)

    async def devices(self, dep_id: int, after: int, limit: int) -> list[dict[str, Any]]:
        """A page of the deployment's devices, in their order, after row ``after``."""
        rows = await self._database.read(
            lambda: self._db.execute(
                "SELECT t.seq, t.device_id, d.name, t.phase, t.state, t.step, t.message, t.version, t.previous,"
                " t.updated, t.reports, t.rolled_back, t.rb_state, t.rb_step, t.rb_message, t.rb_updated"
                " FROM fleet_targets t"
                " LEFT JOIN fleet_devices d ON d.id = t.device_id"
                " WHERE t.deployment_id = :id AND t.seq > :after ORDER BY t.seq LIMIT :limit",
                {"id": dep_id, "after": after, "limit": limit},
            ).fetchall()
        )
        return [_device_json(dep_id, r) for r in rows]

    async def operate(self, dep_id: int, operation: str) -> tuple[Deployment, bool]:
        """Pause, resume, cancel or roll back; answers the deployment and whether it changed."""
        return await self._database.run(self._operate, dep_id, operation)

    def _operate(self, dep_id: int, operation: str) -> tuple[Deployment, bool]:
        db = self._db
        with db.atomic():
            found = self._get(dep_id)
            if found is None:
                raise NotFound(f"Deployment {dep_id} not found")
            target, allowed = OPERATIONS[operation]
            if found.state == target:
                return found, False  # asked again: the same answer
            if found.state not in allowed:
                hint = _HINTS.get((operation, found.state), "")
                raise Conflict(f"Deployment {dep_id} is {found.state}: it cannot be {operation}d{hint}")
            at = now_ms()
            params = {"id": dep_id, "at": at, "pending": PENDING, "canceled": FeedbackState.CANCELED.value}
            if target in (CANCELED, ROLLED_BACK):  # devices that never started never will
                db.execute(
                    "UPDATE fleet_targets SET state = :canceled, by_device = 0, updated = :at"
                    " WHERE deployment_id = :id AND state = :pending",
                    params,
                )
            if target == ROLLED_BACK:  # every device that installed the version goes back
                db.execute(
                    "UPDATE fleet_targets SET rb_state = :pending, rb_updated = :at"
                    " WHERE deployment_id = :id AND state = :succeeded AND rb_state IS NULL",
                    params | {"succeeded": FeedbackState.SUCCEEDED.value},
                )
            db.execute(
                "UPDATE fleet_deployments SET state = :state, done = 0, message = '', updated = :at WHERE id = :id",
                params | {"state": target},
            )
            recount(db, dep_id)
            if target == RUNNING:
                Deployments(db, self._publish).evaluate(dep_id)
            elif target != PAUSED and not still_open(db, dep_id):
                db.execute("UPDATE fleet_deployments SET done = 1 WHERE id = :id", params)
            return self._get(dep_id), True  # type: ignore[return-value]


# operation -> (the state it leads to, the states it may start from)
OPERATIONS = {
    "pause": (PAUSED, (RUNNING,)),
    "resume": (RUNNING, (PAUSED,)),
    "cancel": (CANCELED, (RUNNING, PAUSED, HALTED)),
    "rollback": (ROLLED_BACK, (RUNNING, PAUSED, HALTED, COMPLETED, CANCELED)),
}
_HINTS = {
    ("resume", HALTED): " (it halted on failures: roll it back or cancel it, and deploy a fixed version)",
}


def action_id(dep_id: int, seq: int, rollback: bool = False) -> str:
    return f"d{dep_id}.s{seq}" + (".rollback" if rollback else "")


def _device_json(dep_id: int, row: Any) -> dict[str, Any]:
    seq, device_id, name, phase, state, step, message, version, previous, updated, reports, rolled_back, *rb = row
    rb_state, rb_step, rb_message, rb_updated = rb
    return {
        "row": seq,
        "action_id": action_id(dep_id, seq),
        "device_id": device_id,
        "name": name,
        "phase": phase + 1,
        "state": state,
        "step": step,
        "message": message,
        "version": version,
        "previous": previous,
        "rolled_back": bool(rolled_back),  # the device went back to ``previous`` by itself (a failed install)
        "updated": iso(updated),
        "reports": reports,
        "rollback": None
        if rb_state is None
        else {
            "action_id": action_id(dep_id, seq, True),
            "state": rb_state,
            "step": rb_step,
            "message": rb_message,
            "version": previous,
            "updated": iso(rb_updated) if rb_updated else None,
        },
    }
