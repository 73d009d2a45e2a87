"""The phase machine under any sequence of device reports: it never advances past a halted
phase, never starts a phase before the one before it reached its threshold, never stalls
on one that did, and its per-phase counts always equal the devices' own rows. The same
rollout then runs on both engines (sqlite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.device_schema import device_migrations
from fleet.devices import Device
from fleet.rollout_actions import RolloutActions
from fleet.rollout_feedback import CANCELED, COUNTED, HALTED, ROLLED_BACK, RUNNING, Deployments
from fleet.rollout_plan import Amount, Counts, DeploymentRequest, Targets, halts, reached
from fleet.rollout_schema import rollout_migrations
from fleet.rollout_store import DeploymentStore
from repository.db import Database
from repository.errors import Conflict
from tests.fleet_deploy import heartbeat
from tests.fleet_rows import add_device, add_devices
from wire.fleet import ActionKind, AppSpec, Feedback, FeedbackState

SPEC = AppSpec("till", "app", "/opt/till")
HEARTBEAT = heartbeat()
amounts = st.one_of(
    st.integers(1, 12).map(lambda n: Amount(n, False)), st.integers(1, 10_000).map(lambda h: Amount(h, True))
)
halt_amounts = st.one_of(
    st.integers(0, 5).map(lambda n: Amount(n, False)), st.integers(0, 10_000).map(lambda h: Amount(h, True))
)
requests = st.builds(
    lambda phases, success, halt: DeploymentRequest(
        "till", "2.3.0", Targets(groups=("pos",)), tuple(phases), success, halt, None, False
    ),
    st.lists(amounts, max_size=3),
    amounts,
    halt_amounts,
)
reports = st.lists(st.tuples(st.integers(0, 11), st.sampled_from(list(FeedbackState))), max_size=40)


def _rows(db: Database, dep_id: int) -> list[Any]:
    return db.db.execute(
        "SELECT seq, device_id, phase, state FROM fleet_targets WHERE deployment_id = :id ORDER BY seq", {"id": dep_id}
    ).fetchall()


def _where(db: Database, dep_id: int) -> tuple[str, int]:
    return tuple(  # type: ignore[return-value]
        db.db.execute("SELECT state, phase FROM fleet_deployments WHERE id = :id", {"id": dep_id}).fetchone()
    )


def _check(db: Database, dep_id: int, request: DeploymentRequest) -> None:
    """Every invariant of the machine, read from the database."""
    phases = Deployments(db.db).phases(dep_id)
    by_rows: dict[int, dict[str, int]] = {}
    for _, _, phase, state in _rows(db, dep_id):
        by_rows.setdefault(phase, {}).setdefault(state, 0)
        by_rows[phase][state] += 1
    for n, counts in enumerate(phases):
        assert counts == Counts(counts.size, *(by_rows.get(n, {}).get(s, 0) for s in COUNTED))
        assert counts.size == sum(by_rows.get(n, {}).values())
    state, current = _where(db, dep_id)
    for earlier in phases[:current]:
        assert reached(earlier, request.success_threshold)
    if state == RUNNING:
        assert not any(halts(c, request.halt_on_failures) for c in phases[: current + 1])
        assert current == len(phases) - 1 or not reached(phases[current], request.success_threshold)


async def _scenario(
    path: Path, devices: int, request: DeploymentRequest, steps: list[tuple[int, FeedbackState]]
) -> None:
    db = Database(path / "node.db")
    await db.open(device_migrations, rollout_migrations)
    try:
        await add_devices(db, devices)
        store = DeploymentStore(db)
        if devices == 0:
            with pytest.raises(Conflict):
                await store.create(request, SPEC, "test")
            return
        dep = await store.create(request, SPEC, "test")
        assert sum(p.size for p in await db.read(Deployments(db.db).phases, dep.id)) == devices
        halted_at: int | None = None
        for index, state in steps:
            rows = await db.read(_rows, db, dep.id)
            seq, device_id, phase, before = rows[index % len(rows)]
            current = (await db.read(_where, db, dep.id))[1]
            if phase > current:
                continue  # a device of a phase not started has no action to report on

            def record(seq: int = seq, device_id: str = device_id, state: FeedbackState = state) -> None:
                with db.db.atomic():
                    Deployments(db.db).record(device_id, Feedback(f"d{dep.id}.s{seq}", state))

            try:
                await db.run(record)
            except Conflict:
                assert before != state.value
                assert (await db.read(_rows, db, dep.id))[index % len(rows)][3] == before
            await db.read(_check, db, dep.id, request)
            where = await db.read(_where, db, dep.id)
            if halted_at is not None:
                assert where == (HALTED, halted_at)  # a halted deployment stays where it halted
            elif where[0] == HALTED:
                halted_at = where[1]
    finally:
        await db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 12), requests, reports)
def test_any_sequence_of_reports_keeps_the_machine_consistent(
    devices: int, request: DeploymentRequest, steps: list[tuple[int, FeedbackState]]
) -> None:
    with tempfile.TemporaryDirectory() as temp:
        asyncio.run(_scenario(Path(temp), devices, request, steps))


async def test_a_rollout_advances_and_completes_on_both_engines(db_target: str, tmp_path: Path) -> None:
    db = Database(db_target, local_dir=tmp_path)
    await db.open(device_migrations, rollout_migrations)
    try:
        await add_devices(db, 5)
        request = DeploymentRequest(
            "till",
            "2.3.0",
            Targets(groups=("pos",)),
            (Amount(1, False),),
            Amount(10_000, True),
            Amount(0, False),
            None,
            False,
        )
        dep = await DeploymentStore(db).create(request, SPEC, "test")
        assert [p.size for p in await db.read(Deployments(db.db).phases, dep.id)] == [1, 4]

        def record(seq: int, device_id: str, state: FeedbackState) -> None:
            with db.db.atomic():
                Deployments(db.db).record(device_id, Feedback(f"d{dep.id}.s{seq}", state))

        rows = await db.read(_rows, db, dep.id)
        await db.run(record, rows[0][0], rows[0][1], FeedbackState.SUCCEEDED)
        assert await db.read(_where, db, dep.id) == (RUNNING, 1)
        for seq, device_id, _, _ in rows[1:]:
            await db.run(record, seq, device_id, FeedbackState.SUCCEEDED)
        assert await db.read(_where, db, dep.id) == ("completed", 1)
        assert await DeploymentStore(db).active() == []
    finally:
        await db.close()


def _request(*phases: Amount) -> DeploymentRequest:
    everyone = Amount(10_000, True)
    return DeploymentRequest("till", "2.3.0", Targets(groups=("pos",)), phases, everyone, Amount(0, False), None, False)


async def test_two_replicas_reporting_at_once_advance_a_phase_once(db_target: str, tmp_path: Path) -> None:
    one, two = Database(db_target, local_dir=tmp_path / "one"), Database(db_target, local_dir=tmp_path / "two")
    await one.open(device_migrations, rollout_migrations)
    await two.open(device_migrations, rollout_migrations)
    try:
        await add_devices(one, 6)
        dep = await DeploymentStore(one).create(_request(Amount(2, False), Amount(2, False)), SPEC, "test")
        rows = await one.read(_rows, one, dep.id)

        def record(db: Database, seq: int, device_id: str) -> None:
            with db.db.atomic():
                Deployments(db.db).record(device_id, Feedback(f"d{dep.id}.s{seq}", FeedbackState.SUCCEEDED))

        await asyncio.gather(one.run(record, one, rows[0][0], rows[0][1]), two.run(record, two, rows[1][0], rows[1][1]))
        assert await one.read(_where, one, dep.id) == (RUNNING, 1)
        await one.read(_check, one, dep.id, _request(Amount(2, False), Amount(2, False)))
    finally:
        await one.close()
        await two.close()


async def test_cancel_rollback_and_the_actions_they_give_on_both_engines(db_target: str, tmp_path: Path) -> None:
    db = Database(db_target, local_dir=tmp_path)
    await db.open(device_migrations, rollout_migrations)
    try:
        await add_device(db, "a", apps={"till": "2.2.0"})
        await add_device(db, "b")
        await add_device(db, "c")
        store = DeploymentStore(db)
        actions = RolloutActions(db, store)
        dep = await store.create(_request(), SPEC, "test")
        await actions.load()
        told = {n: await actions.actions_for(Device(f"dev-{n}", n, "pos"), HEARTBEAT) for n in "abc"}
        assert all(len(t) == 1 for t in told.values())

        def record(device: str, state: FeedbackState) -> None:
            with db.db.atomic():
                Deployments(db.db).record(f"dev-{device}", Feedback(told[device][0].action_id, state))

        await db.run(record, "a", FeedbackState.SUCCEEDED)
        await db.run(record, "b", FeedbackState.DOWNLOADING)
        canceled, changed = await store.operate(dep.id, "cancel")
        assert changed and canceled.state == CANCELED
        await actions.load()
        stop = await actions.actions_for(Device("dev-b", "b", "pos"), HEARTBEAT)
        assert [a.kind for a in stop] == [ActionKind.CANCEL]
        assert await actions.actions_for(Device("dev-c", "c", "pos"), HEARTBEAT) == []
        back, _ = await store.operate(dep.id, "rollback")
        assert back.state == ROLLED_BACK
        await actions.load()
        (rollback,) = await actions.actions_for(Device("dev-a", "a", "pos"), HEARTBEAT)
        assert (rollback.kind, rollback.version) == (ActionKind.ROLLBACK, "2.2.0")
        await db.run(record, "b", FeedbackState.CANCELED)

        def finish_rollback() -> None:
            with db.db.atomic():
                Deployments(db.db).record("dev-a", Feedback(rollback.action_id, FeedbackState.SUCCEEDED))

        await db.run(finish_rollback)
        assert await store.active() == []  # nothing left to do: out of the check-in's view
    finally:
        await db.close()
