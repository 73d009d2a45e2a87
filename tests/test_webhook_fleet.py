"""The fleet tells webhook subscribers of its deployments through the service's one publish
function, in the transaction that moves the deployment: a phase advanced, a deployment halted,
a deployment completed (on both engines)."""

from __future__ import annotations

import json
from pathlib import Path

from distribution.schema import distribution_migrations
from distribution.webhook_events import publish
from distribution.webhook_store import WebhookStore
from fleet.device_schema import device_migrations
from fleet.rollout_feedback import Deployments
from fleet.rollout_plan import Amount, DeploymentRequest, Targets
from fleet.rollout_schema import rollout_migrations
from fleet.rollout_store import DeploymentStore
from repository.db import Database
from repository.schema import catalog_migrations
from tests.fleet_rows import add_devices
from tests.test_fleet_phase_machine import SPEC, _rows
from wire.fleet import Feedback, FeedbackState

EVERYONE = Amount(10_000, True)


def _request() -> DeploymentRequest:
    """A canary of one device, then the rest; any failure halts it."""
    phases = (Amount(1, False),)
    return DeploymentRequest("till", "2.3.0", Targets(groups=("pos",)), phases, EVERYONE, Amount(0, False), None, False)


async def _events(db: Database) -> list[dict[str, object]]:
    rows = await db.read(
        lambda: db.db.execute(
            "SELECT e.body FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id ORDER BY d.seq"
        ).fetchall()
    )
    return [json.loads(r[0]) for r in rows]


async def test_a_rollout_publishes_its_phase_and_its_end(db_target: str, tmp_path: Path) -> None:
    db = Database(db_target, local_dir=tmp_path)
    await db.open(catalog_migrations, distribution_migrations, device_migrations, rollout_migrations)
    try:
        await WebhookStore(db).add("http://hooks.example/", ("*",), "secret-0123456789", "admin", 10)
        await add_devices(db, 3)
        store = DeploymentStore(db, publish)
        done = await store.create(_request(), SPEC, "test")
        halted = await store.create(_request(), SPEC, "test")

        def report(dep_id: int, seq: int, device_id: str, state: FeedbackState) -> None:
            with db.db.atomic():
                Deployments(db.db, publish).record(device_id, Feedback(f"d{dep_id}.s{seq}", state))

        rows = await db.read(_rows, db, done.id)
        for seq, device_id, _, _ in rows:
            await db.run(report, done.id, seq, device_id, FeedbackState.SUCCEEDED)
        seq, device_id, _, _ = (await db.read(_rows, db, halted.id))[0]
        await db.run(report, halted.id, seq, device_id, FeedbackState.FAILED)
        events = await _events(db)
    finally:
        await db.close()
    assert [(e["type"], e["data"]["deployment_id"], e["data"]["phase"]) for e in events] == [  # type: ignore[index]
        ("fleet.deployment.phase_advanced", done.id, 2),
        ("fleet.deployment.completed", done.id, 2),
        ("fleet.deployment.halted", halted.id, 1),
    ]
    assert events[0]["data"] == {  # type: ignore[comparison-overlap]
        "deployment_id": done.id,
        "app": "till",
        "version": "2.3.0",
        "phase": 2,
        "from_phase": 1,
        "state": "running",
        "message": "",
    }
    assert "Halted" in events[2]["data"]["message"]  # type: ignore[index]
