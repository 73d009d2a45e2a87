"""Feedback arriving together is recorded in shared transactions, and a refused report among
them is answered its own error and changes nothing, while the others are recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from repository.http.setup import database
from tests.fleet_deploy import check_in, deploy, fleet_fixture, report, signed_release, status  # noqa: F401
from tests.fleet_rows import add_devices

DEVICES = 40


async def test_reports_arriving_together_share_transactions(fleet: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, DEVICES)
    names = [f"pos-{n:05d}" for n in range(DEVICES)]
    dep = await deploy(fleet)
    actions = [(await check_in(fleet, n))[0].action_id for n in names]
    await report(fleet, names[1], actions[1], "failed", step="download", message="no edge")
    before = await status(fleet, dep["id"], limit=1000)

    db = fleet.app[database]
    run = db.run
    transactions: list[object] = []

    async def counted(fn: Any, *args: Any) -> Any:
        transactions.append(fn)
        return await run(fn, *args)

    monkeypatch.setattr(db, "run", counted)
    answers = await asyncio.gather(
        *(report(fleet, n, a, "succeeded", version="2.3.0") for n, a in zip(names[2:], actions[2:], strict=True)),
        report(fleet, names[0], actions[1], "succeeded", expect=404),  # another device's action
        report(fleet, names[1], actions[1], "downloading", expect=409),  # after its terminal state
    )
    monkeypatch.undo()

    assert answers[: DEVICES - 2] == [{"action_id": a, "state": "succeeded"} for a in actions[2:]]
    assert answers[-2]["errors"][0]["message"] == f"No action '{actions[1]}' for this device"
    assert "already ended failed" in answers[-1]["errors"][0]["message"]
    assert 0 < len(transactions) < DEVICES
    after = await status(fleet, dep["id"], limit=1000)
    states = {d["name"]: d["state"] for d in after["devices"]}
    assert states == {names[0]: "pending", names[1]: "failed", **{n: "succeeded" for n in names[2:]}}
    assert [d for d in after["devices"] if d["name"] in names[:2]] == [
        d for d in before["devices"] if d["name"] in names[:2]
    ]
