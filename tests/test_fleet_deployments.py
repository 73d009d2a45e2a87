"""Deployments over REST and what devices are told at check-in: phases that advance at their
success threshold and halt past their failure limit, pause, resume, cancel, rollback,
anti-rollback, and every refusal with the state left as it was."""

from __future__ import annotations

from typing import Any

import pytest

from distribution.app import create_app
from distribution.keys import settings_key
from fleet.rollout_feedback import HISTORY
from repository.http.setup import database
from tests.conftest import admin, error_of
from tests.fleet_deploy import FLEET, check_in, deploy, fleet_fixture, report, signed_release, status  # noqa: F401
from tests.fleet_rows import add_device, add_devices
from wire.fleet import ActionKind, ActionReport, FeedbackState


def name(n: int) -> str:
    return f"pos-{n:05d}"


async def told(client: Any, count: int) -> dict[str, list[Any]]:
    """What each of the first ``count`` devices is told now, by name (only those told something)."""
    found = {name(n): await check_in(client, name(n)) for n in range(count)}
    return {k: v for k, v in found.items() if v}


async def finish(client: Any, device: str, action_id: str, state: str = "succeeded") -> None:
    await report(client, device, action_id, "downloading")
    await report(client, device, action_id, state)


async def phase_counts(client: Any, dep_id: int) -> list[dict[str, int]]:
    return [p["states"] for p in (await status(client, dep_id))["phases"]]


# ---------------------------------------------------------------- phases


async def test_canary_advances_when_it_reaches_its_success_threshold(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 20)
    dep = await deploy(fleet, canary="10%", success_threshold="100%", halt_on_failures="10%")
    assert [p["size"] for p in dep["phases"]] == [2, 18]
    first = await told(fleet, 20)
    assert sorted(first) == [name(0), name(1)]
    action = first[name(0)][0]
    assert (action.kind, action.version, action.deployment, action.app.name) == (
        ActionKind.INSTALL,
        "2.3.0",
        str(dep["id"]),
        "till",
    )
    assert action.app.restart == "systemctl restart till"
    await finish(fleet, name(0), action.action_id)
    assert (await status(fleet, dep["id"]))["current_phase"] == 1  # 1 of 2 is not 100%
    assert sorted(await told(fleet, 20)) == [name(1)]
    await finish(fleet, name(1), first[name(1)][0].action_id)
    after = await status(fleet, dep["id"])
    assert (after["state"], after["current_phase"]) == ("running", 2)
    assert sorted(await told(fleet, 20)) == [name(n) for n in range(2, 20)]


async def test_the_default_threshold_lets_a_phase_advance_without_its_last_few_devices(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 41)
    dep = await deploy(fleet, phases=[20], halt_on_failures=5)  # 95% of 20 is 19
    actions = await told(fleet, 41)
    assert len(actions) == 20
    for device in sorted(actions)[:18]:
        await finish(fleet, device, actions[device][0].action_id)
    assert (await status(fleet, dep["id"]))["current_phase"] == 1
    await finish(fleet, sorted(actions)[18], actions[sorted(actions)[18]][0].action_id)
    assert (await status(fleet, dep["id"]))["current_phase"] == 2


async def test_a_deployment_halts_when_failures_pass_the_limit(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 10)
    dep = await deploy(fleet, canary=4, halt_on_failures=1)
    actions = await told(fleet, 10)
    assert len(actions) == 4
    await finish(fleet, name(0), actions[name(0)][0].action_id, "failed")
    assert (await status(fleet, dep["id"]))["state"] == "running"  # 1 failure is the limit, not past it
    await report(fleet, name(3), actions[name(3)][0].action_id, "downloading")
    await finish(fleet, name(1), actions[name(1)][0].action_id, "failed")
    halted = await status(fleet, dep["id"])
    assert (halted["state"], halted["current_phase"]) == ("halted", 1)
    assert "phase 1" in halted["message"]
    # successes after the halt start nothing; the device mid-flow keeps its action, the rest wait
    await finish(fleet, name(2), actions[name(2)][0].action_id)
    assert (await status(fleet, dep["id"]))["current_phase"] == 1
    now = await told(fleet, 10)
    assert sorted(now) == [name(3)] and now[name(3)][0].action_id == actions[name(3)][0].action_id
    resp = await fleet.post(f"{FLEET}/deployments/{dep['id']}/resume", headers=admin())
    code, message = await error_of(resp)
    assert code == 409 and message.startswith(f"Deployment {dep['id']} is halted: it cannot be resumed")


async def test_a_device_that_rolled_itself_back_shows_rolled_back_in_the_deployment(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 2)
    dep = await deploy(fleet)
    actions = await told(fleet, 2)
    await report(fleet, name(0), actions[name(0)][0].action_id, "failed", step="health_check", rolled_back=True)
    await finish(fleet, name(1), actions[name(1)][0].action_id, "failed")
    devices = {d["name"]: d for d in (await status(fleet, dep["id"]))["devices"]}
    assert (devices[name(0)]["step"], devices[name(0)]["rolled_back"]) == ("health_check", True)
    assert devices[name(1)]["rolled_back"] is False


async def test_a_percentage_failure_limit_is_of_the_phase(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 20)
    dep = await deploy(fleet, phases=[10], halt_on_failures="10%")  # 1 of 10 is the limit
    actions = await told(fleet, 20)
    ordered = sorted(actions)
    await finish(fleet, ordered[0], actions[ordered[0]][0].action_id, "failed")
    assert (await status(fleet, dep["id"]))["state"] == "running"
    await finish(fleet, ordered[1], actions[ordered[1]][0].action_id, "failed")
    assert (await status(fleet, dep["id"]))["state"] == "halted"


async def test_explicit_phases_take_their_sizes_and_the_rest_goes_last(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 10)
    dep = await deploy(fleet, phases=[1, "50%"], success_threshold=1)
    assert [p["size"] for p in dep["phases"]] == [1, 5, 4]
    for phase, expected in ((1, 1), (2, 5), (3, 4)):
        actions = await told(fleet, 10)
        new = [d for d, a in actions.items() if a]
        assert len(new) == expected, (phase, new)
        await finish(fleet, new[0], actions[new[0]][0].action_id)
        for other in new[1:]:  # the threshold is one device: the rest finish after the next phase started
            await finish(fleet, other, actions[other][0].action_id)
    done = await status(fleet, dep["id"])
    assert (done["state"], done["current_phase"]) == ("completed", 3)
    assert await told(fleet, 10) == {}


@pytest.mark.parametrize(
    ("canary", "sizes"), [(1, [1, 4]), (4, [4, 1]), (5, [5]), (6, [5]), ("1%", [1, 4]), ("100%", [5])]
)
async def test_canary_sizes_at_their_limits(fleet: Any, canary: Any, sizes: list[int]) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 5)
    dep = await deploy(fleet, canary=canary)
    assert [p["size"] for p in dep["phases"]] == sizes


async def test_one_device_is_one_phase_that_completes(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 1)
    dep = await deploy(fleet, canary="5%")
    assert [p["size"] for p in dep["phases"]] == [1]
    actions = await told(fleet, 1)
    await finish(fleet, name(0), actions[name(0)][0].action_id)
    assert (await status(fleet, dep["id"]))["state"] == "completed"


async def test_targets_pick_groups_tags_and_named_devices(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_device(fleet.app, "lisbon-1", "pos", {"site": "lisbon"})
    await add_device(fleet.app, "porto-1", "pos", {"site": "porto"})
    await add_device(fleet.app, "lisbon-kiosk", "kiosk", {"site": "lisbon"})
    await add_device(fleet.app, "lab-1", "lab")
    await add_device(fleet.app, "gone", "pos", {"site": "lisbon"}, revoked=True)
    dep = await deploy(fleet, targets={"groups": ["pos"], "tags": {"site": "lisbon"}, "devices": ["lab-1"]})
    assert sorted(d["name"] for d in dep["devices"]) == ["lab-1", "lisbon-1"]
    everywhere = await deploy(fleet, targets={"tags": {"site": "lisbon"}})
    assert sorted(d["name"] for d in everywhere["devices"]) == ["lisbon-1", "lisbon-kiosk"]


# ---------------------------------------------------------------- operator


async def test_pause_holds_devices_not_started_and_resume_catches_up(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 4)
    dep = await deploy(fleet, canary=2, success_threshold="100%")
    actions = await told(fleet, 4)
    await report(fleet, name(0), actions[name(0)][0].action_id, "downloading")
    paused = await fleet.post(f"{FLEET}/deployments/{dep['id']}/pause", headers=admin())
    assert paused.status == 200 and (await paused.json())["state"] == "paused"
    assert (await fleet.post(f"{FLEET}/deployments/{dep['id']}/pause", headers=admin())).status == 200
    assert sorted(await told(fleet, 4)) == [name(0)]  # the one that began goes on
    await report(fleet, name(0), actions[name(0)][0].action_id, "succeeded")
    await finish(fleet, name(1), actions[name(1)][0].action_id)  # its report is the truth, paused or not
    assert (await status(fleet, dep["id"]))["current_phase"] == 1
    resumed = await fleet.post(f"{FLEET}/deployments/{dep['id']}/resume", headers=admin())
    body = await resumed.json()
    assert (body["state"], body["current_phase"]) == ("running", 2)
    assert sorted(await told(fleet, 4)) == [name(2), name(3)]


async def test_cancel_stops_devices_not_started_and_cancels_those_mid_flow(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 4)
    dep = await deploy(fleet)
    actions = await told(fleet, 4)
    await report(fleet, name(0), actions[name(0)][0].action_id, "downloading")
    await finish(fleet, name(1), actions[name(1)][0].action_id)
    resp = await fleet.post(f"{FLEET}/deployments/{dep['id']}/cancel", headers=admin())
    assert (await resp.json())["state"] == "canceled"
    now = await told(fleet, 4)
    assert sorted(now) == [name(0)]
    assert (now[name(0)][0].kind, now[name(0)][0].action_id) == (ActionKind.CANCEL, actions[name(0)][0].action_id)
    # a device canceled before it reported, but working on it after all, is told to stop
    busy = ActionReport(actions[name(2)][0].action_id, FeedbackState.DOWNLOADING)
    stop = await check_in(fleet, name(2), action=busy)
    assert [(a.kind, a.action_id) for a in stop] == [(ActionKind.CANCEL, busy.action_id)]
    await report(fleet, name(0), actions[name(0)][0].action_id, "canceled")
    states = {d["name"]: d["state"] for d in (await status(fleet, dep["id"]))["devices"]}
    assert states == {name(0): "canceled", name(1): "succeeded", name(2): "canceled", name(3): "canceled"}
    assert await told(fleet, 4) == {}
    again = await fleet.post(f"{FLEET}/deployments/{dep['id']}/cancel", headers=admin())
    assert again.status == 200
    resume = await fleet.post(f"{FLEET}/deployments/{dep['id']}/resume", headers=admin())
    assert (await error_of(resume))[0] == 409


async def test_rollback_sends_every_device_that_installed_back_to_what_it_ran(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_device(fleet.app, "a", apps={"till": "2.2.0"})
    await add_device(fleet.app, "b")  # ran no version of the app
    await add_device(fleet.app, "c", apps={"till": "2.1.0"})
    await add_device(fleet.app, "d", apps={"till": "2.1.0"})
    dep = await deploy(fleet)
    actions = {n: (await check_in(fleet, n))[0] for n in "abcd"}
    await finish(fleet, "a", actions["a"].action_id)
    await finish(fleet, "b", actions["b"].action_id)
    await report(fleet, "c", actions["c"].action_id, "installing")
    resp = await fleet.post(f"{FLEET}/deployments/{dep['id']}/rollback", headers=admin())
    assert (await resp.json())["state"] == "rolled_back"
    told_now = {n: await check_in(fleet, n) for n in "abcd"}
    assert [(x.kind, x.version) for x in told_now["a"]] == [(ActionKind.ROLLBACK, "2.2.0")]
    assert [(x.kind, x.version) for x in told_now["b"]] == [(ActionKind.ROLLBACK, None)]
    assert [x.kind for x in told_now["c"]] == [ActionKind.CANCEL]
    assert told_now["d"] == []  # never started: canceled
    # c was past the point of canceling and installed: it goes back too
    await report(fleet, "c", actions["c"].action_id, "succeeded")
    assert [(x.kind, x.version) for x in await check_in(fleet, "c")] == [(ActionKind.ROLLBACK, "2.1.0")]
    back = told_now["a"][0]
    assert back.action_id != actions["a"].action_id
    assert (await check_in(fleet, "a"))[0].action_id == back.action_id  # the same action at every check-in
    await finish(fleet, "a", back.action_id)
    assert await check_in(fleet, "a") == []
    row = next(d for d in (await status(fleet, dep["id"]))["devices"] if d["name"] == "a")
    assert (row["state"], row["rollback"]["state"], row["rollback"]["version"]) == ("succeeded", "succeeded", "2.2.0")


# ---------------------------------------------------------------- anti-rollback and window


async def test_a_device_running_a_newer_version_is_not_downgraded(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_device(fleet.app, "newer", apps={"till": "2.10.0"})
    await add_device(fleet.app, "older", apps={"till": "2.2.9"})
    dep = await deploy(fleet)
    assert await check_in(fleet, "newer", apps={"till": "2.10.0"}) == []
    assert len(await check_in(fleet, "older", apps={"till": "2.2.9"})) == 1
    rows = {d["name"]: d for d in (await status(fleet, dep["id"]))["devices"]}
    assert rows["newer"]["state"] == "rejected"
    assert "2.10.0" in rows["newer"]["message"]
    assert await check_in(fleet, "newer", apps={"till": "2.10.0"}) == []
    allowed = await deploy(fleet, allow_downgrade=True)
    given = await check_in(fleet, "newer", apps={"till": "2.10.0"})
    assert [(a.deployment, a.version, a.allow_downgrade) for a in given] == [(str(allowed["id"]), "2.3.0", True)]


async def test_the_maintenance_window_travels_with_the_action(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 1)
    await deploy(fleet, window={"start": "22:00", "end": "04:00", "timezone": "Europe/Lisbon"})
    (action,) = await check_in(fleet, name(0))
    assert action.window is not None
    assert (action.window.start, action.window.end, action.window.timezone) == ("22:00", "04:00", "Europe/Lisbon")


# ---------------------------------------------------------------- refusals


async def test_bad_deployments_are_refused_and_nothing_is_stored(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await signed_release(fleet, "2.4.0", sign=False)
    await add_devices(fleet.app, 3)
    cases = [
        ({"app": "nope"}, 404, "App 'nope'"),
        ({"version": "9.9.9"}, 404, "app/9.9.9 not found"),
        ({"version": "2.4.0"}, 409, "not signed"),
        ({"targets": {"groups": ["empty"]}}, 409, "No enrolled"),
        ({"targets": {"devices": ["ghost"]}}, 404, "'ghost'"),
        ({"targets": {}}, 400, "at least one"),
        ({"targets": {"groups": "pos"}}, 400, "'targets.groups'"),
        ({"targets": {"groups": ["pos\u0000"]}}, 400, "'targets.groups'"),
        ({"targets": {"tags": {"site": 5}}}, 400, "'targets.tags['site']'"),
        ({"canary": 0}, 400, "'canary'"),
        ({"canary": "0%"}, 400, "'canary'"),
        ({"canary": "101%"}, 400, "'canary'"),
        ({"canary": "5"}, 400, "'canary'"),
        ({"phases": [1] * 17}, 400, "'phases'"),
        ({"phases": [1, "50.5.5%"]}, 400, "'phases[1]'"),
        ({"halt_on_failures": -1}, 400, "'halt_on_failures'"),
        ({"success_threshold": "0%"}, 400, "'success_threshold'"),
        ({"window": {"start": "25:00", "end": "04:00"}}, 400, "'window'"),
        ({"allow_downgrade": "yes"}, 400, "'allow_downgrade'"),
        ({"colour": "red"}, 400, "'colour'"),
    ]
    for fields, code, text in cases:
        got = await error_of(
            await fleet.post(
                f"{FLEET}/deployments",
                json={"app": "till", "version": "2.3.0", "targets": {"groups": ["pos"]}} | fields,
                headers=admin(),
            )
        )
        assert got[0] == code and text in got[1], (fields, got)
    reader = await fleet.post(f"{FLEET}/deployments", json={}, headers={})
    assert reader.status == 401
    listed = await fleet.get(f"{FLEET}/deployments", headers=admin())
    assert (await listed.json())["deployments"] == []
    assert await told(fleet, 3) == {}


async def test_feedback_refusals_leave_the_state_as_it_was(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 2)
    dep = await deploy(fleet)
    mine = (await check_in(fleet, name(0)))[0].action_id
    theirs = (await check_in(fleet, name(1)))[0].action_id
    await report(fleet, name(0), mine, "succeeded", version="2.3.0")
    before = await status(fleet, dep["id"])
    await report(fleet, name(0), theirs, "failed", expect=404)
    await report(fleet, name(0), "d999.s1", "failed", expect=404)
    await report(fleet, name(0), f"{mine}.rollback", "failed", expect=404)
    backwards = await report(fleet, name(0), mine, "downloading", expect=409)
    assert "already ended succeeded" in backwards["errors"][0]["message"]
    bad = await fleet.post(
        f"{FLEET}/device/feedback",
        json={"action_id": mine, "state": "done"},
        headers={"X-Device-Token": "credential-of-pos-00000"},
    )
    assert (await error_of(bad))[1].startswith("Invalid state: must be one of scheduled, downloading")
    no_id = await fleet.post(
        f"{FLEET}/device/feedback", json={"state": "failed"}, headers={"X-Device-Token": "credential-of-pos-00000"}
    )
    assert await error_of(no_id) == (400, "Invalid feedback: missing field(s) 'action_id'")
    anonymous = await fleet.post(f"{FLEET}/device/feedback", json={"action_id": mine, "state": "failed"})
    assert anonymous.status == 401
    assert await status(fleet, dep["id"]) == before
    assert await report(fleet, name(0), mine, "succeeded") == {"action_id": mine, "state": "succeeded"}  # a repeat


async def test_roles_and_unknown_deployments(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 1)
    dep = await deploy(fleet)
    for path in ("/12345", "/abc", "/%C2%B2"):
        assert (await error_of(await fleet.get(f"{FLEET}/deployments{path}", headers=admin())))[0] == 404
    missing = await fleet.post(f"{FLEET}/deployments/777/pause", headers=admin())
    assert (await error_of(missing))[0] == 404
    assert (await fleet.get(f"{FLEET}/deployments/{dep['id']}")).status == 401
    for limit in ("-1", "1001", "\u00b2"):
        bad_page = await fleet.get(f"{FLEET}/deployments", params={"limit": limit}, headers=admin())
        assert await error_of(bad_page) == (400, "'limit' must be an integer from 0 to 1000")
    for limit in ("0", "1", "999", "1000"):
        assert (await fleet.get(f"{FLEET}/deployments", params={"limit": limit}, headers=admin())).status == 200


# ---------------------------------------------------------------- bounds, pages, other processes


async def test_an_actions_history_keeps_its_last_reports(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    sizes = (0, 1, HISTORY - 1, HISTORY, HISTORY + 1)
    await add_devices(fleet.app, len(sizes))
    await deploy(fleet)
    db = fleet.app[database]
    for n, reports in enumerate(sizes):
        (action,) = await check_in(fleet, name(n))
        for r in range(reports):  # each a change of state: downloading, installing, downloading...
            await report(fleet, name(n), action.action_id, ("downloading", "installing")[r % 2])
        if reports:  # the same report again adds nothing
            await report(fleet, name(n), action.action_id, ("downloading", "installing")[(reports - 1) % 2])
        kept = await db.read(
            lambda seq=n + 1: db.db.execute(
                "SELECT count(*), min(n), max(n) FROM fleet_feedback WHERE seq = :seq", {"seq": seq}
            ).fetchone()
        )
        expected = (min(reports, HISTORY), max(1, reports - HISTORY + 1), reports) if reports else (0, None, None)
        assert tuple(kept) == expected, reports


async def test_devices_are_listed_a_page_at_a_time(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 5)
    dep = await deploy(fleet)
    first = await status(fleet, dep["id"], limit=2)
    assert [d["name"] for d in first["devices"]] == [name(0), name(1)] and first["next"] == 2
    rest = await status(fleet, dep["id"], after=first["next"], limit=3)
    assert [d["name"] for d in rest["devices"]] == [name(2), name(3), name(4)] and rest["next"] == 5
    end = await status(fleet, dep["id"], after=5, limit=3)
    assert end["devices"] == [] and end["next"] is None
    listed = await fleet.get(f"{FLEET}/deployments", params={"limit": "1"}, headers=admin())
    assert [d["id"] for d in (await listed.json())["deployments"]] == [dep["id"]]


async def test_another_process_sees_a_deployment_and_its_cancel(fleet: Any, aiohttp_client: Any) -> None:
    """A second service process on the same database: its check-in view follows the first's writes."""
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 2)
    other = await aiohttp_client(create_app(fleet.app[settings_key]))
    assert await check_in(other, name(0)) == []  # loads its view: nothing yet
    dep = await deploy(fleet)
    (action,) = await check_in(other, name(0))
    assert action.deployment == str(dep["id"])
    assert (await fleet.post(f"{FLEET}/deployments/{dep['id']}/cancel", headers=admin())).status == 200
    assert await check_in(other, name(1)) == []


async def test_a_canary_and_explicit_phases_go_in_that_order(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 10)
    dep = await deploy(fleet, canary=1, phases=["30%", 2])
    assert [p["size"] for p in dep["phases"]] == [1, 3, 2, 4]


async def test_an_app_a_deployment_still_uses_cannot_be_deleted(fleet: Any) -> None:
    await signed_release(fleet, "2.3.0")
    await add_devices(fleet.app, 1)
    dep = await deploy(fleet)
    resp = await fleet.delete(f"{FLEET}/apps/till", headers=admin())
    status, message = await error_of(resp)
    assert status == 409 and "cancel it first" in message
    assert (await fleet.get(f"{FLEET}/apps/till", headers=admin())).status == 200
    await fleet.post(f"{FLEET}/deployments/{dep['id']}/cancel", headers=admin())
    assert (await fleet.delete(f"{FLEET}/apps/till", headers=admin())).status == 204
